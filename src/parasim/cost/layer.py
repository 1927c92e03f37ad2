"""Every operator of one transformer layer on one GPU, for any token batch and sharding.

A batch is described by aggregates that keep attention exact per sequence without looping over
sequences in the hot path:

* `tokens`        — all tokens in the pass (prefill chunk tokens + one per decoding sequence);
* `prefill_pairs` — sum over prefill chunks of the causal query-key pairs, c*p + c*(c+1)/2 for a
                    chunk of c tokens after p cached ones (quadratic in each sequence's own length);
* `prefill_kv_tokens` — sum over prefill chunks of p (cached context the chunk reads);
* `decode_seqs`, `decode_ctx` — decoding sequences and the sum of their context lengths (each
                    decode query reads its own whole KV context).

GEMMs depend only on `tokens`, so their cost is cached per token count; attention terms are
linear in the aggregates. `backward` is the one backward model (the training step uses it), split
into input-gradient and weight-gradient work: each GEMM has one of each, the forward's size; fused
attention backward does 2.5x the forward's matmul FLOPs (five matmuls instead of two).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from parasim.cost import nongemm
from parasim.cost.attn_shape import ATTN_BWD_EFF_RATIO, law_for
from parasim.cost.comm import Group, collective_time_s
from parasim.cost.dtypes import dtype_bytes
from parasim.cost.moe_tile import grouped_gemm_rate, moe_tile_m, triton_block_fp8, triton_block_fp8_rate
from parasim.cost.quant import (MARLIN_TILE_M, checkpoint_gemm_dtype, gemm_dtype, is_weight_only, marlin_rate,
                                marlin_runs)
from parasim.cost.quant_bytes import QuantScope
from parasim.cost.roofline import (attention_time_s, gemm_flops_bytes, gemm_roofline_s, gemm_time_s, grouped_fill,
                                    memory_time_s)
from parasim.cost.moe_a2a import a2a_time_s, etp_exchange_s
from parasim.cost.routing import ExpertRouting, expected_tiles, expert_load_factor
from parasim.errors import InputError
from parasim.mathx import cdiv
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec

# Fused attention backward: five matmuls (recomputed scores, dV, dP, dQ, dK) against the forward's two.
ATTN_BWD_FLOPS_RATIO = 2.5
# Flash-attention backward at ATTN_BWD_EFF_RATIO of the forward's rate: defined in cost.attn_shape
# (its Blackwell cuDNN law is stated against it) and re-exported here.
# Materialised-score attention backward: the two batched GEMMs' gradients and the softmax/dropout
# backward over the stored s x s probabilities, about twice the forward's time and traffic.
UNFUSED_ATTN_BWD_RATIO = 2.0
# Norms, activation function, residuals, rotary: each backward reads the saved input and the
# incoming gradient and writes the outgoing one, about twice the forward's traffic.
ELEMENTWISE_BWD_RATIO = 2.0
#: Megatron-Core's MoE token permutation (and the unpermutation after the combine, which also
#: weighs each expert output by its routing probability) reads and writes every routed
#: token-expert pair's hidden vector once: 2 accesses per element, each of the two kernels.
MOE_PERMUTE_RW = 2.0
#: A serving engine's fused-MoE layer ends with a separate kernel that reads each token's k expert
#: output rows and writes their router-weighted sum: k reads + this 1 write per hidden element
#: (TensorRT-LLM's finalizeMoeRoutingKernel, vLLM's fused_experts -> ops.moe_sum, SGLang's
#: moe_sum_reduce; the down GEMM's own write of the k rows is charged with the GEMM).
MOE_COMBINE_ACCESSES = 1
#: A grouped-GEMM (CUTLASS) MoE runner starts with a separate kernel that copies each token's hidden
#: row into the k row slots of its experts, so that every expert's rows are contiguous for the
#: grouped GEMM: 1 read + k writes per hidden element (TensorRT-LLM's expandInputRowsKernel, which
#: duplicates and reorders the rows by expert, cpp/tensorrt_llm/kernels/cutlass_kernels/moe_gemm/
#: moe_kernels.cu, called before GEMM1 in every CutlassMoeFCRunner, which quantizes the copies to
#: FP8 / FP4 there when the GEMM computes in them; vLLM's and SGLang's CUTLASS MoE paths permute the
#: same way). The Triton fused-MoE kernel reads its rows through the sorted token ids inside the
#: GEMM instead, so the `triton` family (cost.moe_tile) has no such pass.
MOE_EXPAND_READS = 1
#: Before it expands the rows, TensorRT-LLM's CUTLASS MoE runner turns the router logits into the
#: expert-sorted row order in three small kernels of its own (CutlassMoeFCRunner::runMoe,
#: cpp/tensorrt_llm/kernels/mixtureOfExperts/moe_kernels.cu, the 2024 releases): topkGatingSoftmax
#: (softmax and top-k of each token's fp32 logits), the CUB radix sort of the token-expert pairs by
#: expert (CubKeyValueSorter, one launch at the least) and computeTotalRowsBeforeExpert (each
#: expert's first row). Later runners build the same maps with their own prologue
#: (fusedBuildExpertMapsSortFirstToken, or a three-kernel fallback) after a separate routing op and
#: add the TMA strides kernel, so three is a floor there too. Each is a launch of a few bytes per
#: token: their time is the part's per-kernel overhead (`moe_topk_sort`).
MOE_ROUTING_KERNELS = 3
#: ... and their bytes per token: the fp32 logits read (4 per expert); per routed pair, the
#: top-k's fp32 scale, int32 expert and int32 source row written (12), the sort's int32 key and
#: value read and written (16) and the offsets kernel's sorted expert read (4)
MOE_ROUTING_BYTES_PER_EXPERT = 4
MOE_ROUTING_BYTES_PER_PAIR = 12 + 16 + 4
#: GPT-family models with rotary positions (the case format's `gpt` family otherwise means learned
#: or ALiBi positions, which add no per-layer kernel)
ROTARY_GPT_TYPES = ("gptj", "gpt_neox", "phi", "codegen")


def _rotary(model: ModelSpec) -> bool:
    return model.family != "gpt" or model.model_type in ROTARY_GPT_TYPES


@dataclass(frozen=True)
class Op:
    """One kernel: what it computes and moves; its time comes from the roofline."""

    name: str
    kind: str  # gemm | attention | memory
    flops: float
    bytes: float
    m: float = 0.0  # GEMM rows (tokens), for tile efficiency
    n: float = 0.0  # GEMM output columns, for wave quantisation (0 = unknown)
    k: float = 0.0  # GEMM reduction depth, for the per-tile epilogue share (0 = unknown)
    dtype: str = "bf16"
    kernels: int = 1
    tile_m: int = 0  # GEMM tile height when the kernel has its own (weight-only Marlin); 0 = the part's
    fill: float = 0.0  # real / padded tile rows when known (grouped expert GEMMs); 0 = from m, n
    rate: float = 1.0  # GEMM: the kernel's MMA rate against the dense GEMM's (cost.moe_tile.grouped_gemm_rate)
    dequant: float = 1.0  # GEMM: weight-only kernel's real-row rate with dequantization (cost.quant.marlin_rate)
    shape: float = 1.0  # attention: compute time against the catalogued rate (cost.attn_shape)


def op_time_s(op: Op, acc) -> float:
    if op.kind == "gemm":
        return gemm_roofline_s(op.m, op.flops, op.bytes, acc, compute_dtype=op.dtype, n=op.n, k=op.k, tile_m=op.tile_m,
                               fill=op.fill, rate=op.rate, dequant=op.dequant)
    if op.kind == "attention":
        return attention_time_s(op.flops, op.bytes, acc, dtype=op.dtype, shape=op.shape)
    return memory_time_s(op.bytes, acc, kernels=op.kernels)


@dataclass(frozen=True, kw_only=True)
class Sharding:
    """How one layer is split: TP (with optional sequence parallel), EP, CP."""

    tp: int = 1
    ep: int = 1
    cp: int = 1
    sp: bool = False
    # how many ranks' token batches meet in the EP all-to-all (training: ep; serving: 1,
    # since the ranks of one replica share its batch)
    moe_token_sets: int = 1
    # expert tensor parallelism, Megatron-Core's MoE parallel folding: each expert split etp ways,
    # the experts spread over ep ranks, the ep*etp expert ranks folded over the dense layers'
    # TP x CP x DP. None = serving's layout (experts split by TP without EP, whole with EP).
    etp: int | None = None

    @property
    def expert_tp(self) -> int:
        """How many ways each routed expert's matrices are split."""
        if self.etp is not None:
            return self.etp
        return self.tp if self.ep == 1 else 1

    @property
    def folded(self) -> bool:
        """Training's Megatron-Core layout: every GPU routes its own sequence shard."""
        return self.etp is not None


