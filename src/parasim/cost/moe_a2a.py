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
  400 Gb/s InfiniBand and 153-158 GB/s over NVLink on H800). Over NVLink too a token goes to each
  destination GPU once, not once per expert there: DeepEP's layout is `is_token_in_rank`
  `[tokens, ranks]` and its `recv_x` holds one row per (token, rank); the receiver fans it out to its
  local experts, and the combine returns one summed row per (token, rank) (deep_ep/buffer.py,
  v1.2.1). With fp8 training the dispatch moves fp8 activations (DeepEP's FP8 dispatch), the
  combine 16-bit ones. How many GPUs and nodes a token touches depends on the routing's layout
  (`cost.routing.ROUTING_LAYOUTS`): random experts spread over them, a contiguous gate's k
  consecutive experts over the one or two GPUs holding them.
"""

from __future__ import annotations

from functools import lru_cache

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


def units_per_token(k: int, units: int, experts: int | None = None, layout: str = "random") -> float:
    """Expected distinct units (EP ranks, or NVLink domains) a token's k experts land in, the
    experts split evenly and in id order over `units`. `random`: each expert drawn independently,
    n (1 - (1 - 1/n)^k). `contiguous` (k consecutive ids from t k mod E, cost.routing): the mean over
    the start ids t k mod E of the units the run of k ids covers."""
    if units <= 1:
        return 1.0
    if layout == "contiguous" and experts and experts % units == 0:
        return _contiguous_units(k, units, experts)
    return units * (1.0 - (1.0 - 1.0 / units) ** k)


@lru_cache(maxsize=256)
def _contiguous_units(k: int, units: int, experts: int) -> float:
    per = experts // units
    starts = sorted({t * k % experts for t in range(experts)})
    spans = [len({(s + j) % experts // per for j in range(min(k, experts))}) for s in starts]
    return sum(spans) / len(spans)


def a2a_time_s(kind: str, tokens: float, k: int, hidden: int, act_bytes: float, group: Group,
               cluster: ClusterSpec, *, load: float = 1.0, dispatch_bytes_per_elem: float | None = None,
               experts: int | None = None, layout: str = "random") -> float:
    """One dispatch plus one combine over the EP `group`, seconds (no ETP part); `experts` and
    `layout` say which GPUs a token's experts sit on (DeepEP sends it once to each)."""
    if group.n <= 1 or tokens <= 0:
        return 0.0
    d_bytes = act_bytes if dispatch_bytes_per_elem is None else dispatch_bytes_per_elem
    if kind == "alltoall":
        return (collective_time_s("all_to_all", dispatch_bytes(tokens, k, hidden, d_bytes, load), group, cluster)
                + collective_time_s("all_to_all", dispatch_bytes(tokens, k, hidden, act_bytes, load), group, cluster))
    spread = (experts, layout)
    return (_deepep_s(tokens, k, hidden, d_bytes, group, cluster, load, spread)
            + _deepep_s(tokens, k, hidden, act_bytes, group, cluster, load, spread))


def _deepep_s(tokens: float, k: int, hidden: int, elem_bytes: float, group: Group, cluster: ClusterSpec,
              load: float, spread: tuple[int | None, str] = (None, "random")) -> float:
    """One DeepEP dispatch (or combine): the network carries each token once per remote domain it
    touches, NVLink once per destination GPU (in-domain sends and the forwarded copies, the share
    (g - 1)/g not landing on the GPU itself); the two run concurrently."""
    acc, eff = cluster.accelerator, cluster.accelerator.efficiency
    g = min(group.per_node, group.n)
    m = cdiv(group.n, g)
    experts, layout = spread
    copies = tokens * units_per_token(k, group.n, experts, layout) * load
    nv_bw = acc.scale_up_bw_bytes_per_s(g) * eff.nvlink_busbw
    nvlink = copies * (g - 1) / g * hidden * elem_bytes / nv_bw + eff.nvlink_latency_s if g > 1 else 0.0
    if m <= 1:
        return nvlink
    nic_bw = cluster.nic_bw_bytes_per_s_per_gpu * eff.network_busbw
    away = (remote_domains_per_token(k, m) if layout == "random"
            else units_per_token(k, m, experts, layout) * (m - 1) / m)  # a domain is the sender's own 1/m of the time
    remote = tokens * load * away * hidden * elem_bytes
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
