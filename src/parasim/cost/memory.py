"""Memory per GPU: weights, gradients, optimizer state, activations, KV cache, workspace.

Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models"), term by term, so that for a GPT layer (MHA, GELU MLP of 4h, dropout) the
result is exactly their sbh(34 + 5as/h) bytes (16-bit activations), with TP/SP/recompute variants:

    no parallelism        sbh (34 + 5 a s / h)
    tensor parallel t     sbh (10 + 24/t + 5 a s / (h t))
    TP + sequence par.    sbh/t (34 + 5 a s / h)
    selective recompute   drops the 5as/h term (FlashAttention stores no s x s matrix either)
    full recompute        2 sbh (only the layer input), /t with SP

The same terms generalise to GQA (K/V are 2*kv_heads*head_dim wide), SwiGLU (gate, up and their
product are stored: 6*ffn/h instead of GELU's 4*ffn/h) and MoE (each token's top-k expert
activations).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from parasim.cost.dtypes import dtype_bytes
from parasim.cost.moe_memory import recompute_freed_units
from parasim.cost.param_state import HALF_BYTES, MEGATRON_LAYOUT, bytes_per_param, gathered_bytes
from parasim.cost.quant_bytes import QuantScope, quant_scope
from parasim.cost.sac import dots_saved_bytes_per_token, saved_bytes_per_token
from parasim.mathx import cdiv
from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.model import ModelSpec
from parasim.units import gib

GIB = 1024**3
#: none | Megatron's selective (attention core) | full (layer input only) | torchtitan's op-level
#: selective checkpointing (`cost.sac`) | dots: every weight matmul's output and the attention output
#: saved, the elementwise ops recomputed (JAX's checkpoint_dots_with_no_batch_dims: MaxText's
#: remat_policy minimal / minimal_flash; `cost.sac.dots_saved_bytes_per_token`)
RECOMPUTE = ("none", "selective", "full", "selective_op", "dots")


#: Bytes per element of the GEMM inputs Transformer Engine keeps for the weight-gradient GEMM in
#: FP8 training: its Linear / LayerNormLinear quantize the input before the forward GEMM and save
#: that FP8 tensor (only its column-wise copy when the backward needs no all-gather), not the 16-bit
#: one (TransformerEngine v2.17 transformer_engine/pytorch/module/linear.py `_linear_forward`:
#: `inputmat.update_usage(rowwise_usage=False, columnwise_usage=True)`, `saved_inputmat = inputmat`;
#: layernorm_linear.py saves the quantized `ln_out`). FP8 E4M3/E5M2 is one byte; MXFP8's E8M0 scale
#: per 32 elements (1/32 B) is left out.
TE_FP8_SAVED_INPUT_BYTES = 1.0


#: Transformer Engine's FP8 recipes (Megatron-Core --fp8-recipe): per-tensor scaling (delayed, the
#: default, or tensorwise current scaling) or MXFP8 (one E8M0 scale per 32 elements, Blackwell)
FP8_RECIPES = ("delayed", "tensorwise", "mxfp8")
#: GPU generations whose FP8 GEMMs take every operand layout, so Transformer Engine keeps no
#: transposed copy of a per-tensor FP8 weight for the backward's GEMMs (TransformerEngine v2.17
#: transformer_engine/pytorch/utils.py `is_non_tn_fp8_gemm_supported`: compute capability 10.x and
#: 13+, the datacenter Blackwell parts; Hopper and Ada take only the TN layout)
NON_TN_FP8_GENERATIONS = frozenset({"blackwell"})
#: MXFP8's E8M0 scale, bytes per element: one byte per 32-element block (OCP Microscaling Formats
#: (MX) Specification v1.0, MXFP8: block size 32, scale E8M0)
MXFP8_SCALE_BYTES = 1.0 / 32


def te_fp8_weight_bytes(precision: str, kernels: str, recipe: str, param_gather: bool,
                        generation: str) -> float | None:
    """Bytes Transformer Engine holds per block linear-layer parameter in FP8 training, or None
    outside it (the 16-bit parameter alone). Its FP8 GEMMs read an FP8 weight: row-wise for the
    forward and column-wise (the transpose) for the input-gradient GEMM, one copy serving both on
    GPUs with non-TN FP8 GEMMs, two on Hopper and Ada; MXFP8 scales along a different axis for each,
    so two copies everywhere, each with its scales. Megatron-Core keeps that FP8 weight across the
    micro-batches of a step beside the 16-bit parameter (`is_first_microbatch` caching; TE issue
    #1429: FP8 "is faster, but it consumes more memory"); with `--fp8-param-gather` (Megatron-Bridge's
    FP8 recipes, `mixed_precision.py`: `fp8_param_gather = True`) the parameter itself is the FP8
    tensor and no 16-bit copy exists."""
    if precision != "fp8" or kernels != "fused":
        return None
    one = dtype_bytes("fp8")  # an FP8 weight copy's element
    if recipe == "mxfp8":
        fp8 = 2 * (one + MXFP8_SCALE_BYTES)
    else:
        fp8 = one * (1 if generation in NON_TN_FP8_GENERATIONS else 2)
    return fp8 if param_gather else HALF_BYTES + fp8


def saved_linear_input_bytes(precision: str, kernels: str) -> float | None:
    """Bytes per element of the linear layers' saved inputs when they differ from the activation
    dtype, else None. Only Transformer Engine (`kernels` fused: Megatron-Core, NeMo, Megatron-Bridge)
    saves the FP8 cast: torchao's Float8Linear (torchtitan) saves the high-precision input and
    casts again in the backward (torchao/float8/float8_linear.py `matmul_with_hp_or_float8_args`:
    `ctx.save_for_backward(input_hp, weight_hp_t)`)."""
    if precision == "fp8" and kernels == "fused":
        return TE_FP8_SAVED_INPUT_BYTES
    return None


def activation_bytes_per_layer(model: ModelSpec, *, seq: int, micro_batch: int, tp: int = 1, sp: bool = False,
                               cp: int = 1, recompute: str = "none", flash: bool = True,
                               act_bytes: float = 2.0, modules: frozenset[str] | None = None,
                               moe_buffers: float = 0.0, linear_input_bytes: float | None = None,
                               fused_norms: bool = True, graph_scopes: frozenset[str] = frozenset()) -> float:
    """Bytes one layer keeps for backward for one micro-batch on one GPU. With selective
    recomputation, `modules` are the recomputed ones (`cost.moe_memory.RECOMPUTE_MODULES`; None =
    core_attn, Megatron's default); `fused_norms` (Transformer Engine's norm-into-linear fusion) and
    `graph_scopes` (CUDA-graphed scopes) decide which norms `layernorm` drops
    (`cost.moe_memory.recomputed_norms`); `moe_buffers`: an MoE layer's permuted tokens and router
    probabilities, bytes per token (`cost.moe_memory.moe_buffer_bytes_per_token`), added as given.
    `linear_input_bytes` (`saved_linear_input_bytes`): the linear layers keep their own quantized
    copy of their inputs: the norm outputs feeding QKV and the MLP, and the MLP's activation output,
    are kept at that width instead of the activation dtype's, and the attention output, which the
    attention's backward keeps at 16 bits, is kept a second time as the projection's input."""
    s = seq / cp
    b, h = micro_batch, model.hidden
    sbh = s * b * h
    scale = act_bytes / 2.0  # the formulas count 16-bit activations (2 bytes) and 1-byte masks
    if recompute == "full":
        return 2 * sbh * scale / (tp if sp else 1)
    if recompute == "selective_op":
        return s * b * saved_bytes_per_token(model, tp=tp, sp=sp, act_bytes=act_bytes)
    if recompute == "dots":
        return s * b * dots_saved_bytes_per_token(model, tp=tp, sp=sp, act_bytes=act_bytes)
    lin = 1.0 if linear_input_bytes is None else linear_input_bytes / act_bytes  # a linear input, in activations
    drop = 1 if model.dropout else 0
    q = model.q_dim / h
    kv = 2 * model.kv_heads * model.head_dim / h
    # replicated over TP unless SP: two norm inputs (4), QKV and MLP inputs (2 + 2), dropout masks.
    # An MoE layer's MLP input is its own norm's 16-bit output (the router and the dispatcher read it;
    # the experts keep their quantized copy among the MoE buffers), not a linear layer's saved copy
    moe_share = model.moe_layer_share
    mlp_in = 2 * (moe_share + (1 - moe_share) * lin)
    replicated = 4 + 2 * lin + mlp_in + 2 * drop
    if model.parallel_attn:
        replicated -= mlp_in + drop  # one norm feeds both branches
    # split over TP: Q, K, V, attention output (input of the output projection), attention dropout
    attn_out = model.heads * model.v_head_dim / h
    attn = 2 * q + 2 * kv + 2 * attn_out
    if linear_input_bytes is not None:
        attn += 2 * lin * attn_out  # the projection's own quantized copy of its input
    if model.is_moe:
        width = model.moe_ffn_hidden * (model.experts_per_token + model.shared_experts)
    else:
        width = model.ffn_hidden
    # the activation's input (gate and up: 4, GELU's one input: 2) and its output, the down projection's input
    mlp = ((4 if model.gated_mlp else 2) + 2 * lin) * width / h
    split = attn + mlp
    if recompute == "selective" and modules is not None:
        freed_rep, freed_split = recompute_freed_units(model, modules, linear_input=lin, fused_norms=fused_norms,
                                                       graph_scopes=graph_scopes)
        replicated -= freed_rep
        split -= freed_split
    score = 0.0
    if not flash and (recompute == "none" or (modules is not None and "core_attn" not in modules)):
        # softmax output (2 bytes), plus dropout mask (1) and dropout output (2) when dropout is on
        score = (5 if drop else 2) * model.heads * s / h
    per_token = (replicated + split + score) / tp if sp else replicated + (split + score) / tp
    return sbh * per_token * scale + s * b * moe_buffers


def weight_grad_input_bytes_per_layer(model: ModelSpec, *, seq: int, micro_batch: int, tp: int = 1,
                                      sp: bool = False, cp: int = 1, act_bytes: float = 2.0,
                                      linear_input_bytes: float | None = None) -> float:
    """Bytes one layer keeps from its input-gradient backward (B) until its weight-gradient
    backward (W) runs, per micro-batch and GPU: each linear layer's input X and output gradient
    dY (dW = X^T dY). For a GPT layer (ffn = 4h) that is 16 values per token and hidden unit,
    the zero-bubble paper's M_W = 32sbh bytes (Qi et al. 2024, Table 1). Values as wide as the
    hidden size are split over TP only with sequence parallelism; an MoE layer's expert inputs
    and output gradients count once per routed and shared expert a token visits. The inputs X are
    the linear layers' own saved copies, `linear_input_bytes` wide when given (`activation_bytes_per_layer`)."""
    h = model.hidden
    lin = 1.0 if linear_input_bytes is None else linear_input_bytes / act_bytes
    fanout = model.experts_per_token + model.shared_experts if model.is_moe else 1
    width = model.moe_ffn_hidden * fanout if model.is_moe else model.ffn_hidden
    qkv = model.q_dim + 2 * model.kv_heads * model.head_dim
    attn_out = model.heads * model.v_head_dim
    mlp_in = 1 if model.parallel_attn else 2  # norm outputs feeding the QKV and the MLP
    # hidden-wide: norm outputs (X of QKV, MLP up), output-projection dY, MLP-down dY (per expert visit)
    wide = lin * h * (mlp_in - 1 + fanout) + h + h * fanout
    split = lin * (attn_out + width) + qkv + (model.mlp_matrices - 1) * width  # X of proj, MLP down; dY of QKV, MLP up
    per_token = (wide + split) / tp if sp else wide + split / tp
    return seq / cp * micro_batch * per_token * act_bytes