def check_sharding(model: ModelSpec, s: Sharding) -> None:
    """One validator for every degree, naming the degree and the dimension it must divide."""
    for name, v in (("tp", s.tp), ("ep", s.ep), ("cp", s.cp)):
        if v < 1:
            raise InputError(name, f"must be >= 1, got {v}")
    if model.heads % s.tp:
        raise InputError("tp", f"tp={s.tp} does not divide the {model.heads} attention heads of {model.name}")
    if s.tp > model.kv_heads and s.tp % model.kv_heads:
        raise InputError("tp", f"tp={s.tp} is neither a divisor nor a multiple of kv_heads={model.kv_heads}")
    if s.ep > 1 and not model.is_moe:
        raise InputError("ep", f"ep={s.ep} needs a mixture-of-experts model; {model.name} is dense")
    if model.is_moe and model.experts % s.ep:
        raise InputError("ep", f"ep={s.ep} does not divide the {model.experts} experts of {model.name}")
    if s.etp is not None:
        if s.etp < 1:
            raise InputError("etp", f"must be >= 1, got {s.etp}")
        if model.is_moe and model.moe_ffn_hidden % s.etp:
            raise InputError("etp", f"etp={s.etp} does not divide the expert FFN width {model.moe_ffn_hidden} of "
                                    f"{model.name}")


