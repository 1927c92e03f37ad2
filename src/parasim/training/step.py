"""One optimizer step as events, for one representative pipeline (all DP replicas are identical).

1. `layer_times`: one transformer layer's forward and backward on one GPU for one micro-batch,
   split into compute and exposed in-layer communication (TP/SP, CP ring, EP all-to-all), from
   `cost.layer`. Costed once per plan and multiplied by the layers of each pipeline chunk.
2. `run_pipeline`: every rank executes its schedule's op list in order; a forward of virtual
   stage g waits for the forward of g-1 (plus the p2p send), a backward of g for the backward of
   g+1. Idle time (the bubble) is whatever the dependencies leave.
3. After its last backward each rank reduces its gradients over DP (overlapped with the backward
   of the last micro-batch when `overlap_grad_reduce`, as Megatron's bucketed DDP does), runs the
   optimizer (memory-bound Adam over its local shard) and, with the distributed optimizer,
   all-gathers the updated parameters (hidden behind the next step's forward when
   `overlap_param_gather`). The slowest rank sets the step.
4. The slowest GPU of the job stretches the critical rank's compute (`training/straggler.py`).

Engine constants (documented with their sources in docs/training.md):
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from parasim.cost.comm import Group, collective_time_s
from parasim.cost.dtypes import attention_dtype, dtype_bytes
from parasim.cost.fsdp_copies import fsdp2_copies_s
from parasim.cost.ring_merge import ring_merge_s
from parasim.cost.layer import EdgeCost, LayerCost, forward_gemms_s, op_time_s
from parasim.cost.memory import (MXFP8_SCALE_BYTES, NON_TN_FP8_GENERATIONS, routed_expert_params_per_gpu,
                                 te_fp8_weight_bytes, weight_params_per_gpu)
from parasim.cost.moe_host import backward_edge_s, exposed_s, moe_layer_host, scope_set
from parasim.cost.moe_memory import recomputed_norms
from parasim.cost.nongemm import adam_bytes_per_param
from parasim.cost.param_state import HALF_BYTES
from parasim.cost import partition
from parasim.cost.roofline import memory_time_s
from parasim.cost.routing import ExpertRouting
from parasim.cost.sac import recomputed_matmul_fraction
from parasim.errors import InputError
from parasim.mathx import cdiv
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec
from parasim.training.plan import TrainingPlan
from parasim.training.schedules import Op, get_schedule, planned_op_times, rank_ops, rank_pairs
from parasim.training.straggler import straggler_s

# Parameters are gathered in 16-bit (the distributed optimizer's and FSDP's all-gathers).
PARAM_GATHER_BYTES = 2.0
# Megatron DDP bucket: max(40M, 1M * dp) parameters; the last bucket cannot overlap the backward.
DDP_BUCKET_PARAMS = 40e6
# Transformer Engine FP8 casts per GEMM operand element: read 16-bit (2), write fp8 (1) and its
# transpose for the other GEMM of the backward (1).
FP8_CAST_BYTES = 4.0
# Unfused attention (Megatron 2021): bytes per score element per forward: baddbmm writes scores (2),
# fused scale-mask-softmax reads (2) and writes (2), dropout reads (2), writes output (2) and mask
# (1), the value matmul reads the probabilities (2). Backward moves about twice as much.
UNFUSED_SCORE_BYTES_FWD = 13.0
# FlashAttention in Triton (the 2022-23 kernels: OpenAI's Triton tutorial kernel, flash_attn_triton.py that
# MPT/llm-foundry ran as attn_impl: triton) against FlashAttention-2: "FlashAttention-2 is ... 1.3-2.5x
# faster than FlashAttention in Triton" (Dao 2023, arXiv:2307.08691, section 4.1, A100, forward + backward);
# the geometric midpoint of that range, sqrt(1.3 x 2.5). It holds at the catalogued point; shorter and
# causal sequences slow down further by the FA1 curve the layer's law charges (cost/attn_shape.py TRITON_FA1).
TRITON_FA_SLOWDOWN = 1.803
# Communication overlapped with compute is not free: NCCL / userbuffers kernels occupy SMs
# (typically 16-24 of 108-132) and HBM bandwidth while they run, slowing the GEMMs they hide behind.
OVERLAP_SLOWDOWN = 0.15
# Weight-gradient GEMMs accumulate into the main-gradient buffer (Megatron's gradient-accumulation
# fusion; Transformer Engine's fuse_wgrad_accumulation): the epilogue of every output tile reads and
# writes that buffer, grad_bytes each way, once per micro-batch. The epilogue follows the tile's
# main loop, so this traffic adds to the GEMM's compute time instead of hiding under it.
WGRAD_ACCUM_RW = 2.0


@dataclass(frozen=True)
class LayerTimes:
    """Per layer, per micro-batch, on one GPU: seconds."""

    fwd_compute: float
    fwd_comm: float  # exposed in-layer communication in the forward
    bwd_compute: float  # includes recomputation
    bwd_comm: float
    bwd_weight_compute: float  # of bwd_compute: weight-gradient GEMMs and their accumulation (deferrable)
    parts: dict[str, float] = field(default_factory=dict)  # named forward breakdown
    fwd_host: float = 0.0  # the GPU waiting on the host to issue the layer's kernels (cost/moe_host.py)
    bwd_host: float = 0.0
    # once per model chunk and micro-batch: the first MoE layer's backward from an empty queue,
    # beyond bwd_host (paid where the pipeline exchange syncs the device: `_p2p_syncs`)
    bwd_host_edge: float = 0.0


def wgrad_accum_s(params: float, plan: TrainingPlan, acc) -> float:
    """The main-gradient accumulation epilogue of weight-gradient GEMMs over `params` local
    weights, per micro-batch (`WGRAD_ACCUM_RW` x grad_bytes each)."""
    return memory_time_s(params * WGRAD_ACCUM_RW * plan.grad_bytes, acc)


def _costers(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan) -> tuple[LayerCost, EdgeCost]:
    act = attention_dtype(plan.precision)  # Transformer Engine FP8: only GEMM inputs are 8-bit
    if plan.cudnn_version is not None and cluster.accelerator.generation != "blackwell":
        raise InputError("cudnn-version", f"picks a Blackwell cuDNN attention curve; {cluster.accelerator.id} is "
                                          f"{cluster.accelerator.generation} (no per-version curve there)")
    s = plan.sharding(model)
    # expert ranks in Megatron-Core's folded order: etp fastest, then ep
    layer = LayerCost(model, cluster, s, weight_dtype=plan.precision, act_dtype=act, kv_dtype=act,
                      tp_group=Group.strided(plan.tp, 1, cluster),
                      ep_group=Group.strided(plan.ep, plan.expert_tp, cluster), kernels=plan.kernels,
                      dropout=model.dropout, routing=expert_routing(plan), attention_kernel=_attention_kernel(plan))
    # the LM head and embedding are not Transformer Engine layers: they stay in 16-bit
    edge_layer = layer if plan.precision != "fp8" else LayerCost(model, cluster, s, weight_dtype=act,
                                                                 act_dtype=act, kv_dtype=act, kernels=plan.kernels)
    return layer, EdgeCost(edge_layer)


def _attention_kernel(plan: TrainingPlan) -> str:
    """The fused-attention kernel family whose rate curve prices the plan: Megatron-Core / NeMo
    (`kernels: fused`) attend through Transformer Engine's fused attention ("te_fused": cuDNN on
    Blackwell, cost.attn_shape.law_for; "te_fused@9.18" with the plan's `cudnn_version`), every
    other stack through the plan's `attention` kernel."""
    if plan.te_fused_attention:
        return f"te_fused@{plan.cudnn_version}" if plan.cudnn_version is not None else "te_fused"
    return plan.attention


