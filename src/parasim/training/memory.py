"""Peak memory per GPU at the peak of the simulated schedule.

Model state (weights, gradients, optimizer, sharded by ZeRO over dp*cp) per pipeline rank, plus
the activations of every micro-batch chunk the schedule holds in flight: walking each rank's op
list, a forward adds its chunk's activations and a backward frees them; the maximum of the running
sum is the activation peak (GPipe: m micro-batches; 1F1B: up to p on rank 0; interleaved: Megatron's
1 + (p-1)/(p*v) penalty emerges from the warm-up length). Schedules that split the backward free
a micro-batch's activations at its B down to what its W reads (`weight_grad_input_bytes_per_layer`),
and that at the W. Per-layer activation bytes come from
`cost.memory` (Korthikanti et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

from parasim.cost.memory import (activation_bytes_per_layer, embedding_activation_bytes, logits_activation_bytes,
                                 saved_linear_input_bytes, stage_state_bytes, te_fp8_weight_bytes,
                                 weight_grad_input_bytes_per_layer)
from parasim.cost.moe_host import scope_set
from parasim.cost.moe_memory import moe_buffer_bytes_per_token
from parasim.cost.partition import rank_stages, stage_count
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec
from parasim.training.plan import TrainingPlan
from parasim.training.schedules import Op, get_schedule
from parasim.units import gib

# CUDA context, cuBLAS/NCCL workspaces and allocator fragmentation held outside the tensors
# (assumption; PyTorch+NCCL processes typically reserve 1.5-3 GB beyond live tensors).
RESERVED_BYTES = 2.0e9


@dataclass(frozen=True)
class MemoryBreakdown:
    rank: int  # pipeline rank with the highest peak
    weights: float
    gradients: float
    optimizer: float
    activations: float
    inflight_microbatches: float  # activation peak / one micro-batch of the whole rank's layers
    reserved: float
    capacity: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.reserved

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    def to_dict(self) -> dict[str, float]:
        """Sizes in GiB (parasim.units), the unit HBM capacity is quoted in."""
        return {"rank": self.rank, "weights_gib": gib(self.weights), "gradients_gib": gib(self.gradients),
                "optimizer_gib": gib(self.optimizer), "activations_gib": gib(self.activations),
                "reserved_gib": gib(self.reserved), "total_gib": gib(self.total),
                "capacity_gib": gib(self.capacity), "inflight_microbatches": self.inflight_microbatches}


def peak_activation_units(ops: list[Op], weights: list[float], held: list[float] | None = None) -> float:
    """Max over time of the in-flight sum of `weights[chunk]` for one rank's op list. A schedule
    that splits the backward keeps `held[chunk]` (what its W reads) from the B to the W."""
    cur = peak = 0.0
    for kind, _, c in ops:
        if kind == "F":
            cur += weights[c]
            if cur > peak:
                peak = cur
        elif kind == "B":
            cur -= weights[c]
            if held is not None:
                cur += held[c]
                if cur > peak:
                    peak = cur
        else:
            cur -= held[c]
    return peak


def state_bytes(model: ModelSpec, plan: TrainingPlan, rank: int, vcounts: tuple[int, ...] | None = None,
                generation: str = ""):
    """`vcounts`: layers per virtual stage when the split is not the default one (a mixed cluster);
    `generation`: the GPU's architecture, which decides Transformer Engine's FP8 weight copies."""
    fp8_weight = te_fp8_weight_bytes(plan.precision, plan.kernels, plan.fp8_recipe, plan.fp8_param_gather, generation)
    # ZeRO-3 shards over its shard group (all dp*cp ranks unless hybrid sharding: `fsdp_shard`)
    shard = plan.fsdp_group if plan.zero >= 3 else plan.dp * plan.cp
    return stage_state_bytes(model, tp=plan.tp, pp=plan.pp, ep=plan.ep, dp_cp=shard, zero=plan.zero,
                             stage=rank, virtual_stages=plan.virtual_stages, grad_bytes=plan.grad_bytes,
                             counts=vcounts, etp=plan.expert_tp, layout=get_schedule(plan.schedule_name).layout,
                             param_state=plan.param_state, linear_weight_bytes=fp8_weight)


def moe_buffers_per_token(model: ModelSpec, plan: TrainingPlan, load: float = 1.0) -> float:
    """An average layer's MoE buffers (permuted tokens, router probabilities) per token, bytes:
    the MoE layers' share of the layers (`cost.moe_memory`); none under full recomputation. The
    permuted tokens are the experts' first GEMM input, kept at the linear layers' saved-input width
    (`saved_linear_input_bytes`: Transformer Engine's GroupedLinear keeps the quantized FP8 copy,
    TransformerEngine v2.9 module/grouped_linear.py `split_quantize`, then `update_usage(rowwise_usage=False,
    columnwise_usage=True)` on the saved `inputmats`)."""
    if not model.is_moe or plan.recompute in ("full", "selective_op"):
        return 0.0
    lin = saved_linear_input_bytes(plan.precision, plan.kernels)
    per_moe = moe_buffer_bytes_per_token(model, tp=plan.tp, etp=plan.expert_tp, sp=plan.sequence_parallel and plan.tp > 1,
                                         load=load, act_bytes=2.0 if lin is None else lin)
    return per_moe * model.moe_layer_share


def chunk_activation_bytes(pp: int, v: int, layout: str, counts, per_layer: float, emb: float,
                           logits: float) -> list[list[float]]:
    """Per (rank, chunk): one micro-batch's activation bytes, its layers plus the embedding on the
    first virtual stage and the logits on the last (`cost.partition.rank_stages` places them)."""
    stages, last = rank_stages(pp, v, layout), stage_count(pp, v, layout) - 1
    out = []
    for r in range(pp):
        w = []
        for c in range(v):
            g = stages[r][c]
            b = counts[r][c] * per_layer
            if g == 0:
                b += emb
            if g == last:
                b += logits
            w.append(b)
        out.append(w)
    return out


def peak_memory(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan, ops: list[list[Op]],
                counts: list[list[int]], *, ranks: range | None = None,
                vcounts: tuple[int, ...] | None = None, expert_load: float = 1.0) -> MemoryBreakdown:
    """The highest peak over `ranks` (default: every pipeline rank) against `cluster`'s HBM; a
    mixed cluster asks once per GPU group, for the ranks that group holds (training/hetero.py).
    `expert_load`: the busiest EP rank's routed pairs over the mean (its permuted-token buffers)."""
    sp = plan.sequence_parallel and plan.tp > 1
    lin = saved_linear_input_bytes(plan.precision, plan.kernels)
    per_layer = activation_bytes_per_layer(model, seq=plan.seq_len, micro_batch=plan.micro_batch, tp=plan.tp,
                                           sp=sp, cp=plan.cp, recompute=plan.recompute,
                                           flash=plan.flash_attention, modules=plan.recompute_module_set or None,
                                           moe_buffers=moe_buffers_per_token(model, plan, expert_load),
                                           linear_input_bytes=lin, fused_norms=plan.kernels == "fused",
                                           graph_scopes=scope_set(plan.cuda_graph_scope))
    emb = embedding_activation_bytes(model, seq=plan.seq_len, micro_batch=plan.micro_batch, tp=plan.tp, sp=sp,
                                     cp=plan.cp)
    logits = logits_activation_bytes(model, seq=plan.seq_len, micro_batch=plan.micro_batch, tp=plan.tp, cp=plan.cp,
                                     cross_entropy=plan.cross_entropy)
    pp, v = plan.pp, plan.virtual_stages
    sched = get_schedule(plan.schedule_name)
    weights = chunk_activation_bytes(pp, v, sched.layout, counts, per_layer, emb, logits)
    held = None
    if sched.splits_backward:  # W keeps its GEMM inputs and output gradients; the edges keep theirs
        wl = weight_grad_input_bytes_per_layer(model, seq=plan.seq_len, micro_batch=plan.micro_batch, tp=plan.tp,
                                               sp=sp, cp=plan.cp, linear_input_bytes=lin)
        held = chunk_activation_bytes(pp, v, sched.layout, counts, wl, emb, logits)
    best: MemoryBreakdown | None = None
    for r in ranks if ranks is not None else range(pp):
        w = weights[r]
        act = peak_activation_units(ops[r], w, held[r] if held else None)
        st = state_bytes(model, plan, r, vcounts, cluster.accelerator.generation)
        one_mb = sum(w)
        mb = MemoryBreakdown(r, st.weights, st.gradients, st.optimizer, act, act / one_mb if one_mb else 0.0,
                             RESERVED_BYTES, cluster.accelerator.hbm_bytes)
        if best is None or mb.total > best.total:
            best = mb
    assert best is not None
    return best