def forward_gemms_s(fwd: dict[str, float]) -> float:
    """The GEMMs of a forward breakdown: attention projections and the (dense or expert) MLP."""
    return fwd["attn_gemms"] + fwd.get("mlp", 0.0) + fwd.get("moe", 0.0)


class LayerCost:
    """Cost of one layer's operators on one GPU, precomputed for a model, cluster and sharding."""

    def __init__(self, model: ModelSpec, cluster: ClusterSpec, sharding: Sharding, *,
                 weight_dtype: str = "bf16", act_dtype: str = "bf16", kv_dtype: str = "bf16",
                 tp_group: Group | None = None, ep_group: Group | None = None, kernels: str = "fused",
                 dropout: bool = False, routing: ExpertRouting | None = None, moe_gemm: str = "cutlass",
                 quant: QuantScope | None = None, attention_kernel: str = "", marlin_moe: bool = False) -> None:
        check_sharding(model, sharding)
        self.kernels = nongemm.check_mode(kernels)
        self.dropout = dropout  # hidden dropout masks (training of models that use dropout)
        self.model, self.cluster, self.s = model, cluster, sharding
        self.acc = cluster.accelerator
        self.wb = dtype_bytes(weight_dtype, field="weights")
        self.ab = dtype_bytes(act_dtype, field="precision")
        self.kvb = dtype_bytes(kv_dtype, field="kv_cache")
        self.cdt = gemm_dtype(weight_dtype, self.acc, act_dtype)  # weight-only formats: 16-bit math
        # weight-only GEMMs run Marlin-style kernels with their own small row tile (cost.quant)
        self._wo_tile = MARLIN_TILE_M if is_weight_only(weight_dtype, self.acc) else 0
        # ... whose dequantization slows their MMA where Marlin runs them (cost.quant.marlin_rate);
        # `marlin_moe`: the routed experts run the Marlin MoE kernel (plan expert_padding: marlin)
        marlin = marlin_rate(self.acc)
        self._wo_rate = {"dense": marlin if marlin_runs(self.acc) else 1.0,
                         "experts": marlin if marlin_runs(self.acc, experts=True, marlin_moe=marlin_moe) else 1.0}
        self.moe_gemm = moe_gemm  # grouped expert GEMM kernel family: its row tile by batch (cost.moe_tile)
        self.adt = act_dtype
        self._fmt = self._part_formats(quant)
        # serving's Triton block-FP8 experts wait at every K step (cost.moe_tile)
        self._block_fp8 = (quant is not None and quant.experts and sharding.etp is None
                           and self._fmt["experts"][1] == "fp8"
                           and triton_block_fp8(moe_gemm, self.acc, quant.weights, quant.scales))
        tp, m = sharding.tp, model
        self.tp_group = tp_group or Group.strided(tp, 1, cluster)
        self.ep_group = ep_group or Group.strided(sharding.ep, tp, cluster)
        self.heads = m.heads // tp
        self.kv_heads = max(1, m.kv_heads // tp)
        self.etp = sharding.expert_tp
        self.routing = routing or ExpertRouting()
        self.local_experts = m.experts // sharding.ep if m.is_moe else 0
        # cached bytes per token for this layer on this GPU (MLA's latent is replicated over TP)
        self.kv_bytes_per_token = (m.kv_values_per_token_per_layer if m.mla
                                   else 2 * self.kv_heads * m.head_dim) * self.kvb
        if m.mla:
            # absorbed MLA decode: scores against the 576-wide latent, values from the 512-wide one
            self.decode_flops_per_ctx = 2 * self.heads * (2 * m.mla.kv_lora_rank + m.mla.qk_rope_head_dim)
        else:
            self.decode_flops_per_ctx = 2 * self.heads * (m.qk_head_dim + m.v_head_dim)
        self.prefill_flops_per_pair = 2 * self.heads * (m.qk_head_dim + m.v_head_dim)
        self.qkvo_act_per_token = (2 * self.heads * m.qk_head_dim + 2 * self.kv_heads * m.head_dim
                                   + self.heads * m.v_head_dim) * self.ab
        self._gemm_cache = lru_cache(maxsize=4096)(self._gemms_and_norms)
        # the fused-attention kernel's rate by sequence length and mask (cost.attn_shape); "" or a
        # kernel without a published curve on this part: the catalog's constant rate
        self.attn_law = law_for(self.acc.generation, attention_kernel) if attention_kernel else None

    def _part_formats(self, quant: QuantScope | None) -> dict[str, tuple[float, str, int]]:
        """(weight bytes per element, GEMM unit, row tile) of the attention projections, the dense
        MLP / shared experts and the routed experts: a quantized checkpoint's scope keeps some of
        them 16-bit, and its quantized elements carry their scales (cost.quant_bytes); an MXFP4
        checkpoint's GEMMs run W4A8 on a part with an FP4 unit (cost.quant.checkpoint_gemm_dtype)."""
        unit = self.cdt if quant is None else checkpoint_gemm_dtype(quant.weights, quant.scales, self.acc, self.adt)
        low = (self.wb if quant is None else quant.element_bytes, unit, self._wo_tile)
        if quant is None or quant.is_all:
            return {"attn": low, "mlp": low, "experts": low}
        high = (self.ab, gemm_dtype(self.adt, self.acc, self.adt), 0)
        return {"attn": low if quant.attention else high, "mlp": low if quant.mlp else high,
                "experts": low if quant.experts else high}

    # --- GEMMs and bandwidth-bound elementwise work: a function of the token count only ---------
    def _gemm(self, name: str, m: float, k: float, n: float, count: float = 1.0, *, dtype: str | None = None,
              weight_bytes: float | None = None, part: str = "attn") -> Op:
        fmt_bytes, fmt_dtype, fmt_tile = self._fmt[part]
        wb = fmt_bytes if weight_bytes is None else weight_bytes
        flops, bytes_ = gemm_flops_bytes(m, k, n, weight_bytes=wb, act_bytes=self.ab, count=count)
        tile = fmt_tile if weight_bytes is None else 0
        dequant = self._wo_rate["experts" if part == "experts" else "dense"] if tile == MARLIN_TILE_M else 1.0
        return Op(name, "gemm", flops, bytes_, m=m, n=n, k=k, dtype=dtype or fmt_dtype, tile_m=tile, dequant=dequant)

    def _attn_gemm_ops(self, t: float) -> list[Op]:
        m, tp = self.model, self.s.tp
        if m.mla:
            ml = m.mla
            qk = ml.qk_nope_head_dim + ml.qk_rope_head_dim
            ops = ([self._gemm("q_a_proj", t, m.hidden, ml.q_lora_rank),
                    self._gemm("q_b_proj", t, ml.q_lora_rank, self.heads * qk)] if ml.q_lora_rank
                   else [self._gemm("q_proj", t, m.hidden, self.heads * qk)])
            return ops + [self._gemm("kv_a_proj", t, m.hidden, ml.kv_lora_rank + ml.qk_rope_head_dim),
                          self._gemm("kv_b_proj", t, ml.kv_lora_rank, self.heads * (ml.qk_nope_head_dim + ml.v_head_dim)),
                          self._gemm("o_proj", t, self.heads * ml.v_head_dim, m.hidden)]
        return [self._gemm("qkv_proj", t, m.hidden, self.heads * m.head_dim + 2 * self.kv_heads * m.head_dim),
                self._gemm("o_proj", t, m.q_dim // tp, m.hidden)]

    def attention_gemm_s(self, tokens: float, names: tuple[str, ...]) -> float:
        """Seconds of the named attention projections for `tokens` tokens (MLA up-projection recompute)."""
        return sum(op_time_s(o, self.acc) for o in self._attn_gemm_ops(float(tokens)) if o.name in names)

    def _mlp_ops(self, name: str, t: float, width: int, split: int) -> list[Op]:
        m = self.model
        up = (m.mlp_matrices - 1) * width // split
        return [self._gemm(f"{name}_up", t, m.hidden, up, part="mlp"),
                self._gemm(f"{name}_down", t, width // split, m.hidden, part="mlp")]

    def _moe_ops(self, t: float) -> list[Op]:
        """Router, routed experts (only the experts the batch touches read their weights), shared.

        The expert GEMMs run on the busiest EP rank (the others wait for it at the combine), and
        their rows are padded to whole tiles per expert as the routing spreads them (cost.routing)."""
        m, s = self.model, self.s
        group_tokens = self.moe_group_tokens(t)  # tokens whose routing meets on one expert rank
        p = m.experts_per_token / m.experts
        touched = m.experts * (1.0 - (1.0 - p) ** group_tokens)
        local_touched = max(touched / s.ep, 1e-9)
        busiest = self.expert_load(t)
        per_expert = group_tokens * m.experts_per_token * busiest / s.ep / local_touched  # rows per touched expert
        local = m.experts / s.ep
        ex_bytes, ex_dtype, ex_tile = self._fmt["experts"]
        tile = ex_tile or moe_tile_m(self.moe_gemm, group_tokens, local, self.acc.efficiency.gemm_tile_m,
                                     quantized=ex_bytes < 2, block_fp8=self._block_fp8)
        mean = group_tokens * p * busiest  # rows per expert, untouched ones included
        tiles = expected_tiles(group_tokens, p, tile, mean)
        up = (m.mlp_matrices - 1) * m.moe_ffn_hidden // self.etp
        down_k = m.moe_ffn_hidden // self.etp
        # a serving engine's grouped-GEMM kernel family runs below the dense rate (cost.moe_tile);
        # training's grouped GEMMs (the folded layout) keep the dense rate
        rate = 1.0 if s.folded else grouped_gemm_rate(self.moe_gemm, self.acc.generation, weight_only=bool(ex_tile),
                                                      dtype=ex_dtype)
        if self._block_fp8:  # Triton block-FP8: the FP8 unit, waiting at every K step (cost.moe_tile)
            rate = triton_block_fp8_rate(self.acc)
        # weight-only experts: Marlin's dequantization on their real rows (cost.quant.marlin_rate); not in
        # training's folded layout
        dq = self._wo_rate["experts"] if ex_tile and not s.folded else 1.0
        ops = [self._gemm("router", self.routed_tokens(t), m.hidden, m.experts, dtype="bf16", weight_bytes=self.ab),
               replace(self._gemm("experts_up", per_expert, m.hidden, up, local_touched, part="experts"),
                       fill=grouped_fill(mean, tiles, local, up, self.acc, tile), rate=rate, dequant=dq),
               replace(self._gemm("experts_down", per_expert, down_k, m.hidden, local_touched, part="experts"),
                       fill=grouped_fill(mean, tiles, local, m.hidden, self.acc, tile), rate=rate, dequant=dq)]
        if m.shared_experts:
            ops += self._mlp_ops("shared_expert", t, m.shared_experts * m.moe_ffn_hidden, s.tp)
        return ops

    def _nongemm_ops(self, t: float, moe: bool) -> list[Op]:
        """Norms, residual adds, activation, rotary (and dropout, GQA expansion where the kernel mode
        has them): bandwidth-bound, their bytes by the kernel mode (cost.nongemm)."""
        m, ab, mode = self.model, self.ab, self.kernels
        norm_t = t / self.s.tp if self.s.sp else t
        width = (m.moe_ffn_hidden * m.experts_per_token // self.etp) if moe else m.ffn_hidden // self.s.tp
        act_t = self.routed_tokens(t) * self.etp if moe and self.s.folded else t  # rows of the expert GEMMs
        norm = nongemm.norm_access(mode, rms=m.family != "gpt")
        act = nongemm.activation_access(mode, m.gated_mlp)
        ops = [Op("norms", "memory", 0.0, 2 * norm_t * m.hidden * norm.bytes_per_element(ab), kernels=2 * norm.kernels),
               Op("residual", "memory", 0.0, 2 * norm_t * m.hidden * nongemm.RESIDUAL.bytes_per_element(ab),
                  kernels=2 * nongemm.RESIDUAL.kernels),
               Op("activation", "memory", 0.0, act_t * width * act.bytes_per_element(ab), kernels=act.kernels)]
        clamp = nongemm.glu_clamp_access(mode, m.clamped_glu) if moe and self.s.folded else None
        if clamp is not None:  # training only: serving engines fuse the clamp into their activation kernel
            ops.append(Op("activation_clamp", "memory", 0.0, act_t * width * clamp.bytes_per_element(ab),
                          kernels=clamp.kernels))
        bias = nongemm.expert_bias_access(mode, m.biases, m.experts / self.s.ep) if moe and self.s.folded else None
        if bias is not None:  # training only: serving engines add it in their fused-MoE GEMM epilogue
            ops.append(Op("expert_bias", "memory", 0.0,
                          act_t * m.experts_per_token * m.hidden * bias.bytes_per_element(ab), kernels=bias.kernels))
        q_w, kv_w = self.heads * m.qk_head_dim, self.kv_heads * m.head_dim
        if _rotary(m):
            # training only: serving engines' rotary kernels take YaRN's tables like any other
            rope = nongemm.rotary_access(mode, fusable=not (self.s.folded and m.yarn_positions))
            ops.append(Op("rotary", "memory", 0.0, t * (q_w + kv_w) * rope.bytes_per_element(ab), kernels=rope.kernels))
        expand = nongemm.repeat_kv_bytes(mode, self.heads * m.head_dim, kv_w, ab)
        if expand:
            ops.append(Op("repeat_kv", "memory", 0.0, t * expand, kernels=2))
        if moe and self.s.folded:  # token permutation before the dispatch and its inverse after the combine
            pairs = self.routed_tokens(t) * m.experts_per_token * self.expert_load(t)
            ops.append(Op("moe_permute", "memory", 0.0, 2 * MOE_PERMUTE_RW * pairs * m.hidden * ab, kernels=2))
        elif moe:  # serving: each token's k expert outputs summed into one (MOE_COMBINE_ACCESSES)
            rows = t * (m.experts_per_token + MOE_COMBINE_ACCESSES) * m.hidden * ab
            if self.moe_gemm == "cutlass":  # the runner's routing kernels sort the pairs (MOE_ROUTING_KERNELS),
                ops.append(Op("moe_topk_sort", "memory", 0.0,
                              t * (MOE_ROUTING_BYTES_PER_EXPERT * m.experts
                                   + MOE_ROUTING_BYTES_PER_PAIR * m.experts_per_token),
                              kernels=MOE_ROUTING_KERNELS))
                # then copy the rows to their experts' slots (MOE_EXPAND_READS), written in the
                # expert GEMM's input format (FP8 / FP4 rows when it computes in them)
                written = min(ab, dtype_bytes(self._fmt["experts"][1], field="precision"))
                ops.append(Op("moe_expand", "memory", 0.0,
                              t * (MOE_EXPAND_READS * ab + m.experts_per_token * written) * m.hidden))
            ops.append(Op("moe_combine", "memory", 0.0, rows))
        if self.dropout:
            drop = 2 * norm_t * m.hidden * (nongemm.DROPOUT_MASK_BYTES + (nongemm.DROPOUT_EAGER.bytes_per_element(ab)
                                                                        if mode == "eager" else 0.0))
            ops.append(Op("dropout", "memory", 0.0, drop, kernels=2 if mode == "eager" else 0))
        return ops

    def nongemm_s(self, tokens: float, moe: bool | None = None) -> dict[str, float]:
        """Seconds of each named non-GEMM op of one forward (the breakdown's `elementwise` parts)."""
        moe = self.model.is_moe if moe is None else moe
        return {o.name: op_time_s(o, self.acc) for o in self._nongemm_ops(float(tokens), moe)} if tokens > 0 else {}

    def token_ops(self, tokens: float, moe: bool | None = None) -> list[Op]:
        """Every operator of the layer whose cost depends only on the token count."""
        moe = self.model.is_moe if moe is None else moe
        t = float(tokens)
        if t <= 0:
            return []
        mlp = self._moe_ops(t) if moe else self._mlp_ops("mlp", t, self.model.ffn_hidden, self.s.tp)
        return self._attn_gemm_ops(t) + mlp + self._nongemm_ops(t, moe)

    def prefill_shape(self, prefill_pairs: float, prefill_tokens: float, *, backward: bool = False) -> float:
        """Compute time of fused prefill / training attention against the catalogued rate: the
        kernel's per-query-row costs over these pairs (cost.attn_shape; 1.0 without a law)."""
        if self.attn_law is None:
            return 1.0
        return self.attn_law.time_scale(prefill_pairs, prefill_tokens, backward=backward, cp=self.s.cp)

    def attention_bwd_shape(self, tokens: float, prefill_pairs: float) -> float:
        """The fused backward's shape over the forward's (`backward`'s `attention_bwd_shape`)."""
        if self.attn_law is None or prefill_pairs <= 0:
            return 1.0
        return (self.prefill_shape(prefill_pairs, tokens, backward=True)
                / self.prefill_shape(prefill_pairs, tokens))

    def attention_ops(self, tokens: float, prefill_pairs: float, prefill_kv_tokens: float,
                      decode_seqs: float, decode_ctx: float) -> list[Op]:
        ops = []
        if prefill_pairs > 0:
            prefill_tokens = tokens - decode_seqs
            ops.append(Op("attn_prefill", "attention", self.prefill_flops_per_pair * prefill_pairs,
                          prefill_tokens * self.qkvo_act_per_token + prefill_kv_tokens * self.kv_bytes_per_token,
                          dtype=self.adt, shape=self.prefill_shape(prefill_pairs, prefill_tokens)))
        if decode_seqs > 0:
            ops.append(Op("attn_decode", "attention", self.decode_flops_per_ctx * decode_ctx,
                          decode_ctx * self.kv_bytes_per_token + decode_seqs * self.qkvo_act_per_token, dtype=self.adt))
        return ops

    def operators(self, tokens: float, prefill_pairs: float = 0.0, prefill_kv_tokens: float = 0.0,
                  decode_seqs: float = 0.0, decode_ctx: float = 0.0, *, moe: bool | None = None) -> list[dict]:
        """Per-operator FLOPs, bytes and time of one forward pass (for reports and tests)."""
        ops = self.token_ops(tokens, moe) + self.attention_ops(tokens, prefill_pairs, prefill_kv_tokens,
                                                               decode_seqs, decode_ctx)
        return [{"name": o.name, "kind": o.kind, "flops": o.flops, "bytes": o.bytes, "time_s": op_time_s(o, self.acc)}
                for o in ops]

    def _gemms_and_norms(self, t: float, moe: bool) -> tuple[float, float, float]:
        attn = sum(op_time_s(o, self.acc) for o in self._attn_gemm_ops(t))
        mlp_ops = self._moe_ops(t) if moe else self._mlp_ops("mlp", t, self.model.ffn_hidden, self.s.tp)
        mlp = sum(op_time_s(o, self.acc) for o in mlp_ops)
        return attn, mlp, sum(op_time_s(o, self.acc) for o in self._nongemm_ops(t, moe))

    # --- attention core -----------------------------------------------------------------------
    def attention_s(self, tokens: float, prefill_pairs: float, prefill_kv_tokens: float,
                    decode_seqs: float, decode_ctx: float) -> tuple[float, float]:
        """(prefill attention, decode attention) seconds for this layer on this GPU."""
        pre = dec = 0.0
        if prefill_pairs > 0:
            pre = attention_time_s(self.prefill_flops_per_pair * prefill_pairs,
                                   (tokens - decode_seqs) * self.qkvo_act_per_token
                                   + prefill_kv_tokens * self.kv_bytes_per_token, self.acc, dtype=self.adt,
                                   shape=self.prefill_shape(prefill_pairs, tokens - decode_seqs))
        if decode_seqs > 0:
            dec = attention_time_s(self.decode_flops_per_ctx * decode_ctx,
                                   decode_ctx * self.kv_bytes_per_token + decode_seqs * self.qkvo_act_per_token,
                                   self.acc, dtype=self.adt)
        return pre, dec

    # --- communication inside the layer ----------------------------------------------------------
    def tp_comm_s(self, tokens: float) -> float:
        """Two all-reduces (or reduce-scatter + all-gather pairs with SP) of the layer output."""
        if self.s.tp <= 1 or tokens <= 0:
            return 0.0
        size = tokens * self.model.hidden * self.ab
        if self.s.sp:
            return 2 * (collective_time_s("reduce_scatter", size, self.tp_group, self.cluster)
                        + collective_time_s("all_gather", size, self.tp_group, self.cluster))
        return 2 * collective_time_s("all_reduce", size, self.tp_group, self.cluster)

    def routed_tokens(self, tokens: float) -> float:
        """Tokens this GPU routes: in training's folded layout its sequence-parallel shard of the TP
        group's tokens (each TP rank dispatches its own), else all of them."""
        return tokens / self.s.tp if self.s.folded and self.s.sp else tokens

    def moe_group_tokens(self, tokens: float) -> float:
        """Tokens whose routing meets on one expert rank: the ep ranks' dispatched tokens, gathered
        over the etp ranks of each expert (folded); serving: `moe_token_sets` batches."""
        if self.s.folded:
            return self.routed_tokens(tokens) * self.s.ep * self.etp
        return tokens * self.s.moe_token_sets

    def expert_load(self, tokens: float) -> float:
        """The busiest EP rank's token-expert pairs over the mean rank's (cost.routing)."""
        m, r = self.model, self.routing
        return expert_load_factor(self.moe_group_tokens(tokens), m.experts_per_token, m.experts, self.s.ep,
                                  skew=r.skew, capacity_factor=r.capacity_factor, layout=r.layout)

    def ep_comm_s(self, tokens: float) -> float:
        """Dispatch and combine of an MoE layer: the EP all-to-alls (training: of the busiest rank's
        load, with the plan's kernel, plus the ETP gather/scatter; cost.moe_a2a)."""
        if tokens <= 0 or not self.model.is_moe:
            return 0.0
        m = self.model
        if self.s.ep <= 1:  # no dispatch: the experts see the MLP's sequence-parallel gather (tp_comm)
            return 0.0
        if not self.s.folded:
            size = tokens * m.experts_per_token * m.hidden * self.ab
            return 2 * collective_time_s("all_to_all", size, self.ep_group, self.cluster)
        t, load, r = self.routed_tokens(tokens), self.expert_load(tokens), self.routing
        return (a2a_time_s(r.a2a, t, m.experts_per_token, m.hidden, self.ab, self.ep_group, self.cluster, load=load,
                           dispatch_bytes_per_elem=r.dispatch_bytes, experts=m.experts, layout=r.layout)
                + etp_exchange_s(t, m.experts_per_token, m.hidden, self.ab, self.etp, self.cluster, load=load))

    def cp_comm_s(self, tokens: float) -> float:
        """Ring attention: each rank passes its K/V chunk around the CP ring (cp-1 hops)."""
        if self.s.cp <= 1:
            return 0.0
        size = tokens * 2 * self.kv_heads * self.model.head_dim * self.ab
        return (self.s.cp - 1) * collective_time_s("p2p", size, Group.strided(self.s.cp, self.s.tp, self.cluster),
                                                   self.cluster)

    # --- whole layer ----------------------------------------------------------------------------
    def forward(self, tokens: float, prefill_pairs: float = 0.0, prefill_kv_tokens: float = 0.0,
                decode_seqs: float = 0.0, decode_ctx: float = 0.0, *, moe: bool | None = None) -> dict[str, float]:
        """Named breakdown (seconds) of one forward pass of this layer; `total` = compute + comm."""
        moe = self.model.is_moe if moe is None else moe
        attn_g, mlp_g, elem = self._gemm_cache(float(tokens), moe)
        pre, dec = self.attention_s(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx)
        tp = self.tp_comm_s(tokens)
        if moe and self.s.folded and self.s.ep > 1 and not self.model.shared_experts:
            tp /= 2  # the MLP's sequence-parallel gather/scatter is the dispatcher's (ep_comm)
        ep = self.ep_comm_s(tokens) if moe else 0.0
        out = {"attn_gemms": attn_g, "attn_prefill": pre, "attn_decode": dec,
               ("moe" if moe else "mlp"): mlp_g, "elementwise": elem, "tp_comm": tp, "ep_comm": ep}
        out["compute"] = attn_g + pre + dec + mlp_g + elem
        out["comm"] = tp + ep
        out["total"] = out["compute"] + out["comm"]
        return out

    def backward(self, fwd: dict[str, float], *, attention_s: float | None = None,
                 fused_attention: bool = True, attention_bwd_shape: float = 1.0) -> dict[str, float]:
        """Backward of a forward breakdown (seconds), split into input- and weight-gradient work.

        A GEMM Y = X W has two backward GEMMs of its FLOPs, the input gradient dX = dY W^T and the
        weight gradient dW = X^T dY, each costed at the forward GEMM's time. Attention and the
        elementwise ops hold no weights: their backward is input-gradient work. `input_grad` is what
        the previous stage waits for; `weight_grad` may run later (zero-bubble schedules).
        `attention_s` is the forward attention the backward follows (default: the breakdown's);
        `attention_bwd_shape` the fused backward kernel's shape over the forward's at this
        sequence length and mask (`attention_bwd_shape()`; 1 = the same).
        """
        gemms = forward_gemms_s(fwd)
        attn_f = fwd["attn_prefill"] + fwd["attn_decode"] if attention_s is None else attention_s
        attn = (ATTN_BWD_FLOPS_RATIO * attn_f / ATTN_BWD_EFF_RATIO * attention_bwd_shape if fused_attention
                else UNFUSED_ATTN_BWD_RATIO * attn_f)
        elem = ELEMENTWISE_BWD_RATIO * fwd["elementwise"]
        out = {"dgrad_gemms": gemms, "wgrad_gemms": gemms, "attention": attn, "elementwise": elem,
               "input_grad": gemms + attn + elem, "weight_grad": gemms,
               "compute": gemms + gemms + attn + elem,  # = input_grad + weight_grad, summed in this order
               "tp_comm": fwd["tp_comm"], "ep_comm": fwd["ep_comm"]}
        out["comm"] = fwd["tp_comm"] + fwd["ep_comm"]
        out["total"] = out["compute"] + out["comm"]
        return out


class EdgeCost:
    """Embedding lookup (first stage) and LM head + softmax (last stage), vocab-parallel over TP."""

    def __init__(self, layer: LayerCost) -> None:
        self.l = layer

    def embedding_s(self, tokens: float) -> float:
        m, ab = self.l.model, self.l.ab
        return memory_time_s(2 * tokens * m.hidden * ab, self.l.acc) if tokens > 0 else 0.0

    def lm_head_s(self, logit_tokens: float) -> float:
        """The LM head's GEMM and a softmax over fp32 logits (serving: the sampler's input)."""
        if logit_tokens <= 0:
            return 0.0
        vocab = cdiv(self.l.model.vocab, self.l.s.tp)
        softmax = memory_time_s(2 * logit_tokens * vocab * 4, self.l.acc)  # fp32 logits read + write
        return self.lm_head_gemm_s(logit_tokens) + softmax

    def lm_head_gemm_s(self, logit_tokens: float) -> float:
        """The LM head runs in 16-bit even when the blocks are quantised (see
        cost.memory.weight_bytes_per_gpu: quantisation recipes leave lm_head out)."""
        if logit_tokens <= 0:
            return 0.0
        m, l = self.l.model, self.l
        vocab = cdiv(m.vocab, l.s.tp)
        wb, cdt = (l.wb, l.cdt) if l.wb >= l.ab else (l.ab, l.adt)
        return gemm_time_s(logit_tokens, m.hidden, vocab, l.acc, compute_dtype=cdt, weight_bytes=wb, act_bytes=l.ab)

    def cross_entropy_s(self, tokens: float) -> tuple[float, float]:
        """Training loss over the (vocab-parallel) logits, forward and backward, by the layer's
        kernel mode (cost.nongemm.CROSS_ENTROPY)."""
        if tokens <= 0:
            return 0.0, 0.0
        logits = tokens * cdiv(self.l.model.vocab, self.l.s.tp)
        f, b, kf, kb = nongemm.cross_entropy_bytes(self.l.kernels, logits, self.l.ab)
        return memory_time_s(f, self.l.acc, kernels=kf), memory_time_s(b, self.l.acc, kernels=kb)

    def embedding_bwd_s(self, tokens: float) -> float:
        """Embedding backward (PyTorch's sort-and-segment-sum): read the incoming gradient, write and
        re-read fp32 partial sums per token; over this rank's vocabulary shard, zero-fill the 16-bit
        weight gradient, then add it into the fp32 main gradient (read 16-bit, read + write fp32)."""
        if tokens <= 0:
            return 0.0
        m, ab = self.l.model, self.l.ab
        table = cdiv(m.vocab, self.l.s.tp) * m.hidden * (2 * ab + 8.0)
        return memory_time_s(tokens * m.hidden * (ab + 8.0) + table, self.l.acc, kernels=2)