def _unfused_attention_s(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan, seqs: float,
                         seq: float) -> float:
    """Materialised-score attention forward: two batched GEMMs over the full s x s plus softmax traffic."""
    acc = cluster.accelerator
    dt = attention_dtype(plan.precision)
    heads = model.heads // plan.tp
    scores = seqs * heads * seq * seq
    flops = 2 * scores * (model.qk_head_dim + model.v_head_dim)
    drop_bytes = UNFUSED_SCORE_BYTES_FWD if model.dropout else UNFUSED_SCORE_BYTES_FWD - 5.0
    gemm = flops / (acc.sustained_peak(dt) * acc.gemm_efficiency(dt))
    return gemm + memory_time_s(scores * drop_bytes, acc, kernels=4) + 2 * acc.efficiency.kernel_overhead_s


def layer_times(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan, layer: LayerCost,
                pairs_per_mb: float, *, moe: bool, cp_comm: tuple[float, float] | None = None) -> LayerTimes:
    """One layer, one micro-batch: `pairs_per_mb` = causal query-key pairs of the micro-batch;
    `cp_comm` replaces the plan's CP ring with a varlen strategy's (ring s, exposed s) per forward.
    The backward is `LayerCost.backward` (one model for every caller) plus what only training
    adds: FP8 casts of the incoming gradients, main-gradient accumulation, recomputation."""
    t = plan.micro_batch * plan.seq_len / plan.cp  # tokens on this GPU
    acc = cluster.accelerator
    f = layer.forward(t, prefill_pairs=pairs_per_mb / plan.cp, moe=moe)
    attn_f = _attention_fwd_s(model, cluster, plan, f)
    b = layer.backward(f, attention_s=attn_f, fused_attention=plan.flash_attention,
                       attention_bwd_shape=layer.attention_bwd_shape(t, pairs_per_mb / plan.cp))
    gemms, elem = forward_gemms_s(f), f["elementwise"]
    cast_f, cast_b = _fp8_casts_s(model, plan, layer, acc, t, moe=moe)
    ring_f, ring_b = (ring_merge_s(t * model.heads * model.head_dim / plan.tp, plan.cp, acc)
                      if plan.cp_ring == "pytorch" else (0.0, 0.0))
    fwd_compute = gemms + attn_f + elem + cast_f + ring_f
    copy_f, copy_b = _fsdp_copies_s(model, plan, acc, moe)
    # FSDP2 gets each weight gradient as a fresh tensor: no main-gradient accumulation epilogue
    wgrad_accum = 0.0 if copy_f else wgrad_accum_s(layer_weight_params(model, plan, moe), plan, acc)
    bwd_compute = b["compute"] + cast_b + wgrad_accum + copy_b + ring_b
    fwd_comm, bwd_comm = _inlayer_comm_s(plan, layer, f, t, gemms, b, attn_f, cp_comm)

    if plan.recompute == "full":
        bwd_compute += fwd_compute
        bwd_comm += fwd_comm
    elif plan.recompute == "selective":
        bwd_compute += _selective_recompute_s(model, plan, layer, t, attn_f, moe)
    elif plan.recompute == "dots":  # matmul outputs saved: only the elementwise ops run again
        bwd_compute += elem + cast_f
    elif plan.recompute == "selective_op":  # torchtitan: the unsaved matmuls and every elementwise op again
        recomputed_gemms = gemms * recomputed_matmul_fraction(model)
        bwd_compute += recomputed_gemms + elem + cast_f
        bwd_comm += _sac_regather_s(model, cluster, plan, layer, t, recomputed_gemms)

    parts = {"gemms": gemms, "attention": attn_f, "elementwise": elem + cast_f, "wgrad_accum": wgrad_accum,
             "tp_comm": f["tp_comm"], "cp_comm": layer.cp_comm_s(t) if cp_comm is None else sum(cp_comm), "ep_comm": f["ep_comm"],
             **{f"elementwise_{k}": v for k, v in layer.nongemm_s(t, moe).items()}, "elementwise_fp8_casts": cast_f}
    if copy_f:
        parts.update(fsdp_copy=copy_f, fsdp_copy_bwd=copy_b)
    if ring_f:
        parts.update(cp_ring_merge=ring_f, cp_ring_merge_bwd=ring_b)
    host_f = host_b = edge_b = 0.0
    if moe:
        host = moe_layer_host(model.experts // plan.ep, fp8=plan.precision == "fp8",
                              scopes=scope_set(plan.cuda_graph_scope), host_cpu=cluster.accelerator.host_cpu,
                              fp8_recipe=plan.fp8_recipe)
        to_experts = _to_experts_gpu_s(plan, layer, f, t)
        host_f, host_b = exposed_s(host, fwd_compute + copy_f + fwd_comm, bwd_compute + bwd_comm,
                                   None if to_experts is None else to_experts[0])
        if to_experts is not None:
            edge_b = backward_edge_s(host, bwd_compute + bwd_comm, to_experts[1])
    return LayerTimes(fwd_compute + copy_f, fwd_comm, bwd_compute, bwd_comm, b["weight_grad"] + wgrad_accum, parts,
                      host_f, host_b, edge_b)


#: the routed experts' GEMMs in `LayerCost`'s MoE operators
_EXPERT_GEMMS = ("experts_up", "experts_down")


def _to_experts_gpu_s(plan: TrainingPlan, layer: LayerCost, f: dict[str, float],
                      t: float) -> tuple[float, float] | None:
    """GPU seconds of an MoE layer's (forward, backward) up to its last expert GEMM: in the
    forward from the dispatcher's sync, the dispatch (half of the layer's EP exchange), the routed
    experts' GEMMs and, in FP8, the casts of their inputs; in the backward the combine's backward
    (the other half), the experts' data- and weight-gradient GEMMs (each at the forward GEMM's
    time, as `LayerCost.backward`) and their FP8 casts. Only this work can hide the host's issue
    of those GEMMs (cost.moe_host). None (not split) under the all-to-all overlap, whose
    interleaving of two micro-batches' layers puts other work in that stretch."""
    if plan.moe_a2a_overlap:
        return None
    acc = layer.acc
    experts = sum(op_time_s(o, acc) for o in layer.token_ops(t, moe=True) if o.name in _EXPERT_GEMMS)
    cast_f = cast_b = 0.0
    if plan.precision == "fp8":
        el_f, el_b = _expert_cast_elements(layer.model, plan, layer, t)
        cast_f, cast_b = memory_time_s(el_f * FP8_CAST_BYTES, acc), memory_time_s(el_b * FP8_CAST_BYTES, acc)
    return f["ep_comm"] / 2 + experts + cast_f, f["ep_comm"] / 2 + 2 * experts + cast_b


def _fsdp2_sharded(plan: TrainingPlan) -> bool:
    """FSDP2 with its parameters sharded: each weight gradient is a fresh tensor (no main-gradient
    buffer to accumulate into), and each layer pays the copy-out and chunk-cat."""
    return plan.fsdp_layout == "per_param" and plan.zero >= 3 and plan.fsdp_group > 1


def _fsdp_copies_s(model: ModelSpec, plan: TrainingPlan, acc, moe: bool) -> tuple[float, float]:
    """FSDP2's copy-out and chunk-cat for one layer, per micro-batch (`cost/fsdp_copies.py`);
    zero for flat-buffer ZeRO-3 and when nothing is sharded."""
    if not _fsdp2_sharded(plan):
        return 0.0, 0.0
    return fsdp2_copies_s(layer_weight_params(model, plan, moe), PARAM_GATHER_BYTES, plan.grad_bytes, acc)


