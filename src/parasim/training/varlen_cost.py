"""What the work a varlen balancing strategy moves between ranks costs, per layer forward.

The rates come from the plan's own layer costing (step.layer_times at the mean attention), so a
strategy's balance is judged in the same seconds the step is simulated in: linear layers per
token, attention per causal pair, and the communication of sequence-parallel shards (the CP ring
with its K/V blocks, Ulysses all-to-alls of Q/K/V and the output, Zeppelin's token remapping).
"""

from __future__ import annotations

from parasim.cost.comm import Group, collective_time_s
from parasim.cost.dtypes import attention_dtype, dtype_bytes
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec
from parasim.training.plan import TrainingPlan
from parasim.training.step import OVERLAP_SLOWDOWN, LayerTimes


def pool_costs(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan, layer: LayerTimes,
               mean_pairs_per_mb: float) -> dict:
    """Keyword arguments of varlen_balance.Pool for this plan (rates from `layer`, costed at the
    mean pairs of a micro-batch)."""
    tokens = plan.micro_batch * plan.seq_len / plan.cp
    attn = layer.parts["attention"]
    pair_s = attn / (mean_pairs_per_mb / plan.cp) if mean_pairs_per_mb else 0.0
    token_s = max(0.0, layer.fwd_compute - attn) / tokens
    ab = dtype_bytes(attention_dtype(plan.precision), field="precision")
    tp = plan.tp
    kv = 2 * max(1, model.kv_heads // tp) * model.head_dim * ab  # K and V per token
    qo = 2 * model.q_dim / tp * ab  # Q in, attention output back
    ranks = plan.dp * plan.cp

    def ring_s(x: float, c: int) -> float:
        return (c - 1) * collective_time_s("p2p", x * kv, Group.strided(c, tp, cluster), cluster) if c > 1 else 0.0

    def a2a_s(x: float, c: int) -> float:
        group = Group.strided(c, tp, cluster)
        return (collective_time_s("all_to_all", x * (kv + qo / 2), group, cluster)
                + collective_time_s("all_to_all", x * qo / 2, group, cluster)) if c > 1 else 0.0

    def remap_s(x: float) -> float:
        return 2 * collective_time_s("all_to_all", x * model.hidden * ab / tp, Group.strided(ranks, tp, cluster),
                                     cluster) if x > 0 else 0.0

    return {"token_s": token_s, "pair_s": pair_s, "ring_s": ring_s, "a2a_s": a2a_s, "remap_s": remap_s,
            "node_ranks": max(1, min(ranks, cluster.domain // tp)), "overlap_slowdown": OVERLAP_SLOWDOWN}
