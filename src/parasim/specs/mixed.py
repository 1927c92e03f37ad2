"""A cluster of several GPU types: node groups, each a homogeneous `ClusterSpec` of its own.

Given as `--gpu TYPE:COUNT,TYPE:COUNT` (every group takes the part's node preset, and the
command's --gpus-per-node / --inter-node-gbps when given), or in a config file as `node_groups:`,
a list of mappings with `gpu`, `gpus` and optionally `gpus_per_node`, `scale_up_domain` (GPUs
sharing one NVLink domain) and `inter_node_gbps` (NIC bandwidth per GPU). Read at the edge: every
error names the field (`gpu`, `node_groups[1].gpus`, ...) and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parasim.errors import InputError
from parasim.specs import edge
from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.cluster import ClusterSpec

GROUP_KEYS = ("gpu", "gpus", "gpus_per_node", "scale_up_domain", "inter_node_gbps")
SYNTAX = "write TYPE:COUNT,TYPE:COUNT (e.g. h100-sxm:64,a100-sxm-80gb:64)"


@dataclass(frozen=True)
class MixedCluster:
    """Node groups in the order given (pipeline stages are placed on them in this order)."""

    groups: tuple[ClusterSpec, ...]

    @property
    def gpus(self) -> int:
        return sum(g.gpus for g in self.groups)

    @property
    def accelerator(self) -> AcceleratorSpec:
        """The part most GPUs are (the first of equals): the scope of the expected error and of a
        calibration profile, never a cost."""
        return max(self.groups, key=lambda g: g.gpus).accelerator

    @property
    def label(self) -> str:
        return ",".join(f"{g.accelerator.id}:{g.gpus}" for g in self.groups)

    @property
    def gpus_per_node(self) -> float:
        """GPUs per node over the whole job (its GPUs over its nodes, each group's nodes whole):
        what per-node figures such as the checkpoint bandwidth (training/goodput.py) scale by."""
        return self.gpus / sum(-(-g.gpus // g.gpus_per_node) for g in self.groups)

    def peak(self, precision: str) -> float:
        """Mean dense peak per GPU: MFU over a mixed cluster is achieved FLOP/s over the sum of peaks."""
        return sum(g.accelerator.peak(precision) * g.gpus for g in self.groups) / self.gpus

    def proxy(self) -> ClusterSpec:
        """The one-type stand-in `plan train` enumerates layouts on: every GPU, the smallest
        scale-up domain (TP stays inside each group's NVLink), the largest HBM (the memory screen
        drops only what fits on no group; the simulator then checks each group's own)."""
        big = max(self.groups, key=lambda g: (g.accelerator.hbm_bytes, -self.groups.index(g)))
        small = min(self.groups, key=lambda g: g.domain)
        return big.with_(gpus=self.gpus, gpus_per_node=small.gpus_per_node, scale_up_domain=small.scale_up_domain)

    @property
    def price_usd_per_hour(self) -> float:
        """Mean price per GPU-hour (the cost objective multiplies by the GPU count)."""
        return sum(g.accelerator.price_usd_per_hour * g.gpus for g in self.groups) / self.gpus


def from_text(text: str, field: str = "gpu") -> MixedCluster:
    """The cluster of a `TYPE:COUNT,...` value with every group on its part's node preset."""
    return mixed_cluster(groups_from_text(text, field=field), field=field)


def is_mixed(gpu: Any) -> bool:
    """A --gpu value that names counts (TYPE:COUNT) rather than one part."""
    return isinstance(gpu, str) and ":" in gpu


def parse_gpu_mix(text: str, field: str = "gpu") -> list[tuple[str, int]]:
    """`TYPE:COUNT,TYPE:COUNT` as (type, count) pairs; types are checked when resolved."""
    out = []
    for item in str(text).split(","):
        part = item.strip()
        name, sep, count = part.partition(":")
        if not sep or not name.strip() or not count.strip():
            raise InputError(field, f"{part!r} is not TYPE:COUNT; {SYNTAX}")
        name, count = name.strip(), count.strip()
        out.append((name, edge.capped_int(f"{field} ({name} count)", int(count) if count.isdigit() else count, "gpus")))
    return out


def mixed_cluster(groups: list[dict[str, Any]], *, field: str = "node_groups") -> MixedCluster:
    """The cluster of `groups` (mappings with GROUP_KEYS); a group's defaults come from its part's
    node preset (specs.catalog.cluster_for, as for one GPU type)."""
    from parasim.specs.catalog import cluster_for, get_accelerator

    if not isinstance(groups, list) or not groups:
        raise InputError(field, f"must be a non-empty list of groups, each a mapping of {', '.join(GROUP_KEYS)}")
    out = []
    for i, g in enumerate(groups):
        where = f"{field}[{i}]"

        def kf(key: str) -> str:  # a --gpu TYPE:COUNT list is named as the flags that gave it
            return f"{where}.{key}" if field != "gpu" else "gpu" if key in ("gpu", "gpus") else key.replace("_", "-")
        if not isinstance(g, dict):
            raise InputError(where, f"must be a mapping of {', '.join(GROUP_KEYS)}")
        g = {str(k).replace("-", "_"): v for k, v in g.items()}
        extra = sorted(set(g) - set(GROUP_KEYS))
        if extra:
            raise InputError(f"{where}.{extra[0]}", f"unknown key; allowed: {', '.join(GROUP_KEYS)}")
        for key in ("gpu", "gpus"):
            if g.get(key) is None:
                raise InputError(kf(key), "required")
        acc = get_accelerator(edge.text_value(kf("gpu"), g["gpu"]), field=kf("gpu"))
        n = edge.capped_int(kf("gpus"), g["gpus"], "gpus")
        gpn = edge.capped_int(kf("gpus_per_node"), g.get("gpus_per_node"), "gpus", allow_none=True)
        nic = edge.finite_float(kf("inter_node_gbps"), g.get("inter_node_gbps"), lo=0.0, hi=1e6, lo_open=True,
                                allow_none=True)
        c = cluster_for(acc, n, gpus_per_node=gpn, nic_bw_bytes_per_s_per_gpu=nic * 1e9 / 8 if nic else None)
        dom = edge.capped_int(kf("scale_up_domain"), g.get("scale_up_domain"), "gpus", allow_none=True)
        out.append(c.with_(scale_up_domain=dom) if dom is not None else c)
    return MixedCluster(tuple(out))


def groups_from_text(text: str, *, gpus_per_node: int | None = None, inter_node_gbps: float | None = None,
                     field: str = "gpu") -> list[dict[str, Any]]:
    """`--gpu TYPE:COUNT,...` as node-group mappings, each with the command's node overrides."""
    return [{"gpu": name, "gpus": n, "gpus_per_node": gpus_per_node, "inter_node_gbps": inter_node_gbps}
            for name, n in parse_gpu_mix(text, field)]


def power_limited(cluster: ClusterSpec | MixedCluster, power_limit_w: float | None, *,
                  field: str = "power-limit-w") -> ClusterSpec | MixedCluster:
    """`cluster` (one part or mixed) with every GPU capped at `power_limit_w`
    (AcceleratorSpec.with_power_limit, checked per part); None = as it is."""
    if power_limit_w is None:
        return cluster
    if isinstance(cluster, MixedCluster):
        return MixedCluster(tuple(power_limited(g, power_limit_w, field=field) for g in cluster.groups))
    return cluster.with_(accelerator=cluster.accelerator.with_power_limit(power_limit_w, field=field))