def _sac_regather_s(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan, layer: LayerCost, t: float,
                    recomputed_gemms_s: float) -> float:
    """Exposed seconds of the all-gathers torchtitan's op-level SAC runs again in the backward: its
    save list keeps reduce-scatter outputs but not all-gather ones (cost/sac.py), so with sequence
    parallelism the recomputed block gathers its attention and MLP inputs again (the recomputed
    K and up projections read them). Under TP overlap they pipeline with those recomputed matmuls."""
    if not layer.s.sp:
        return 0.0
    ag = 2 * collective_time_s("all_gather", t * model.hidden * layer.ab, layer.tp_group, cluster)
    if not plan.tp_comm_overlap:
        return ag
    hid = min(ag, recomputed_gemms_s)
    return ag - hid + OVERLAP_SLOWDOWN * hid


def _attention_fwd_s(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan, f: dict[str, float]) -> float:
    """The forward attention of the plan's kernel: the catalog's best fused kernel, an
    FA2-generation one (the catalog's `attention_fa2_ratio` of that rate), the Triton FlashAttention
    of 2022-23 (TRITON_FA_SLOWDOWN below FA2), or unfused."""
    if not plan.flash_attention:
        return _unfused_attention_s(model, cluster, plan, plan.micro_batch, plan.seq_len / plan.cp)
    if plan.attention == "flash2":
        return f["attn_prefill"] / cluster.accelerator.efficiency.attention_fa2_ratio
    if plan.attention == "triton":
        return f["attn_prefill"] / cluster.accelerator.efficiency.attention_fa2_ratio * TRITON_FA_SLOWDOWN
    return f["attn_prefill"]


def _fp8_casts_s(model: ModelSpec, plan: TrainingPlan, layer: LayerCost, acc, t: float, *,
                 moe: bool) -> tuple[float, float]:
    """Transformer Engine's casts of the GEMM inputs to FP8: (forward, backward) seconds. The
    forward casts each GEMM's input, the backward each GEMM's output gradient (the dgrad and
    wgrad operands), so the elements are those of the tensors entering and leaving the GEMMs."""
    if plan.precision != "fp8":
        return 0.0, 0.0
    tp = plan.tp
    qkv_out = (model.q_dim + 2 * model.kv_heads * model.head_dim) / tp
    # attention: the QKV input and the output projection's input; their output gradients
    fwd_el = t * (model.hidden + model.q_dim / tp)
    bwd_el = t * (qkv_out + model.hidden)
    if moe:
        fwd_m, bwd_m = _expert_cast_elements(model, plan, layer, t)
        fwd_el, bwd_el = fwd_el + fwd_m, bwd_el + bwd_m
        if model.shared_experts:  # a dense MLP of shared_experts x moe_ffn_hidden beside the router
            fwd_m, bwd_m = _mlp_cast_elements(model, t, model.shared_experts * model.moe_ffn_hidden / tp)
            fwd_el, bwd_el = fwd_el + fwd_m, bwd_el + bwd_m
    else:
        fwd_m, bwd_m = _mlp_cast_elements(model, t, model.ffn_hidden / tp)
        fwd_el, bwd_el = fwd_el + fwd_m, bwd_el + bwd_m
    return (memory_time_s(fwd_el * FP8_CAST_BYTES, acc, kernels=4),
            memory_time_s(bwd_el * FP8_CAST_BYTES, acc, kernels=4))


def _expert_cast_elements(model: ModelSpec, plan: TrainingPlan, layer: LayerCost, t: float) -> tuple[float, float]:
    """Elements TEGroupedMLP's GroupedLinear quantizes around the routed experts: (forward,
    backward). It receives the permuted rows: one row per routed token-expert pair (the ep peers'
    tokens x top-k, gathered over etp, at the busiest rank's load, as `LayerCost._moe_ops` runs
    the GEMMs), not one row per token."""
    rows = layer.moe_group_tokens(t) * model.experts_per_token * layer.expert_load(t) / plan.ep
    return _mlp_cast_elements(model, rows, model.moe_ffn_hidden / layer.etp)


def _mlp_cast_elements(model: ModelSpec, rows: float, width: float) -> tuple[float, float]:
    """Elements cast to FP8 around an MLP of `width` (per GPU) over `rows` rows: (forward,
    backward). Forward: the first GEMM's input (hidden wide) and the second's (width); backward:
    the second GEMM's output gradient (hidden) and the first's (gate + up, or up: its widths)."""
    mm = model.mlp_matrices - 1  # gate + up (gated MLP) or up: the first GEMM's output widths
    return rows * (model.hidden + width), rows * (model.hidden + mm * width)


def _inlayer_comm_s(plan: TrainingPlan, layer: LayerCost, f: dict[str, float], t: float, gemms: float,
                    b: dict[str, float], attn_f: float,
                    cp_comm: tuple[float, float] | None = None) -> tuple[float, float]:
    """Exposed TP/SP, CP-ring and EP communication inside the layer: (forward, backward) seconds."""
    tp_c = f["tp_comm"]
    if plan.tp_comm_overlap:  # all-gather / reduce-scatter pipelined with the neighbouring GEMMs
        hid_f, hid_b = min(tp_c, gemms), min(tp_c, b["dgrad_gemms"] + b["wgrad_gemms"])
        tp_f = tp_c - hid_f + OVERLAP_SLOWDOWN * hid_f
        tp_b = tp_c - hid_b + OVERLAP_SLOWDOWN * hid_b
    else:
        tp_f = tp_b = tp_c
    cp_c, sp_x = (layer.cp_comm_s(t), 0.0) if cp_comm is None else cp_comm
    # ring attention: K/V blocks overlap the block-wise attention; sp_x (Ulysses, remaps) does not
    cp_f = cp_c - min(cp_c, attn_f) * (1 - OVERLAP_SLOWDOWN) + sp_x
    cp_b = 2 * cp_c - min(2 * cp_c, b["attention"]) * (1 - OVERLAP_SLOWDOWN) + sp_x
    ep_f = ep_b = f["ep_comm"]
    if plan.moe_a2a_overlap and ep_f:
        # Megatron-Core's EP a2a overlap: one micro-batch's dispatch/combine runs under another's
        # forward or backward compute (their forward and backward interleaved in the steady state)
        other = gemms + attn_f + f["elementwise"]
        ep_f = ep_f - min(ep_f, b["compute"]) * (1 - OVERLAP_SLOWDOWN)
        ep_b = ep_b - min(ep_b, other) * (1 - OVERLAP_SLOWDOWN)
    return tp_f + cp_f + ep_f, tp_b + cp_b + ep_b


def expert_routing(plan: TrainingPlan) -> ExpertRouting:
    """The plan's MoE routing options for `cost.layer`; DeepEP dispatches fp8 in fp8 training."""
    return ExpertRouting(skew=plan.moe_imbalance, capacity_factor=plan.moe_capacity_factor, a2a=plan.moe_a2a,
                         dispatch_bytes=1.0 if plan.precision == "fp8" and plan.moe_a2a == "deepep" else None,
                         layout=plan.moe_routing)