def embedding_activation_bytes(model: ModelSpec, *, seq: int, micro_batch: int, tp: int = 1, sp: bool = False,
                               cp: int = 1) -> float:
    """First stage: embedding output (+ dropout mask) kept for backward."""
    sbh = seq / cp * micro_batch * model.hidden
    return sbh * (2 + (1 if model.dropout else 0)) / (tp if sp else 1)


#: how the loss keeps the vocabulary-wide logits for its backward (TrainingPlan.cross_entropy):
#: fp32 = Megatron-Core's vocab-parallel cross entropy, unfused or its native fusion, which saves
#: the fp32 softmax it computes from the upcast logits (megatron/core/tensor_parallel/cross_entropy.py
#: and megatron/core/fusions/fused_cross_entropy.py: `save_for_backward(exp_logits, ...)`); te =
#: Transformer Engine's Triton cross entropy (Megatron-Core cross_entropy_fusion_impl 'te'), which
#: writes the gradient into the 16-bit logits in place and saves only them (TransformerEngine v2.9
#: transformer_engine/pytorch/cross_entropy.py: `ctx.save_for_backward(_input.detach())` after
#: triton/cross_entropy.py `cross_entropy_forward` fills `_input` with the gradient)
CROSS_ENTROPY_IMPLS = ("fp32", "te")
#: bytes per kept vocabulary entry of the logits: fp32 softmax, or the 16-bit logits (te)
_LOGIT_BYTES = {"fp32": 4.0, "te": 2.0}


