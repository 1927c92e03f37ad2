"""Where GPUs sit: nodes, the scale-up domain (NVLink/NVSwitch, Infinity Fabric) and the NICs.

A collective's cost depends on how many of its ranks share a scale-up domain; `ClusterSpec` gives
the numbers, `cost.comm` does the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from parasim.errors import InputError
from parasim.mathx import cdiv
from parasim.specs.accelerator import AcceleratorSpec


@dataclass(frozen=True, kw_only=True)
class NodePreset:
    id: str
    name: str
    accelerator: str
    gpus_per_node: int
    scale_up_domain: int  # GPUs that share one NVLink/IF domain (72 on GB200 NVL72)
    fabric: str
    nics_per_node: int
    nic_gbps: float  # line rate of one NIC, Gbit/s
    source: str = ""

    @property
    def nic_bw_bytes_per_s_per_gpu(self) -> float:
        return self.nics_per_node * self.nic_gbps * 1e9 / 8 / self.gpus_per_node


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    accelerator: AcceleratorSpec
    gpus: int
    gpus_per_node: int = 8
    scale_up_domain: int = 0  # 0 = one node
    nic_bw_bytes_per_s_per_gpu: float = 50e9  # 400 Gb/s NDR per GPU (DGX H100 class)

    def __post_init__(self) -> None:
        if self.gpus <= 0:
            raise InputError("gpus", f"must be a positive integer, got {self.gpus}")
        if self.gpus_per_node <= 0:
            raise InputError("gpus_per_node", f"must be a positive integer, got {self.gpus_per_node}")
        if self.nic_bw_bytes_per_s_per_gpu <= 0:
            raise InputError("inter_node_gbps_per_gpu", "must be positive")

    @property
    def domain(self) -> int:
        """GPUs reachable over the scale-up fabric from any one GPU."""
        return max(self.scale_up_domain, self.gpus_per_node)

    @property
    def nodes(self) -> int:
        return cdiv(self.gpus, self.gpus_per_node)

    def with_(self, **changes) -> ClusterSpec:
        return replace(self, **changes)

    @classmethod
    def from_preset(cls, preset: NodePreset, accelerator: AcceleratorSpec, gpus: int) -> ClusterSpec:
        return cls(accelerator=accelerator, gpus=gpus, gpus_per_node=preset.gpus_per_node,
                   scale_up_domain=preset.scale_up_domain,
                   nic_bw_bytes_per_s_per_gpu=preset.nic_bw_bytes_per_s_per_gpu)