def _selective_recompute_s(model: ModelSpec, plan: TrainingPlan, layer: LayerCost, t: float, attn_f: float,
                           moe: bool) -> float:
    """Backward time added by Megatron-Core's selective recomputation of `plan.recompute_module_set`:
    the attention core, the norms, the experts' activation, MLA's up-projections."""
    mods, out = plan.recompute_module_set, 0.0
    elem = layer.nongemm_s(t, moe) if mods & {"layernorm", "moe_act"} else {}
    if "core_attn" in mods:
        out += attn_f
    if "layernorm" in mods:  # only the norms that are modules of their own (cost.moe_memory.recomputed_norms)
        n = recomputed_norms(model, mods, fused_norms=plan.kernels == "fused",
                             graph_scopes=scope_set(plan.cuda_graph_scope), moe_layer=moe)
        out += elem.get("norms", 0.0) * n / 2  # the op costs a layer's two norms
    if "moe_act" in mods and moe:  # Megatron-Core checkpoints the clamp with the activation (bias_act_func)
        out += elem.get("activation", 0.0) + elem.get("activation_clamp", 0.0)
    if "mla_up_proj" in mods and model.mla is not None:
        out += layer.attention_gemm_s(t, ("q_b_proj", "kv_b_proj"))
    return out


def layer_weight_params(model: ModelSpec, plan: TrainingPlan, moe: bool) -> float:
    """Matmul weights of one layer on one GPU (attention and MLP over TP, experts over EP)."""
    etp = plan.expert_tp
    mlp = (model.router_params + model.shared_experts * model.expert_params / plan.tp
           + model.experts / plan.ep * model.expert_params / etp) if moe else model.dense_mlp_params / plan.tp
    return model.attn_params / plan.tp + mlp


#: GEMM weight tensors Transformer Engine quantizes per layer: QKV and output projection, the MLP's
#: fc1 (gate and up fused) and fc2
_CAST_KERNELS_PER_LAYER = 4


def fp8_weight_cache_bytes(plan: TrainingPlan, generation: str) -> float:
    """Bytes moved per block linear-layer weight when Transformer Engine refreshes its FP8 weight
    cache: once per step, on each module's first micro-batch (Megatron-Core
    megatron/core/pipeline_parallel/schedules.py `forward_step`: `if is_first_microbatch ...:
    model.set_is_first_microbatch()`; TE's FP8 weight caching: the step's later micro-batches reuse
    the cached FP8 weight). Zero outside Transformer Engine FP8 training. The copies are those
    `cost.memory.te_fp8_weight_bytes` holds: row- and column-wise on Hopper and Ada (TN-only FP8
    GEMMs), one on Blackwell, two MXFP8 copies with their E8M0 scales. From the 16-bit parameter it
    reads 2 B and writes every copy; with FP8 parameters (`fp8_param_gather`) the gathered parameter
    is one copy already, so it reads that and writes the others (none on Blackwell per-tensor)."""
    if te_fp8_weight_bytes(plan.precision, plan.kernels, plan.fp8_recipe, plan.fp8_param_gather, generation) is None:
        return 0.0
    mx = plan.fp8_recipe == "mxfp8"
    copy = dtype_bytes("fp8") + (MXFP8_SCALE_BYTES if mx else 0.0)
    copies = 2 if mx or generation not in NON_TN_FP8_GENERATIONS else 1
    if not plan.fp8_param_gather:
        return HALF_BYTES + copies * copy
    return 0.0 if copies == 1 else copy + (copies - 1) * copy


def fp8_weight_cache_s(model: ModelSpec, plan: TrainingPlan, acc, layers: int) -> float:
    """Seconds one rank spends refreshing the FP8 weight cache of a model chunk of `layers` layers,
    once per step on the chunk's first forward (`fp8_weight_cache_bytes`)."""
    per = fp8_weight_cache_bytes(plan, acc.generation)
    if per <= 0 or layers <= 0:
        return 0.0
    weights = layers * layer_weight_params(model, plan, model.is_moe)
    return memory_time_s(weights * per, acc, kernels=_CAST_KERNELS_PER_LAYER * layers)


@dataclass(frozen=True)
class PipelineRun:
    end_s: list[float]  # per rank: end of its last op
    busy_compute_s: list[float]
    busy_comm_s: list[float]
    last_bwd_start_s: list[float]  # per rank: start of the last micro-batch's first backward op (split: its W)
    ops: list[list[Op]]
    first_start_s: list[float] = field(default_factory=list)  # per rank: start of its first op
    #: per rank: end of the first micro-batch's forward of its last model chunk, by when every
    #: weight of the rank has been used once (what a parameter all-gather can hide behind)
    first_fwd_end_s: list[float] = field(default_factory=list)


class OpRecord(NamedTuple):
    """One placed op of `run_pipeline`: it starts at `start_s` (its inputs ready, its rank free),
    receives (`recv_s`, the receiver's share of an overlapped p2p transfer), computes (`compute_s`),
    waits on its exposed in-layer and FSDP collectives (`comm_s - recv_s`), then sends (`send_s`,
    what the sender pays). Its rank is free again at start_s + compute_s + comm_s + send_s."""

    rank: int
    kind: str
    mb: int
    chunk: int
    start_s: float
    compute_s: float
    comm_s: float
    recv_s: float
    send_s: float


@dataclass(frozen=True)
class SplitBackward:
    """What a schedule that splits the backward adds to `run_pipeline`: the W ops' compute per
    (rank, chunk); per rank the indices of overlapped F/B pairs (DualPipe) and, for those, the
    expert all-to-all seconds per (rank, chunk) that the pair's other op can hide."""

    weight_s: list[list[float]]
    pairs: tuple[frozenset[int], ...] = ()
    ep_s: list[list[float]] | None = None


def run_pipeline(ops: list[list[Op]], pp: int, v: int, m: int, fwd: list[list[tuple[float, float]]],
                 bwd: list[list[tuple[float, float]]], p2p_s: float, *, p2p_blocking: bool = False,
                 recorder: list[OpRecord] | None = None, layout: str = "loop",
                 split: SplitBackward | None = None, first_fwd: list[list[float]] | None = None) -> PipelineRun:
    """Execute each rank's op list against the data dependencies; (compute, comm) per rank/chunk.

    A send always delays the receiver by `p2p_s`. With `p2p_blocking` the sender is held for the
    transfer too (it waits on the send before its next op). Overlapped, the transfer still runs
    NCCL kernels on both GPUs beside the compute: each side pays OVERLAP_SLOWDOWN of it.
    A chunk sends only to a virtual stage on another rank (`layout`: ZB-V turns on the last rank).
    With `split`, "B" is the input gradient and "W" ops run the weight gradient (no inputs, no
    communication). `recorder`, when given, receives one OpRecord per op as it is placed (for
    timelines); None costs one check per op. `first_fwd`, per (rank, chunk): compute seconds the
    chunk's first forward of the step adds on that rank (`fp8_weight_cache_s`).
    """
    hold = (p2p_s if p2p_blocking else OVERLAP_SLOWDOWN * p2p_s) if pp > 1 else 0.0  # sender
    recv = 0.0 if p2p_blocking or pp == 1 else OVERLAP_SLOWDOWN * p2p_s  # receiver
    st = _PipelineState(pp, v, m, p2p_s, hold, recv, recorder, layout)
    if first_fwd is not None and any(x > 0 for row in first_fwd for x in row):
        st.first_extra = [list(row) for row in first_fwd]
    if split is not None:
        st.split_backward(ops, split)
    remaining = sum(len(o) for o in ops)
    order = list(range(pp))
    while remaining:
        progressed = sum(st.advance(r, ops[r], fwd[r], bwd[r]) for r in order)
        if not progressed:
            raise RuntimeError("pipeline schedule deadlocked (a schedule emitted an impossible order)")
        remaining -= progressed
        order.reverse()  # alternate sweeps so backward dependencies propagate as fast as forward ones
    return PipelineRun(st.free, st.busy_c, st.busy_m, st.last_b, ops, st.first, st.first_f)


