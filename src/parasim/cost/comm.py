"""Collective communication time: alpha-beta, ring or tree, hierarchical over NVLink and NICs.

A group is `n` ranks of which `per_node` share one scale-up domain (NVLink/NVSwitch, Infinity
Fabric). Inside a domain a collective runs at the link's achievable bus bandwidth; across domains
it runs hierarchically (reduce-scatter inside, the cross-node part on 1/per_node of the data over
every GPU's own NIC in parallel, all-gather inside), which is how NCCL's multi-ring/tree
algorithms use all NICs of a node. Sizes are the full logical buffer in bytes:
all-reduce and reduce-scatter take the input size, all-gather the output size, all-to-all the
bytes each rank sends in total, point-to-point the message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from parasim.mathx import cdiv
from parasim.specs.cluster import ClusterSpec

KINDS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p")

#: NCCL's low-latency (LL) protocol, which NCCL's tuner picks for small messages. Every 8-byte store
#: carries 4 bytes of data and a 4-byte flag, so a ring step needs no separate synchronisation (a
#: small per-step latency) but moves data at a fraction of the link's rate. The figures are those of
#: NCCL's own cost model (NVIDIA/nccl src/graph/tuning.cc, master of June 2026, the same latencies
#: since v2.18): ring LL base latency 6.6 us per call (`baseLatencies`), 0.6 us per step over NVLink
#: and 1.0 us over PCIe (`hwLatencies`), half the bus bandwidth capped at `llMaxBws` for one node
#: (87.7 GB/s Ampere, 141 Hopper, 282 Blackwell).
NCCL_LL_BASE_LATENCY_S = 6.6e-6
NCCL_LL_STEP_LATENCY_S = {"nvlink": 0.6e-6, "pcie": 1.0e-6}
NCCL_LL_BW_FRACTION = 0.5
NCCL_LL_MAX_BUSBW = {"ampere": 87.7e9, "ada": 87.7e9, "hopper": 141.0e9, "blackwell": 282.0e9}
NCCL_LL_KINDS = ("all_reduce", "all_gather", "reduce_scatter")

@dataclass(frozen=True)
class Group:
    """n ranks, per_node of them inside any one scale-up domain."""

    n: int
    per_node: int

    @classmethod
    def strided(cls, n: int, stride: int, cluster: ClusterSpec) -> Group:
        """Ranks r, r+stride, r+2*stride, ... (Megatron orders tp fastest, then cp, ep, dp, pp)."""
        if n <= 1:
            return cls(1, 1)
        domain = cluster.domain
        per_node = max(1, min(n, domain // stride)) if stride < domain else 1
        return cls(n, per_node)


def _ring(kind: str, size: float, n: int, bw: float, alpha: float) -> float:
    if n <= 1 or size <= 0:
        return 0.0
    frac = (n - 1) / n
    if kind == "all_reduce":
        return 2 * frac * size / bw + 2 * (n - 1) * alpha
    if kind in ("all_gather", "reduce_scatter", "all_to_all"):
        return frac * size / bw + (n - 1) * alpha
    if kind == "p2p":
        return size / bw + alpha
    raise ValueError(kind)


def _tree_all_reduce(size: float, n: int, bw: float, alpha: float) -> float:
    """Double binary tree: full bandwidth in steady state (2S/B), log-depth latency."""
    if n <= 1 or size <= 0:
        return 0.0
    return 2 * size / bw + 2 * math.ceil(math.log2(n)) * alpha


def _ring_ll(kind: str, size: float, n: int, bw: float, step_latency_s: float, max_bw: float) -> float:
    """NCCL's ring on the LL protocol (NCCL_LL_*): 2(n-1) steps for an all-reduce, n-1 for a gather
    or scatter, each a hop's latency, after one call's base latency; the data at the LL share of
    the bus bandwidth."""
    steps = 2 * (n - 1) if kind == "all_reduce" else n - 1
    moved = steps / n * size  # 2(n-1)/n S for an all-reduce, (n-1)/n S otherwise
    return NCCL_LL_BASE_LATENCY_S + steps * step_latency_s + moved / min(bw * NCCL_LL_BW_FRACTION, max_bw)


def _flat(kind: str, size: float, n: int, bw: float, alpha: float, algorithm: str,
          ll: tuple[float, float] | None = None) -> float:
    """One scale-up domain. `auto` is the fastest of what NCCL's tuner chooses from: the ring, the
    double binary tree (all-reduce), and, when `ll` (step latency, bandwidth cap) is given, the ring
    on the LL protocol."""
    ring = _ring(kind, size, n, bw, alpha)
    if algorithm == "auto" and ll is not None and kind in NCCL_LL_KINDS:
        ring = min(ring, _ring_ll(kind, size, n, bw, *ll))
    if kind != "all_reduce" or algorithm == "ring":
        return ring
    tree = _tree_all_reduce(size, n, bw, alpha)
    return tree if algorithm == "tree" else min(ring, tree)


def collective_time_s(kind: str, size_bytes: float, group: Group, cluster: ClusterSpec,
                      *, algorithm: str = "auto") -> float:
    """Time of one collective; `algorithm` is ring, tree, or auto (the faster, as NCCL tunes)."""
    if kind not in KINDS:
        raise ValueError(f"unknown collective {kind}")
    n = group.n
    if n <= 1 or size_bytes <= 0:
        return 0.0
    eff = cluster.accelerator.efficiency
    g = min(group.per_node, n)
    # a point-to-point message has one peer; the other collectives reach the g - 1 in the domain
    nv_bw = cluster.accelerator.scale_up_bw_bytes_per_s(2 if kind == "p2p" else g) * eff.nvlink_busbw
    nic_bw = cluster.nic_bw_bytes_per_s_per_gpu * eff.network_busbw
    if kind == "p2p":
        return _ring("p2p", size_bytes, 2, nv_bw if g > 1 else nic_bw,
                     eff.nvlink_latency_s if g > 1 else eff.network_latency_s)
    if g >= n:
        acc = cluster.accelerator
        ll = (NCCL_LL_STEP_LATENCY_S.get(acc.scale_up, NCCL_LL_STEP_LATENCY_S["nvlink"]),
              NCCL_LL_MAX_BUSBW.get(acc.generation, math.inf))
        return _flat(kind, size_bytes, n, nv_bw, eff.nvlink_latency_s, algorithm, ll)
    m = cdiv(n, g)  # domains spanned
    a_in, a_out = eff.nvlink_latency_s, eff.network_latency_s
    if kind == "all_to_all":
        # each rank sends (n-1)/n of its data; the share leaving the domain crosses a NIC.
        inside = _ring("all_to_all", size_bytes * g / n, g, nv_bw, a_in) if g > 1 else 0.0
        outside = size_bytes * (n - g) / n / nic_bw + (m - 1) * a_out
        return max(inside, outside)
    if kind == "all_reduce":
        inner = 2 * _ring("reduce_scatter", size_bytes, g, nv_bw, a_in)
        return inner + _flat("all_reduce", size_bytes / g, m, nic_bw, a_out, algorithm)
    # all_gather / reduce_scatter: intra part on full size, inter part on 1/g of it
    return _ring(kind, size_bytes, g, nv_bw, a_in) + _ring(kind, size_bytes / g, m, nic_bw, a_out)


def p2p_all_reduce_s(size_bytes: float, n: int, cluster: ClusterSpec) -> float:
    """A serving engine's custom all-reduce inside one NVLink domain (vLLM's custom_all_reduce,
    TensorRT-LLM's AllReduce plugin): every rank reads its peers' registered buffers directly.
    One-shot reads all n-1 peers' whole buffers (one latency, (n-1) x size over the links); two-shot
    reduce-scatters then all-gathers by P2P (two latencies, 2 (n-1)/n x size). The kernels pick
    one-shot for small buffers and two-shot for larger ones at the crossing of these two costs
    (vLLM switches at 256-512 KiB on 4-8 GPUs), so the faster of the two is taken."""
    if n <= 1 or size_bytes <= 0:
        return 0.0
    acc = cluster.accelerator
    bw = acc.scale_up_bw_bytes_per_s(n) * acc.efficiency.nvlink_busbw
    a = acc.efficiency.nvlink_latency_s
    one = a + (n - 1) * size_bytes / bw
    two = 2 * a + 2 * (n - 1) / n * size_bytes / bw
    return min(one, two)


@dataclass(frozen=True)
class KVLink:
    """The path a disaggregated plan's KV cache takes from a prefill instance to a decode one."""

    bytes_per_s: float
    latency_s: float

    def time_s(self, size_bytes: float) -> float:
        """One transfer: bytes over the bandwidth, plus the link's latency once."""
        return size_bytes / self.bytes_per_s + self.latency_s


def kv_link(cluster: ClusterSpec, *, lanes: int, same_node: bool) -> KVLink:
    """NVLink when both pools sit in one node, the GPUs' NICs otherwise; `lanes` GPU pairs (the
    smaller pool TP) send their shards of the KV cache at once, at the achievable bus bandwidth."""
    acc = cluster.accelerator
    eff = acc.efficiency
    if same_node:
        # each lane is one GPU pair: on a mesh (AcceleratorSpec.link_peers) one link of the part's
        return KVLink(acc.scale_up_bw_bytes_per_s(2) * eff.nvlink_busbw * lanes, eff.nvlink_latency_s)
    return KVLink(cluster.nic_bw_bytes_per_s_per_gpu * eff.network_busbw * lanes, eff.network_latency_s)