def logits_activation_bytes(model: ModelSpec, *, seq: int, micro_batch: int, tp: int = 1, cp: int = 1,
                            cross_entropy: str = "fp32") -> float:
    """Last stage: final norm input and the logits the cross-entropy backward reads (vocab-parallel),
    fp32 or 16-bit by the loss kernel (`CROSS_ENTROPY_IMPLS`)."""
    sb = seq / cp * micro_batch
    return sb * (2 * model.hidden + _LOGIT_BYTES[cross_entropy] * model.vocab / tp)


@dataclass(frozen=True)
class StaticMemory:
    """Per-GPU model state in bytes."""

    weights: float
    gradients: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer


def training_state_bytes(params: float, *, dp: int, zero: int, weight_bytes: float = 2.0,
                         grad_bytes: float = 4.0, optimizer_bytes: float = 12.0,
                         param_state: str = "megatron") -> StaticMemory:
    """Mixed-precision Adam state of `params` parameters held by one GPU before ZeRO sharding.

    Megatron defaults: 16-bit weights, fp32 main gradients, fp32 master weights + two Adam moments
    (12 bytes). ZeRO-1 (Megatron's distributed optimizer) shards the optimizer over DP; ZeRO-2
    also the gradients; ZeRO-3 / FSDP also the weights. This reproduces Megatron's
    theoretical-memory rule of 18 bytes/param, or 6 + 12/dp with the distributed optimizer.
    Another `param_state` (cost.param_state) sets the three sizes instead.
    """
    dp = max(dp, 1)
    if param_state != "megatron":
        weight_bytes, grad_bytes, optimizer_bytes = bytes_per_param(param_state, grad_bytes)
    w = weight_bytes * params / (dp if zero >= 3 else 1)
    g = grad_bytes * params / (dp if zero >= 2 else 1)
    o = optimizer_bytes * params / (dp if zero >= 1 else 1)
    return StaticMemory(weights=w, gradients=g, optimizer=o)