class _PipelineState:
    """Where each rank stands: next op, free time, busy time; when each (virtual stage, micro-batch)
    forward and backward ended (-1: not yet)."""

    def __init__(self, pp: int, v: int, m: int, p2p_s: float, hold: float, recv: float,
                 recorder: list[OpRecord] | None = None, layout: str = "loop") -> None:
        vst = partition.stage_count(pp, v, layout)
        self.pp, self.p2p_s, self.hold, self.recv, self.rec = pp, p2p_s, hold, recv, recorder
        self.f_end = [[-1.0] * m for _ in range(vst)]
        self.b_end = [[-1.0] * m for _ in range(vst)]
        self.ptr, self.free, self.first = [0] * pp, [0.0] * pp, [0.0] * pp
        self.first_f = [0.0] * pp
        self.busy_c, self.busy_m, self.last_b = [0.0] * pp, [0.0] * pp, [0.0] * pp
        self.last_v, self.last_mb, self.last_g = v - 1, m - 1, vst - 1
        self.stage = partition.rank_stages(pp, v, layout)
        owner = {g: r for r, row in enumerate(self.stage) for g in row}
        mirror = layout == "mirror"  # each chunk is its own chain: the neighbours are always other ranks
        # per (rank, chunk): whether the forward input comes from / the output goes to another rank
        self.xin = [[g > 0 and (mirror or owner[g - 1] != r) for g in row] for r, row in enumerate(self.stage)]
        self.xout = [[g < vst - 1 and (mirror or owner[g + 1] != r) for g in row] for r, row in enumerate(self.stage)]
        self.weight_s: list[list[float]] = [[0.0] * v for _ in range(pp)]
        self.pairs: tuple[frozenset[int], ...] = tuple(frozenset() for _ in range(pp))
        self.ep_s: list[list[float]] | None = None
        self.marker = [-1] * pp  # split backward: index of the op whose start is `last_b`
        #: per (rank, chunk): compute its first forward adds, zeroed once that forward ran (None: none)
        self.first_extra: list[list[float]] | None = None

    def split_backward(self, ops: list[list[Op]], split: SplitBackward) -> None:
        """Run W ops, F/B pairs; `last_b` is the first W of the micro-batch whose W ends the rank."""
        self.weight_s, self.ep_s = split.weight_s, split.ep_s
        self.pairs = split.pairs or self.pairs
        for r, lst in enumerate(ops):
            ws = [i for i, o in enumerate(lst) if o[0] == "W"]
            if ws:
                j = lst[ws[-1]][1]
                self.marker[r] = next(i for i in ws if lst[i][1] == j)

    def advance(self, r: int, lst: list[Op], fr: list[tuple[float, float]], br: list[tuple[float, float]]) -> int:
        """Run rank r's ops in order until one waits on a result not yet produced; ops run."""
        p2p_s, hold, recv = self.p2p_s, self.hold, self.recv
        f_end, b_end, rec, stage, xin, xout = self.f_end, self.b_end, self.rec, self.stage[r], self.xin[r], self.xout[r]
        pairs = self.pairs[r]
        i0, t = self.ptr[r], self.free[r]
        bc, bm = self.busy_c[r], self.busy_m[r]
        i, n = i0, len(lst)
        while i < n:
            kind, j, c = lst[i]
            g = stage[c]
            if kind == "F":
                if g == 0:
                    ready = 0.0
                else:
                    e = f_end[g - 1][j]
                    if e < 0:
                        break
                    ready = e + (p2p_s if xin[c] else 0.0)  # g-1 lives on another rank
                comp, comm = fr[c]
                if self.first_extra is not None and self.first_extra[r][c]:
                    comp += self.first_extra[r][c]
                    self.first_extra[r][c] = 0.0
                if pairs and i in pairs:
                    other = self._pair_ready(r, c, lst[i + 1], br)
                    if other is None:
                        break
                    ready, comm = max(ready, other[0]), comm - other[1]
                if xin[c]:
                    comm += recv
                start = t if t > ready else ready
                if i == 0:
                    self.first[r] = start
                t = start + comp + comm
                f_end[g][j] = t
                if j == 0 and c == self.last_v:
                    self.first_f[r] = t
                if rec is not None:
                    rec.append(OpRecord(r, kind, j, c, start, comp, comm, recv if xin[c] else 0.0,
                                        hold if xout[c] else 0.0))
                if hold and xout[c]:
                    t += hold
                    comm += hold
            elif kind == "B":
                if g == self.last_g:
                    ready = f_end[g][j]
                else:
                    e = b_end[g + 1][j]
                    if e < 0:
                        break
                    ready = e + (p2p_s if xout[c] else 0.0)
                comp, comm = br[c]
                if pairs and i - 1 in pairs:
                    comm -= self._hidden(r, c, fr[lst[i - 1][2]][0])
                if xout[c]:
                    comm += recv
                start = t if t > ready else ready
                if j == self.last_mb and c == self.last_v:
                    self.last_b[r] = start
                t = start + comp + comm
                b_end[g][j] = t
                if rec is not None:
                    rec.append(OpRecord(r, kind, j, c, start, comp, comm, recv if xout[c] else 0.0,
                                        hold if xin[c] else 0.0))
                if hold and xin[c]:
                    t += hold
                    comm += hold
            else:  # W: the weight gradient of a B this rank already ran
                comp, comm = self.weight_s[r][c], 0.0
                if i == self.marker[r]:
                    self.last_b[r] = t
                if rec is not None:
                    rec.append(OpRecord(r, kind, j, c, t, comp, 0.0, 0.0, 0.0))
                t += comp
            bc += comp
            bm += comm
            i += 1
        self.busy_c[r], self.busy_m[r] = bc, bm
        self.ptr[r], self.free[r] = i, t
        return i - i0

    def _hidden(self, r: int, c: int, other_compute_s: float) -> float:
        """Exposed seconds an op of chunk c in an overlapped pair saves: its expert all-to-all
        hidden behind the other op's compute, less the OVERLAP_SLOWDOWN the hiding costs."""
        ep = self.ep_s[r][c] if self.ep_s is not None else 0.0
        return min(ep, other_compute_s) * (1 - OVERLAP_SLOWDOWN)

    def _pair_ready(self, r: int, f_chunk: int, b: Op, br: list[tuple[float, float]]) -> tuple[float, float] | None:
        """For the F of an overlapped pair: when the pair's B can start (None: not yet) and what the
        F saves by hiding its all-to-all behind the B's compute."""
        _, j, c = b
        g = self.stage[r][c]
        if g == self.last_g:
            ready = self.f_end[g][j]
            if ready < 0:
                return None
        else:
            e = self.b_end[g + 1][j]
            if e < 0:
                return None
            ready = e + (self.p2p_s if self.xout[r][c] else 0.0)
        return ready, self._hidden(r, f_chunk, br[c][0])


def chunk_layers(model: ModelSpec, plan: TrainingPlan) -> list[list[int]]:
    """Layers per (rank, chunk), `cost.partition.chunk_layers`: uneven splits keep the spare
    layers away from the first chunk (embedding) and the last (LM head), middle ranks first;
    the schedule's layout places the chunks."""
    return partition.chunk_layers(model.layers, plan.pp, plan.virtual_stages, get_schedule(plan.schedule_name).layout)


