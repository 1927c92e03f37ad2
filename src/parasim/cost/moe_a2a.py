"""An MoE layer's token dispatch and combine in training: bytes and time per GPU.

Each GPU routes its own tokens (the sequence-parallel shard of its TP group) to the EP ranks
holding their experts and gathers the results back: one all-to-all each way over the EP group,
`tokens x experts_per_token x hidden` elements per GPU. With expert tensor parallelism (etp > 1)
the dispatched tokens are then all-gathered over the etp ranks sharing each expert, and the
combine reduce-scatters them first (Megatron-Core's alltoall dispatcher).

Two kernels (`A2A_KINDS`):

* `alltoall`: NCCL all-to-all (Megatron-Core `--moe-token-dispatcher-type alltoall`), every
  token-expert pair sent on its own, costed by `cost.comm` over the NVLink domains and NICs the
  EP group spans;
* `deepep`: DeepSeek's DeepEP kernels (Megatron-Core `--moe-token-dispatcher-type flex
  --moe-enable-deepep`): a token bound for several experts on one remote node crosses the network
  once, to the GPU of the same local index there, and is fanned out over NVLink (DeepSeek-V3
  technical report, section 3.2.2; DeepEP README: normal kernels reach 43-58 GB/s per GPU over
  400 Gb/s InfiniBand and 153-158 GB/s over NVLink on H800). With fp8 training the dispatch
  moves fp8 activations (DeepEP's FP8 dispatch), the combine 16-bit ones.
"""

from __future__ import annotations

from parasim.cost.comm import Group, collective_time_s
from parasim.mathx import cdiv
from parasim.specs.cluster import ClusterSpec

A2A_KINDS = ("alltoall", "deepep")


def dispatch_bytes(tokens: float, k: int, hidden: int, act_bytes: float, load: float = 1.0) -> float:
    """Bytes of one dispatch (or combine) on one GPU: its tokens' token-expert pairs, times `load`,
    the busiest rank's received pairs over the mean (routing imbalance, after any dropping)."""
    return tokens * k * hidden * act_bytes * load


def remote_domains_per_token(k: int, domains: int) -> float:
    """Expected distinct other NVLink domains a token's k experts land in, experts spread evenly over
    `domains` domains of the EP group: (m - 1) (1 - (1 - 1/m)^k)."""
    if domains <= 1:
        return 0.0
    return (domains - 1) * (1.0 - (1.0 - 1.0 / domains) ** k)


def a2a_time_s(kind: str, tokens: float, k: int, hidden: int, act_bytes: float, group: Group,
               cluster: ClusterSpec, *, load: float = 1.0, dispatch_bytes_per_elem: float | None = None) -> float:
    """One dispatch plus one combine over the EP `group`, seconds (no ETP part)."""
    if group.n <= 1 or tokens <= 0:
        return 0.0
    d_bytes = act_bytes if dispatch_bytes_per_elem is None else dispatch_bytes_per_elem
    if kind == "alltoall":
        return (collective_time_s("all_to_all", dispatch_bytes(tokens, k, hidden, d_bytes, load), group, cluster)
                + collective_time_s("all_to_all", dispatch_bytes(tokens, k, hidden, act_bytes, load), group, cluster))
    return _deepep_s(tokens, k, hidden, d_bytes, group, cluster, load) + _deepep_s(tokens, k, hidden, act_bytes,
                                                                                  group, cluster, load)


def _deepep_s(tokens: float, k: int, hidden: int, elem_bytes: float, group: Group, cluster: ClusterSpec,
              load: float) -> float:
    """One DeepEP dispatch (or combine): the network carries each token once per remote domain it
    touches, NVLink the in-domain pairs and the forwarded copies; the two run concurrently."""
    acc, eff = cluster.accelerator, cluster.accelerator.efficiency
    g = min(group.per_node, group.n)
    m = cdiv(group.n, g)
    pairs = tokens * k * load
    nv_bw = acc.scale_up_bw_bytes_per_s(g) * eff.nvlink_busbw
    nvlink = pairs * (g - 1) / g * hidden * elem_bytes / nv_bw + eff.nvlink_latency_s if g > 1 else 0.0
    if m <= 1:
        return nvlink
    nic_bw = cluster.nic_bw_bytes_per_s_per_gpu * eff.network_busbw
    remote = tokens * load * remote_domains_per_token(k, m) * hidden * elem_bytes
    return max(nvlink, remote / nic_bw + eff.network_latency_s)


def etp_exchange_s(tokens: float, k: int, hidden: int, act_bytes: float, etp: int, cluster: ClusterSpec,
                   *, load: float = 1.0) -> float:
    """With expert tensor parallelism: the all-gather of the dispatched tokens over the etp ranks of
    an expert (output: etp x this GPU's pairs) and the combine's reduce-scatter of the same size."""
    if etp <= 1 or tokens <= 0:
        return 0.0
    size = etp * dispatch_bytes(tokens, k, hidden, act_bytes, load)
    group = Group.strided(etp, 1, cluster)
    return (collective_time_s("all_gather", size, group, cluster)
            + collective_time_s("reduce_scatter", size, group, cluster))