def routed_expert_params_per_gpu(model: ModelSpec, *, tp: int, pp: int, ep: int, stage: int,
                                 virtual_stages: int = 1, counts: tuple[int, ...] | None = None,
                                 etp: int | None = None, layout: str = "loop") -> float:
    """Routed-expert parameters one GPU of pipeline `stage` holds: its MoE layers' experts / ep,
    each split `expert_tp` ways (the layout of `weight_params_per_gpu`, `counts` as there)."""
    if not model.is_moe:
        return 0.0
    moe_layers = sum(1 for li in _rank_layers(model, pp, virtual_stages, stage, layout, counts)
                     if li >= model.dense_layers)
    return moe_layers * model.experts / ep * model.expert_params / expert_tp(tp, ep, etp)


def stage_state_bytes(model: ModelSpec, *, tp: int, pp: int, ep: int, dp_cp: int, zero: int, stage: int,
                      virtual_stages: int = 1, grad_bytes: float = 4.0,
                      counts: tuple[int, ...] | None = None, etp: int | None = None,
                      layout: str = "loop", param_state: str = "megatron",
                      linear_weight_bytes: float | None = None) -> StaticMemory:
    """Model state of one GPU of pipeline `stage`. ZeRO shards a parameter's state over the GPUs
    holding the same copy of it: the dp*cp replicas for the dense part; for a routed expert,
    Megatron's expert-data-parallel group (the distributed optimizer's `expert_data_parallel_group`),
    the tp*dp*cp / (ep*expert_tp) GPUs of the stage holding the same expert shard. The experts'
    sharded state per GPU is then the stage's whole expert state / (tp*dp*cp), for any ep.
    `layout` places the rank's chunks (`cost.partition.rank_stages`; DualPipe's mirror holds two
    copies of the parameters, and their whole state is charged twice). `param_state`: how the
    stack stores the state, with the unsharded 16-bit copies it holds at the peak
    (`cost.param_state`), charged to weights and gradients. `linear_weight_bytes`: what the stack
    holds per block linear-layer parameter instead of the 16-bit one (`te_fp8_weight_bytes`);
    the difference is charged to the weights of an unsharded (ZeRO < 3) rank holding Megatron's
    16-bit parameters."""
    params = weight_params_per_gpu(model, tp=tp, pp=pp, ep=ep, stage=stage, virtual_stages=virtual_stages,
                                   counts=counts, etp=etp, layout=layout)
    experts = routed_expert_params_per_gpu(model, tp=tp, pp=pp, ep=ep, stage=stage, virtual_stages=virtual_stages,
                                           counts=counts, etp=etp, layout=layout)
    dense = training_state_bytes(params - experts, dp=dp_cp, zero=zero, grad_bytes=grad_bytes,
                                 param_state=param_state)
    exp = training_state_bytes(experts, dp=tp * dp_cp // (ep * expert_tp(tp, ep, etp)), zero=zero,
                               grad_bytes=grad_bytes, param_state=param_state)
    gw = gg = 0.0
    if param_state not in MEGATRON_LAYOUT:
        edges = _rank_edge_params(model, tp, pp, virtual_stages, stage, layout)
        gw, gg = gathered_bytes(param_state, params=params, edge_params=edges, layers=cdiv(model.layers, pp),
                                sharded=zero >= 3 and dp_cp > 1, grad_bytes=grad_bytes, pipelined=pp > 1)
    if linear_weight_bytes is not None and zero < 3 and param_state in MEGATRON_LAYOUT:
        gw += (linear_weight_bytes - HALF_BYTES) * _rank_linear_params(model, tp, pp, virtual_stages, stage, layout,
                                                                       counts, params)
    if not experts and not (gw or gg):
        return dense
    return StaticMemory(weights=dense.weights + exp.weights + gw, gradients=dense.gradients + exp.gradients + gg,
                        optimizer=dense.optimizer + exp.optimizer)


def _rank_linear_params(model: ModelSpec, tp: int, pp: int, virtual_stages: int, stage: int, layout: str,
                        counts: tuple[int, ...] | None, params: float) -> float:
    """The block linear-layer parameters (attention, MLP, experts) among the rank's `params`: less
    the embedding, head and final norm, each layer's norms and each MoE layer's router."""
    layers = _rank_layers(model, pp, virtual_stages, stage, layout, counts)
    moe = sum(1 for li in layers if model.is_moe and li >= model.dense_layers)
    edges = _rank_edge_params(model, tp, pp, virtual_stages, stage, layout)
    return params - edges - len(layers) * model.norm_params_per_layer - moe * model.router_params