@dataclass(frozen=True)
class StepTiming:
    step_s: float
    critical_rank: int
    breakdown: dict[str, float]  # on the critical rank; compute + exposed_comm + bubble + optimizer + straggler (+ moe_host, MoE models) = step
    details: dict[str, float]
    layer: LayerTimes
    run: PipelineRun
    tails: list[RankTail]  # per rank: what follows its last backward
    chunk_layers: list[list[int]]  # per rank, per chunk
    p2p_bytes: float  # one micro-batch's activations (or their gradients) per pipeline send, per GPU
    pairs_per_mb: float  # causal attention (query, key) pairs of one micro-batch the layers were costed at


class PlanCosts(NamedTuple):
    """One micro-batch on one GPU type: the average layer, the embedding, LM head and loss
    (forward, backward seconds) and the FSDP exposure (`_fsdp_exposed_s`). A mixed cluster has
    one per GPU group (training/hetero.py)."""

    layer: LayerCost
    lt: LayerTimes
    emb: float
    emb_b: float
    head: float
    ce_f: float
    ce_b: float
    fsdp: tuple[float, float, float, float]
    head_accum: float = 0.0  # the LM head's weight-gradient accumulation epilogue (`lm_head_wgrad_accum_s`)


def plan_costs(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan, pairs_per_mb: float, *,
               cp_comm: tuple[float, float] | None = None) -> PlanCosts:
    """The per-micro-batch costs of `plan` on `cluster`'s GPU (costed once, multiplied by layers);
    `cp_comm`: see layer_times."""
    layer, edge = _costers(model, cluster, plan)
    dense = (layer_times(model, cluster, plan, layer, pairs_per_mb, moe=False, cp_comm=cp_comm)
             if not model.is_moe or model.dense_layers else None)
    moe = layer_times(model, cluster, plan, layer, pairs_per_mb, moe=True, cp_comm=cp_comm) if model.is_moe else None
    lt = _mix(model, dense, moe)
    t = plan.micro_batch * plan.seq_len / plan.cp
    ce_f, ce_b = edge.cross_entropy_s(t)
    return PlanCosts(layer, lt, edge.embedding_s(t), edge.embedding_bwd_s(t), edge.lm_head_gemm_s(t), ce_f, ce_b,
                     _fsdp_exposed_s(model, cluster, plan, lt), lm_head_wgrad_accum_s(model, cluster, plan))


def lm_head_wgrad_accum_s(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan) -> float:
    """The LM head's weight gradient accumulates into the main-gradient buffer like every layer's:
    Megatron-Core's output layer is a ColumnParallelLinear whose backward, with
    gradient_accumulation_fusion, runs `wgrad_gemm_accum_fp32` into `main_grad` (megatron/core/
    tensor_parallel/layers.py, LinearWithGradAccumulationAndAsyncCommunication), so the epilogue
    reads and writes its vocab/TP x hidden fp32 gradient once per micro-batch. With a 256,000-token
    vocabulary that shard is four to five transformer layers' worth of weights (Nemotron-4 15B).
    None under FSDP2 (fresh gradient tensors, as for the layers)."""
    if _fsdp2_sharded(plan):
        return 0.0
    return wgrad_accum_s(cdiv(model.vocab, plan.tp) * model.hidden, plan, cluster.accelerator)


def simulate_step(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan, *,
                  pairs_per_mb: float | None = None, recorder: list[OpRecord] | None = None,
                  cp_comm: tuple[float, float] | None = None) -> StepTiming:
    """One optimizer step: layer costs, the pipeline schedule, then DP reduction and optimizer.
    `recorder` collects every pipeline op as placed (run_pipeline); `cp_comm`: see layer_times."""
    s = plan.seq_len
    if pairs_per_mb is None:
        pairs_per_mb = plan.micro_batch * s * (s + 1) / 2
    costs = plan_costs(model, cluster, plan, pairs_per_mb, cp_comm=cp_comm)
    return run_step(model, plan, [cluster] * plan.pp, [costs] * plan.pp, chunk_layers(model, plan), pairs_per_mb,
                    job_gpus=cluster.gpus, recorder=recorder)


def run_step(model: ModelSpec, plan: TrainingPlan, clusters: list[ClusterSpec], costs: list[PlanCosts],
             counts: list[list[int]], pairs_per_mb: float, *, job_gpus: int, vcounts: tuple[int, ...] | None = None,
             recorder: list[OpRecord] | None = None) -> StepTiming:
    """The step from per-rank inputs: the cluster each pipeline rank runs on, its costs and its
    layers per chunk (`vcounts`: the same per virtual stage when not the default split). A pipeline
    send between ranks on different clusters pays the slower link."""
    pp, v, m = plan.pp, plan.virtual_stages, plan.micro_batches
    sched = get_schedule(plan.schedule_name)
    fwd, bwd = _chunk_times(plan, costs, counts, sched.layout)
    # pipeline p2p: activations of one micro-batch (scattered over TP ranks, each on its own link)
    p2p = size = 0.0
    if pp > 1:
        size = plan.micro_batch * plan.seq_len / plan.cp * model.hidden * costs[0].layer.ab / plan.tp
        p2p = max(collective_time_s("p2p", size, Group.strided(2, plan.tp * plan.cp * plan.dp, c), c)
                  for c in {id(c): c for c in clusters}.values())
    split = _split_backward(plan, costs, counts, bwd, sched.layout) if sched.splits_backward else None
    times = planned_op_times(model, plan.seq_len, plan.recompute) if sched.timed else (1.0, 1.0, 1.0)
    cache = [[fp8_weight_cache_s(model, plan, clusters[r].accelerator, counts[r][c]) for c in range(v)] for r in range(pp)]
    run = run_pipeline(rank_ops(plan.schedule_name, pp, m, v, times), pp, v, m, fwd, bwd, p2p,
                       p2p_blocking=not plan.overlap_p2p_comm, recorder=recorder, layout=sched.layout, split=split,
                       first_fwd=cache)
    step, rank, bd, det, dp_total, tails = _after_pipeline(model, clusters, plan, run, vcounts, sched.staggered)
    crit, sigma = costs[rank], clusters[rank].accelerator.efficiency.rank_speed_sigma
    bd["straggler"] = straggler_s(bd["compute"], sigma, job_gpus)
    step += bd["straggler"]
    lt, (fsdp_f, fsdp_b, edge_f, edge_b) = crit.lt, crit.fsdp
    if model.is_moe:  # split out of the exposed time: the critical rank's layers x micro-batches
        edges = _synced_chunks(plan, counts[rank], rank, sched.layout)
        bd["moe_host"] = m * (sum(counts[rank]) * (lt.fwd_host + lt.bwd_host) + edges * lt.bwd_host_edge)
        bd["exposed_comm"] -= bd["moe_host"]
        det.update({"layer_moe_host_fwd_s": lt.fwd_host, "layer_moe_host_bwd_s": lt.bwd_host})
    det.update({"p2p_per_op": p2p, "fp8_weight_cache_s": sum(cache[rank]), "fsdp_layer_exposed_fwd": fsdp_f,
                "fsdp_layer_exposed_bwd": fsdp_b, "fsdp_first_gather_exposed_s": edge_f,
                "fsdp_last_reduce_exposed_s": edge_b, "dp_comm_total": dp_total,
                **{f"layer_fwd_{k}": v_ for k, v_ in lt.parts.items()},
                "layer_fwd_s": lt.fwd_compute + lt.fwd_comm, "layer_bwd_s": lt.bwd_compute + lt.bwd_comm,
                "embedding_fwd_s": crit.emb, "embedding_bwd_s": crit.emb_b, "lm_head_fwd_s": crit.head,
                "lm_head_wgrad_accum_s": crit.head_accum,
                "cross_entropy_fwd_s": crit.ce_f, "cross_entropy_bwd_s": crit.ce_b})
    return StepTiming(step, rank, bd, det, lt, run, tails, counts, size, pairs_per_mb)