def _rank_layers(model: ModelSpec, pp: int, virtual_stages: int, stage: int, layout: str,
                 counts: tuple[int, ...] | None) -> list[int]:
    """The indices of the layers the rank of pipeline `stage` holds, over all its chunks (`counts`:
    layers per virtual stage, default the even split; `cost.partition.rank_stages` places them)."""
    from parasim.cost.partition import rank_stages, stage_count, virtual_stage_layers

    counts = counts or virtual_stage_layers(model.layers, pp, stage_count(pp, virtual_stages, layout) // pp)
    starts = [sum(counts[:g]) for g in range(len(counts))]
    return [li for g in rank_stages(pp, virtual_stages, layout)[stage] for li in range(starts[g], starts[g] + counts[g])]


def _rank_edge_params(model: ModelSpec, tp: int, pp: int, virtual_stages: int, stage: int, layout: str) -> float:
    """Embedding / head parameters the rank of pipeline `stage` holds (`_held_edge_params`)."""
    from parasim.cost.partition import rank_stages, stage_count

    n = stage_count(pp, virtual_stages, layout)
    held = rank_stages(pp, virtual_stages, layout)[stage]
    return _held_edge_params(model, tp, 0 in held, n - 1 in held) + (model.final_norm_params if n - 1 in held else 0)


def kv_cache_bytes_per_token(model: ModelSpec, kv_bytes: float = 2.0) -> float:
    """Whole model, one token (before sharding): layers x cached values x bytes."""
    return model.layers * model.kv_values_per_token_per_layer * kv_bytes


def kv_cache_bytes_per_token_per_gpu(model: ModelSpec, *, tp: int, pp: int, kv_bytes: float = 2.0,
                                     sliding_share: float = 1.0) -> float:
    """KV heads split over TP (replicated when TP exceeds them; MLA's latent is replicated),
    layers split over PP (the most-loaded stage). `sliding_share` is the share of a token's KV the
    pool sizes for in a sliding-window layer (`sliding_kv_share`): 1 = every layer caches every
    token; the stage's layers are charged at the model's mix of windowed and full layers."""
    layers = cdiv(model.layers, pp)
    if sliding_share != 1.0 and model.windowed_layers:
        layers = layers * (model.full_attention_layers + sliding_share * model.windowed_layers) / model.layers
    if model.mla:
        per_layer = model.kv_values_per_token_per_layer
    else:
        per_layer = 2 * max(1, model.kv_heads // tp) * model.head_dim
    return layers * per_layer * kv_bytes


def weight_params_per_gpu(model: ModelSpec, *, tp: int = 1, pp: int = 1, ep: int = 1, stage: int | None = None,
                          virtual_stages: int = 1, counts: tuple[int, ...] | None = None,
                          etp: int | None = None, layout: str = "loop") -> float:
    """Parameters held by one GPU of the given pipeline rank (default: the most loaded one).

    Attention and dense MLP split by TP; routed experts split over EP, each expert `etp` ways
    (None: by TP when EP is 1, whole with EP, serving's layout); embedding on the first stage and LM head on the last, vocab-parallel over TP.
    Layers are split as in `cost.partition.virtual_stage_layers`: with `virtual_stages` v > 1
    (interleaved 1F1B) rank r holds the model chunks r, r + pp, ..., r + (v-1)*pp; other schedules'
    `layout`s place them as `cost.partition.rank_stages` says. `counts`, when given, are the layers
    per virtual stage of another split (a mixed cluster's, training/hetero.py). Cached: the planner
    asks often.
    """
    return _weight_params_per_gpu(model, tp, pp, ep, stage, virtual_stages, counts, etp, layout)


def weight_bytes_per_gpu(model: ModelSpec, *, tp: int = 1, pp: int = 1, weights: str = "bf16", ep: int = 1) -> float:
    """Weight bytes on the most loaded GPU of a serving replica (routed experts spread over `ep`
    replicas when the plan runs expert parallelism across its DP-attention replicas).

    Quantised checkpoints (FP8, INT8, 4-bit) quantise the Linear layers of the blocks only: the
    embedding is a lookup table, and the recipes leave the LM head out (Model Optimizer's default
    config disables `*lm_head*`; llm-compressor recipes `ignore: [lm_head]`). Both stay 16-bit.
    The quantised elements carry their block scales, and a checkpoint that quantises only some
    block modules keeps the others 16-bit (`cost.quant_bytes`).
    """
    scope = quant_scope(model, weights)
    if scope is None:
        return weight_params_per_gpu(model, tp=tp, pp=pp, ep=ep) * dtype_bytes(weights, field="weights")
    return max(_stage_weight_bytes(model, scope, tp, pp, ep, i) for i in range(pp))


def _stage_weight_bytes(model: ModelSpec, scope: QuantScope, tp: int, pp: int, ep: int, stage: int) -> float:
    """Bytes on one GPU of `stage`: the quantised block parameters at the scope's element bytes,
    everything else 16-bit (every block parameter, norms included, is quantised under `all`)."""
    params = weight_params_per_gpu(model, tp=tp, pp=pp, ep=ep, stage=stage)
    qb = scope.element_bytes
    if scope.is_all:
        return params * qb + _edge_params(model, tp, pp, stage) * (2.0 - qb)
    return params * 2.0 - quantized_block_params(model, scope, tp=tp, pp=pp, ep=ep, stage=stage) * (2.0 - qb)


def quantized_block_params(model: ModelSpec, scope: QuantScope, *, tp: int, pp: int, ep: int, stage: int) -> float:
    """Parameters of `stage`'s layers (serving layout: one chunk per rank) that the scope quantises."""
    from parasim.cost.partition import virtual_stage_layers

    counts = virtual_stage_layers(model.layers, pp, 1)
    start = sum(counts[:stage])
    etp = expert_tp(tp, ep)
    total = 0.0
    for li in range(start, start + counts[stage]):
        if scope.edge_layers_16bit and li in (0, model.layers - 1):
            continue
        moe = model.is_moe and li >= model.dense_layers
        total += scope.attention * model.attn_params / tp
        if moe:
            total += (scope.mlp * model.shared_experts * model.expert_params / tp
                      + scope.experts * model.experts / ep * model.expert_params / etp)
        else:
            total += scope.mlp * model.dense_mlp_params / tp
    return total


def _edge_params(model: ModelSpec, tp: int, pp: int, stage: int) -> float:
    """Embedding (first stage) and LM head (last stage) parameters on one GPU of `stage`; a tied
    matrix is held again by the last stage when the two are different stages."""
    return _held_edge_params(model, tp, stage == 0, stage == pp - 1)


def _held_edge_params(model: ModelSpec, tp: int, first: bool, last: bool) -> float:
    """`_edge_params` of a rank holding the first and/or the last virtual stage (a rank holding
    both, as ZB-V's rank 0, keeps a tied matrix once)."""
    p = 0.0
    if first:
        p += model.embedding_params / tp
    if last:
        p += model.lm_head_params / tp
        if model.tied_embeddings and not first:
            p += model.lm_head_matrix_params / tp
    return p


def expert_tp(tp: int, ep: int, etp: int | None = None) -> int:
    """How many ways each routed expert's matrices are split: `etp` when the plan gives it (training,
    Megatron-Core's expert tensor parallelism), else by TP when there is no expert parallelism and
    whole experts on each GPU when there is (serving engines)."""
    if etp is not None:
        return etp
    return tp if ep == 1 else 1


@lru_cache(maxsize=8192)
def _weight_params_per_gpu(model: ModelSpec, tp: int, pp: int, ep: int, stage: int | None, v: int = 1,
                           counts: tuple[int, ...] | None = None, etp_given: int | None = None,
                           layout: str = "loop") -> float:
    from parasim.cost.partition import rank_stages, stage_count, virtual_stage_layers

    n = stage_count(pp, v, layout)
    counts = counts or virtual_stage_layers(model.layers, pp, n // pp)
    held = rank_stages(pp, v, layout)
    starts = [sum(counts[:g]) for g in range(len(counts))]
    etp = expert_tp(tp, ep, etp_given)
    dense_layer = (model.attn_params + model.dense_mlp_params) / tp + model.norm_params_per_layer
    moe_layer = (model.attn_params / tp + model.norm_params_per_layer + model.router_params
                 + model.shared_experts * model.expert_params / tp
                 + model.experts / ep * model.expert_params / etp)

    def stage_params(i: int) -> float:
        p = 0.0
        for g in held[i]:
            layers = range(starts[g], starts[g] + counts[g])
            p += sum(moe_layer if (model.is_moe and li >= model.dense_layers) else dense_layer for li in layers)
        first, last = 0 in held[i], n - 1 in held[i]
        p += _held_edge_params(model, tp, first, last)
        if last:
            p += model.final_norm_params
        return p

    if stage is not None:
        return stage_params(stage)
    return max(stage_params(i) for i in range(pp))


# --- serving: the KV cache a replica's GPUs hold --------------------------------------------------
#: Memory the runtime holds outside weights, activations and KV: CUDA context, cuBLAS/NCCL
#: workspaces, captured CUDA graphs. An engine constant (vLLM reports it as "non-torch memory"
#: plus graph memory in its startup profile, typically 0.5-1.5 GB per GPU).
RUNTIME_RESERVED_BYTES = 1.0e9

#: The most tokens a serving replica's activation workspace is sized for, whatever its token budget:
#: an engine whose step budget is larger (a whole burst of prompts prefilled in one step) runs the
#: step's prefill in sub-batches that reuse one workspace (e.g. TurboMind's `ContextDecode`), so the
#: budget alone does not size the memory. A simulator bound, not a published figure.
MAX_ACTIVATION_TOKENS = 1 << 16


@dataclass(frozen=True)
class KVBudget:
    """Per-GPU memory split of one replica, bytes, and the resulting block count (0 when nothing
    is left for a KV cache: `simulate` then reports the plan infeasible)."""

    hbm: float
    usable: float
    weights: float
    activations: float
    reserved: float
    kv: float
    kv_bytes_per_token: float
    blocks: int
    block_size: int
    # KV cache groups the blocks serve (vLLM's hybrid manager: one full-attention group and k
    # sliding ones per block of the pool, sliding_kv window); 1 = every layer in one group
    groups: int = 1

    @property
    def tokens(self) -> int:
        return self.blocks * self.block_size

    @property
    def reported_tokens(self) -> int:
        """The KV size in tokens as vLLM logs it ("GPU KV cache size"): blocks split evenly over
        the KV cache groups (`num_blocks // len(kv_cache_groups) * block_size`,
        kv_cache_utils._report_kv_cache_config, as in the 0.10-0.1x copies read; a later one logs max
        concurrency x max_model_len, docs/serving.md), `tokens` with one group."""
        return self.blocks // self.groups * self.block_size

    def to_dict(self) -> dict:
        return {"hbm_gib": gib(self.hbm), "usable_gib": gib(self.usable), "weights_gib": gib(self.weights),
                "activations_gib": gib(self.activations), "reserved_gib": gib(self.reserved),
                "kv_gib": gib(self.kv), "kv_bytes_per_token_per_gpu": self.kv_bytes_per_token,
                "kv_blocks": self.blocks, "kv_tokens": self.tokens, "block_size": self.block_size,
                **({"kv_cache_groups": self.groups, "kv_tokens_reported": self.reported_tokens} if self.groups > 1
                   else {})}


def activation_workspace_bytes(model: ModelSpec, *, tp: int, tokens: int, logit_rows: int, act_bytes: float) -> float:
    """Peak live activations of one forward pass of `tokens` tokens on one GPU (one layer's
    residual, normed input, QKV, attention output, MLP gate/up and product) plus fp32 logits."""
    kv = 2 * model.kv_heads * model.head_dim
    width = model.moe_ffn_hidden * model.experts_per_token if model.is_moe else model.ffn_hidden
    per_token = 2 * model.hidden + (2 * model.q_dim + kv) / tp + 3 * width / tp
    return tokens * per_token * act_bytes + logit_rows * model.vocab / tp * 4.0


#: vLLM V1's start-up profile (`Worker.determine_available_memory`: the KV pool is the requested
#: memory less the weights and the torch peak and non-torch growth of `profile_run`) ends with a
#: dummy sampler pass (`GPUModelRunner._dummy_sampler_run`) over min(max_num_seqs,
#: max_num_batched_tokens) rows (`_dummy_run`: num_reqs = min(num_tokens, max_num_seqs)) of the
#: whole vocabulary on every TP rank (V1 all-gathers the logits: `Platform.use_all_gather`), with
#: top_k = vocab - 1 and top_p 0.9 on every row. Bytes live per row and vocabulary entry at the
#: pass's peak, by the sampler path (vllm/v1/sample/sampler.py `Sampler.forward`,
#: vllm/v1/sample/ops/topk_topp_sampler.py; the same code on vLLM main at 2025-08-17 0fc8fa751
#: (0.10.1), 2025-10-01 c31246800 (0.11.0) and 2026-01-19 1a1fc3bbc (0.14)):
#: * native (PyTorch, `forward_native`, at the `scatter` of `apply_top_k_top_p`): the model-dtype
#:   logits the dummy run keeps, their fp32 copy, `sort`'s values and int64 indices, the top-k
#:   boolean mask, the softmax (the cumulative sum is written into it), the top-p boolean mask and
#:   the scattered result;
#: * flashinfer (`forward_cuda` -> FlashInfer `top_k_top_p_sampling_from_logits`, top_k_first: it
#:   writes top-k-masked logits, then their softmax, and samples in one kernel): the model-dtype
#:   logits, the fp32 copy, the masked logits and the softmax.
#: FlashInfer's path is the default on CUDA when the flashinfer package is installed (vLLM's Docker
#: image builds it in; its CUDA wheel requirements did not, until PR #26859's release) up to PR
#: #26859 (2025-10-14, "Disable FlashInfer sampler by default": 0.11.1 on), the native one
#: otherwise (and on ROCm, `current_platform.is_cuda()` false).
VLLM_V1_SAMPLER_PEAK_BYTES = {
    "native": (("logits, model dtype", 2.0), ("logits fp32", 4.0), ("sorted fp32", 4.0),
               ("sort indices int64", 8.0), ("top-k mask bool", 1.0), ("softmax fp32", 4.0),
               ("top-p mask bool", 1.0), ("scatter output fp32", 4.0)),
    "flashinfer": (("logits, model dtype", 2.0), ("logits fp32", 4.0), ("top-k masked logits fp32", 4.0),
                   ("softmax fp32", 4.0)),
}
#: ServingPlan.sampler_profile: none (the pool is not sized after a sampler pass) or the path above
SAMPLER_PROFILES = ("none", *VLLM_V1_SAMPLER_PEAK_BYTES)


def vllm_v1_sampler_profile_bytes(model: ModelSpec, *, rows: int, path: str = "native",
                                  logit_bytes: float = 2.0) -> float:
    """Peak bytes of vLLM V1's dummy sampler pass over `rows` rows on one GPU of the last pipeline
    stage on sampler `path` (`VLLM_V1_SAMPLER_PEAK_BYTES`; the whole vocabulary on every TP rank).
    `logit_bytes`: the model-dtype logits the LM head writes."""
    per_entry = sum(b for _, b in VLLM_V1_SAMPLER_PEAK_BYTES[path]) - 2.0 + logit_bytes
    return rows * model.vocab * per_entry


#: SGLang's SWA pool holds this many tokens per token of the full-attention pool (ServerArgs
#: `swa_full_tokens_ratio` default 0.8), so a sliding-window layer costs the pool 0.8 of a token
SGLANG_SWA_FULL_TOKENS_RATIO = 0.8


def sliding_kv_share(model: ModelSpec, sliding_kv: str) -> float:
    """The share of a token's KV a serving pool sizes for in each sliding-window layer, by how the
    engine stores those layers (ServingPlan.sliding_kv): `full` caches every token (1); `window`
    keeps only the window, booked per request beside the pool's per-token full layers (0 here;
    serving.kvcache.window_blocks); `pool` is SGLang's separate SWA pool at
    SGLANG_SWA_FULL_TOKENS_RATIO of the full pool's tokens."""
    if not model.windowed_layers or sliding_kv == "full":
        return 1.0
    return 0.0 if sliding_kv == "window" else SGLANG_SWA_FULL_TOKENS_RATIO


def kv_budget(model: ModelSpec, acc: AcceleratorSpec, *, tp: int, pp: int, weights: str, kv_dtype: str,
              block_size: int, gpu_memory_utilization: float, max_tokens: int, max_batch: int,
              act_bytes: float = 2.0, ep: int = 1, extra_weight_bytes: float = 0.0,
              extra_kv_bytes_per_token: float = 0.0, sliding_share: float = 1.0,
              sampler_profile: str = "none") -> KVBudget:
    """A serving replica's per-GPU memory split: KV bytes = device memory (the CUDA-visible total,
    `AcceleratorSpec.device_memory_bytes`) x gpu_memory_utilization - weights -
    activation workspace (`max_tokens` in flight, `max_batch` logit rows) - runtime reserve,
    in blocks of `block_size` tokens at this GPU's KV bytes per token (its KV heads after TP, its
    layers after PP; a sliding-window layer at `sliding_share` of a token, `sliding_kv_share`).
    `extra_*`: a speculative drafter's weights and cache beside the model's. `sampler_profile`
    other than none (vLLM V1, by sampler path): the engine sizes the pool after a start-up profile
    whose peak is the larger of the dummy forward (`max_tokens` tokens, no logits: `_dummy_run`
    returns hidden states) and the dummy sampler pass over min(max_batch, max_tokens) rows
    (`vllm_v1_sampler_profile_bytes`)."""
    w = weight_bytes_per_gpu(model, tp=tp, pp=pp, weights=weights, ep=ep) + extra_weight_bytes
    if sampler_profile != "none":
        forward = activation_workspace_bytes(model, tp=tp, tokens=max_tokens, logit_rows=0, act_bytes=act_bytes)
        act = max(forward, vllm_v1_sampler_profile_bytes(model, rows=min(max_batch, max_tokens), path=sampler_profile,
                                                         logit_bytes=act_bytes))
    else:
        act = activation_workspace_bytes(model, tp=tp, tokens=max_tokens, logit_rows=max_batch, act_bytes=act_bytes)
    usable = acc.device_memory_bytes * gpu_memory_utilization
    kv = usable - w - act - RUNTIME_RESERVED_BYTES
    per_token = (kv_cache_bytes_per_token_per_gpu(model, tp=tp, pp=pp, kv_bytes=dtype_bytes(kv_dtype, field="kv_dtype"),
                                                  sliding_share=sliding_share)
                 + extra_kv_bytes_per_token)
    blocks = int(max(0.0, kv) // (per_token * block_size))
    groups = 1 + cdiv(model.windowed_layers, model.full_attention_layers) if (
        sliding_share == 0.0 and model.windowed_layers and model.full_attention_layers) else 1
    return KVBudget(hbm=acc.hbm_bytes, usable=usable, weights=w, activations=act, reserved=RUNTIME_RESERVED_BYTES,
                    kv=kv, kv_bytes_per_token=per_token, blocks=blocks, block_size=block_size, groups=groups)