def _chunk_times(plan: TrainingPlan, costs: list[PlanCosts], counts: list[list[int]],
                 layout: str = "loop") -> tuple[list, list]:
    """(compute, comm) of one micro-batch's forward and backward per (rank, chunk): its layers
    (with their exposed FSDP collectives), plus the embedding on the first virtual stage and the
    LM head and loss on the last (`layout` places the chunks: `cost.partition.rank_stages`)."""
    pp, v = plan.pp, plan.virtual_stages
    stages, last = partition.rank_stages(pp, v, layout), partition.stage_count(pp, v, layout) - 1
    syncs = _p2p_syncs(plan)
    fwd, bwd = [], []
    for r in range(pp):
        fr, br = [], []
        k = costs[r]
        lt, (fsdp_f, fsdp_b, edge_f, edge_b) = k.lt, k.fsdp
        for c in range(v):
            n = counts[r][c]
            g = stages[r][c]
            fc, fm = n * lt.fwd_compute, n * (lt.fwd_comm + lt.fwd_host)
            bc, bm = n * lt.bwd_compute, n * (lt.bwd_comm + lt.bwd_host)
            if _pays_backward_edge(syncs, n, g, last):
                bm += lt.bwd_host_edge
            if g == 0:
                fc += k.emb
                bc += k.emb_b
            if g == last:
                fc += k.head + k.ce_f
                bc += 2 * k.head + k.head_accum + k.ce_b
            if fsdp_f or fsdp_b:
                # a chunk's first all-gather has no earlier layer to hide behind, its last
                # reduce-scatter (the chunk's first layer, reduced after its backward) no later one
                fm = fm + n * fsdp_f + (edge_f if n else 0.0)
                bm = bm + n * fsdp_b + (edge_b if n else 0.0)
            fr.append((fc, fm))
            br.append((bc, bm))
        fwd.append(fr)
        bwd.append(br)
    return fwd, bwd


def _p2p_syncs(plan: TrainingPlan) -> bool:
    """Whether each pipeline exchange ends with the device synchronized: blocking sends
    (`overlap_p2p_comm` off: Megatron-Core's batch_isend_irecv, wait, torch.cuda.synchronize)
    between pipeline stages."""
    return plan.pp > 1 and not plan.overlap_p2p_comm


def _synced_chunks(plan: TrainingPlan, counts: list[int], rank: int, layout: str) -> int:
    """Chunks of `rank` whose backward starts after a device-synchronizing pipeline exchange (the
    ones `_chunk_times` charges `LayerTimes.bwd_host_edge`): every chunk with layers but the
    last virtual stage's, whose backward follows its own forward."""
    if not _p2p_syncs(plan):
        return 0
    stages = partition.rank_stages(plan.pp, plan.virtual_stages, layout)[rank]
    last = partition.stage_count(plan.pp, plan.virtual_stages, layout) - 1
    return sum(1 for n, g in zip(counts, stages) if _pays_backward_edge(True, n, g, last))


def _pays_backward_edge(syncs: bool, layers: int, stage: int, last_stage: int) -> bool:
    """Whether a chunk's backward starts on an emptied queue: exchanges synchronize, the chunk
    has layers, and it is not the last virtual stage (whose backward follows its own forward
    with no exchange in between)."""
    return bool(syncs and layers and stage != last_stage)


def _split_backward(plan: TrainingPlan, costs: list[PlanCosts], counts: list[list[int]],
                    bwd: list[list[tuple[float, float]]], layout: str) -> SplitBackward:
    """Moves the weight-gradient work out of each (rank, chunk)'s backward into its W op: the
    layers' weight-gradient GEMMs and their accumulation (`LayerTimes.bwd_weight_compute`), the
    embedding's backward (a weight gradient only) and one of the LM head's two backward GEMMs
    (each rank's own costs). `bwd` is changed in place to the input-gradient part. The expert
    all-to-all per chunk (what DualPipe's overlapped pairs hide) comes along."""
    pp, v = plan.pp, plan.virtual_stages
    stages, last = partition.rank_stages(pp, v, layout), partition.stage_count(pp, v, layout) - 1
    weight, ep = [], []
    for r in range(pp):
        wr = []
        lt, k = costs[r].lt, costs[r]
        for c in range(v):
            g = stages[r][c]
            w = counts[r][c] * lt.bwd_weight_compute + (k.emb_b if g == 0 else 0.0) + (k.head + k.head_accum if g == last else 0.0)
            bwd[r][c] = (bwd[r][c][0] - w, bwd[r][c][1])
            wr.append(w)
        weight.append(wr)
        ep.append([counts[r][c] * lt.parts.get("ep_comm", 0.0) for c in range(v)])
    return SplitBackward(weight, rank_pairs(plan.schedule_name, pp, plan.micro_batches, v), ep)


def _fsdp_exposed_s(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan,
                    lt: LayerTimes) -> tuple[float, float, float, float]:
    """ZeRO-3 / FSDP, per layer: all-gather the weights in forward and backward, reduce-scatter
    the gradients. Returns (forward, backward) seconds left exposed per layer, and per model
    chunk and micro-batch the edges no prefetch can hide (PyTorch FSDP prefetches one layer
    ahead: forward_prefetch / BACKWARD_PRE, FSDP2's implicit prefetch): the first layer's
    all-gather waits for nothing to overlap, and the last reduce-scatter of the backward (the
    first layer's gradients) has no later backward compute under it."""
    dpg = plan.fsdp_group  # hybrid sharding: the gathers and reduce-scatters stay inside a shard group
    if plan.zero < 3 or dpg <= 1:
        return 0.0, 0.0, 0.0, 0.0
    dp_group = Group.strided(dpg, plan.tp, cluster)
    layer_params = (weight_params_per_gpu(model, tp=plan.tp, pp=model.layers, ep=plan.ep, stage=1, etp=plan.expert_tp)
                    if model.layers > 2 else 0.0)
    ag = collective_time_s("all_gather", layer_params * PARAM_GATHER_BYTES, dp_group, cluster)
    rs = collective_time_s("reduce_scatter", layer_params * plan.grad_bytes, dp_group, cluster)
    if not plan.overlap_param_gather:
        return ag, ag + rs, 0.0, 0.0
    hid_f = min(ag, lt.fwd_compute) * (1 - OVERLAP_SLOWDOWN)
    hid_b = min(ag + rs, lt.bwd_compute) * (1 - OVERLAP_SLOWDOWN)
    # the hidden share of the first gather / of the last reduce-scatter is exposed at the edges
    return ag - hid_f, ag + rs - hid_b, hid_f, hid_b * rs / (ag + rs) if ag + rs > 0 else 0.0


@dataclass(frozen=True)
class RankTail:
    """What one pipeline rank does after its last backward, in seconds: the DP gradient reduction
    (`grad_kind`, its whole time and the part left exposed), the optimizer, the parameter
    all-gather (whole and exposed). `end_s` = pipeline end + the exposed parts + the optimizer."""

    params: float  # weights on this GPU (the gradient and parameter collectives move these)
    grad_kind: str
    grad_s: float
    grad_exposed_s: float
    grad_hidden_s: float  # of grad_s: in flight before the pipeline ended (under the last backward)
    gather_s: float
    gather_exposed_s: float
    optimizer_s: float
    end_s: float


def _rank_tail(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan, run: PipelineRun, r: int,
               vcounts: tuple[int, ...] | None = None) -> RankTail:
    """Rank r's DP gradient reduction, optimizer and parameter all-gather after its last backward."""
    dpg = plan.dp * plan.cp
    params = weight_params_per_gpu(model, tp=plan.tp, pp=plan.pp, ep=plan.ep, stage=r, virtual_stages=plan.virtual_stages,
                                   counts=vcounts, etp=plan.expert_tp, layout=get_schedule(plan.schedule_name).layout)
    end = run.end_s[r]
    grad_c = ag_c = 0.0
    kind = "all_reduce" if plan.zero == 0 else "reduce_scatter"
    shards = _replica_groups(model, cluster, plan, r, params, vcounts)
    hybrid = plan.zero >= 3 and plan.fsdp_replicas > 1  # ZeRO-3 sharded within groups, copied across them
    if plan.zero < 3:
        for n, group in shards:
            grad_c += collective_time_s(kind, n * plan.grad_bytes, group, cluster)
            if plan.zero >= 1:
                ag_c += collective_time_s("all_gather", n * PARAM_GATHER_BYTES, group, cluster)
    elif hybrid:
        # hybrid sharding: after each shard group's reduce-scatter, the replicas of a shard all-reduce it
        # (PyTorch FSDP HYBRID_SHARD: reduce-scatter intra-group, then all-reduce inter-group; MaxText's
        # dcn_data_parallelism), bucketed behind the backward like a DDP gradient
        kind = "all_reduce"
        replicas = Group.strided(plan.fsdp_replicas, plan.tp * plan.fsdp_group, cluster)
        grad_c = collective_time_s(kind, params / plan.fsdp_group * plan.grad_bytes, replicas, cluster)
    bucket = max(DDP_BUCKET_PARAMS, 1e6 * dpg)
    last_frac = min(1.0, bucket / max(params, 1.0))
    if hybrid:
        last_frac = min(1.0, plan.pp / model.layers)  # one FSDP unit (a layer): the first layer's all-reduce
    if plan.overlap_grad_reduce and grad_c > 0:
        finish = max(run.last_bwd_start_s[r] + grad_c, end + grad_c * last_frac)
        hidden = grad_c - (finish - end)
        grad_exposed = finish - end + OVERLAP_SLOWDOWN * hidden
    else:
        grad_exposed, hidden = grad_c, 0.0
    if plan.overlap_param_gather:
        # Megatron-Core gathers each bucket's parameters ahead of its first use in the next step's
        # forward and dispatches one bucket ahead (`finish_param_sync` waits for a bucket, then
        # starts the next: distributed/param_and_grad_buffer.py), so the gathers hide only behind
        # the rank's work up to the first micro-batch's forward of its last chunk; beyond that
        # the forward waits for them
        ag_exposed = ag_c * last_frac + OVERLAP_SLOWDOWN * ag_c * (1 - last_frac)
        if run.first_fwd_end_s:
            ag_exposed = max(ag_exposed, ag_c - (run.first_fwd_end_s[r] - run.first_start_s[r]))
    else:
        ag_exposed = ag_c
    local = sum(n / (g.n if plan.zero >= 1 else 1) for n, g in shards)
    if hybrid:
        local = params / plan.fsdp_group  # each GPU steps its shard (the replicas step the same one)
    opt_bytes, opt_kernels = adam_bytes_per_param(plan.kernels, plan.param_state)
    opt = memory_time_s(local * opt_bytes, cluster.accelerator, kernels=opt_kernels)
    return RankTail(params, kind, grad_c, grad_exposed, hidden, ag_c, ag_exposed, opt, end + grad_exposed + ag_exposed + opt)


def _replica_groups(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan, r: int, params: float,
                    vcounts: tuple[int, ...] | None = None) -> list[tuple[float, Group]]:
    """(parameters, the group holding copies of them) for rank r: the dense part over the dp*cp
    replicas (stride tp); the routed experts over Megatron-Core's expert-data-parallel group, the
    tp*cp*dp / (ep*etp) GPUs of the stage with the same expert shard (stride ep*etp)."""
    experts = routed_expert_params_per_gpu(model, tp=plan.tp, pp=plan.pp, ep=plan.ep, stage=r,
                                           virtual_stages=plan.virtual_stages, counts=vcounts, etp=plan.expert_tp,
                                           layout=get_schedule(plan.schedule_name).layout)
    dpg, expert_ranks = plan.dp * plan.cp, plan.ep * plan.expert_tp
    out = [(params - experts, Group.strided(dpg, plan.tp, cluster))]
    if experts:
        out.append((experts, Group.strided(plan.tp * dpg // expert_ranks, expert_ranks, cluster)))
    return out


def _after_pipeline(model: ModelSpec, clusters: list[ClusterSpec], plan: TrainingPlan, run: PipelineRun,
                    vcounts: tuple[int, ...] | None, staggered: bool = False
                    ) -> tuple[float, int, dict, dict, float, list[RankTail]]:
    """Per rank (on its own cluster): DP gradient reduction, optimizer, parameter all-gather after
    its last backward. Returns the slowest rank's (step s, rank, breakdown, details), the largest
    DP traffic time and every rank's tail. `staggered` (ZB-H2's optimizer post-validation): a
    rank starts its next step as soon as its own ends, so the step is the longest span from a
    rank's first op to its own end, and the fill before a rank's first op belongs to the previous
    step."""
    tails = [_rank_tail(model, clusters[r], plan, run, r, vcounts) for r in range(plan.pp)]
    off = run.first_start_s if staggered else [0.0] * plan.pp
    rank = max(range(plan.pp), key=lambda r: (tails[r].end_s - off[r], -r))  # the first of equals, as before
    tl, end = tails[rank], run.end_s[rank]
    busy = run.busy_compute_s[rank] + run.busy_comm_s[rank]
    bd = {"compute": run.busy_compute_s[rank],
          "exposed_comm": run.busy_comm_s[rank] + tl.grad_exposed_s + tl.gather_exposed_s,
          "bubble": end - busy, "optimizer": tl.optimizer_s}
    det = {"inlayer_comm_exposed": run.busy_comm_s[rank], "dp_grad_comm": tl.grad_s,
           "dp_grad_comm_exposed": tl.grad_exposed_s, "param_gather_comm": tl.gather_s,
           "param_gather_exposed": tl.gather_exposed_s, "pipeline_s": end}
    dp_total = max(t.grad_s + t.gather_s for t in tails)
    if not staggered:
        return tl.end_s, rank, bd, det, dp_total, tails
    bd["bubble"] = end - off[rank] - busy
    det["pipeline_start_s"] = off[rank]
    return tl.end_s - off[rank], rank, bd, det, dp_total, tails


def _mix(model: ModelSpec, dense: LayerTimes | None, moe: LayerTimes | None) -> LayerTimes:
    """Average layer of an MoE model with leading dense layers (per-layer costs are linear)."""
    if moe is None:
        return dense
    if dense is None:
        return moe
    a, b = model.dense_layers / model.layers, model.moe_layer_share
    parts = {k: a * dense.parts.get(k, 0.0) + b * moe.parts.get(k, 0.0) for k in moe.parts}
    return LayerTimes(a * dense.fwd_compute + b * moe.fwd_compute, a * dense.fwd_comm + b * moe.fwd_comm,
                      a * dense.bwd_compute + b * moe.bwd_compute, a * dense.bwd_comm + b * moe.bwd_comm,
                      a * dense.bwd_weight_compute + b * moe.bwd_weight_compute, parts,
                      b * moe.fwd_host, b * moe.bwd_host, moe.bwd_host_edge)
