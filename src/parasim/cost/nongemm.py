"""The memory-bound kernels between the GEMMs, by how the framework runs them.

Each op is counted as tensor element accesses (reads + writes) of 16-bit values and of fp32
values, per element of the tensor it works on; bytes = a16 * activation bytes + a32 * 4. Its time
is bandwidth-bound (`cost.roofline.memory_time_s`) plus one launch per kernel.

Three kernel modes, because the same layer moves very different bytes depending on who wrote
its kernels:

* `fused`   : Megatron-Core / Transformer Engine and the serving engines: one kernel per norm,
              activation, rotary and bias-dropout-add, reading its inputs and writing its output once;
* `eager`   : PyTorch eager (torchtitan and llm-foundry without torch.compile): every Python-level op
              is its own kernel, and the fp32 upcasts the reference code writes are real traffic;
* `compiled`: torch.compile (Inductor) fuses the elementwise chains into single kernels (as `fused`)
              and the loss into one pass over the logits; the optimizer stays eager (not compiled).

Counts follow the reference code the modes stand for (torchtitan `RMSNorm`, `apply_rotary_emb`,
`FeedForward`, `repeat_kv` and its loss at commit 9dec370, December 2024; Megatron-Core's
`vocab_parallel_cross_entropy`; torch.optim.AdamW `foreach`), one line each below.
"""

from __future__ import annotations

from dataclasses import dataclass

KERNEL_MODES = ("fused", "eager", "compiled")


@dataclass(frozen=True)
class Access:
    """Element accesses per element of the op's tensor, and the kernels that make them."""

    a16: float
    a32: float
    kernels: int

    def bytes_per_element(self, act_bytes: float) -> float:
        return self.a16 * act_bytes + self.a32 * 4.0


# One norm over the hidden vector. Fused (TE/apex, F.layer_norm in eager too): read x, write y.
NORM_FUSED = Access(2, 0, 1)
# torchtitan RMSNorm `(x.float() * rsqrt(x.pow(2).mean(-1) + eps)).type_as(x) * w` in eager: upcast
# (r16 w32), pow (r32 w32), mean (r32), mul (r32 w32), type_as (r32 w16), *weight (r16 w16), plus
# the two tiny add/rsqrt kernels on the row statistics.
RMSNORM_EAGER = Access(4, 7, 8)
# One residual add (Megatron's fused bias-dropout-add without dropout; a PyTorch add): read 2, write 1.
RESIDUAL = Access(3, 0, 1)
# Gated MLP activation per FFN element: fused SwiGLU reads gate and up and writes the product;
# eager `silu(w1 x) * w3 x` is silu (r1 w1) then mul (r2 w1). GELU: read 1, write 1, either way.
SWIGLU_FUSED = Access(3, 0, 1)
SWIGLU_EAGER = Access(5, 0, 2)
# GPT-OSS's clamped GLU (gate clamped to <= 7, linear half to [-7, 7]) in Megatron-Core, per element
# of the activation's output. Megatron-Bridge's GPT-OSS provider sets bias_activation_fusion with
# quick_gelu and activation_func_clamp_value 7.0 (gpt_oss_provider.py at v0.2.0 and v0.3.0, the
# 25.11 / 26.02 containers), so the experts call `weighted_bias_quick_geglu_impl`, which clamps
# outside its fused kernel (megatron/core/fusions/fused_bias_geglu.py, core_v0.15.0 and
# core_v0.16.0): `x_glu.clamp` (r1 w1) and `x_linear.clamp` (r1 w1), each over one half, then
# `torch.cat` of the two (r2 w2) into the fused kernel's input: 8 accesses, 3 kernels, before the
# fused activation itself (SWIGLU_FUSED). Its backward runs in autograd: each clamp's gradient
# masked by its saved input (at least r2 w1 per half) and the chunk's two gradients written back as
# one tensor (r2 w2), at least 10 accesses; it is charged at the layer's ELEMENTWISE_BWD_RATIO like
# every other elementwise op (16), the mask kernels' own traffic not counted separately.
GLU_CLAMP_SPLIT = Access(8, 0, 3)
# Routed experts with biases (GPT-OSS: Megatron-Bridge's provider sets add_bias_linear) in
# Megatron-Core's TEGroupedMLP, per element of the second GEMM's output (hidden per routed pair):
# that GEMM skips its bias (skip_bias_add=True) and `_apply_bias` adds each local expert's bias
# weighted by the routing probability as PyTorch ops (megatron/core/transformer/moe/experts.py,
# core_v0.15.0 and core_v0.16.0, the eager path still at 2026-08): per expert `b * p` (w1: the
# probabilities are in the router's dtype, the activations' unless moe_router_dtype is set, and
# Megatron-Bridge's GPT-OSS recipes set none) and `t + b * p` (r2 w1), then one `torch.cat` of
# the experts' rows (r1 w1): 6 accesses, 2 kernels per local expert and 1. Backward at the layer's
# ELEMENTWISE_BWD_RATIO (the bias and probability gradients reduce the incoming gradient).
EXPERT_BIAS_ACCESSES = 6
EXPERT_BIAS_KERNELS_PER_EXPERT = 2
GELU = Access(2, 0, 1)
# Rotary per query/key element: one fused kernel rotates q and k, reading and writing each once.
# torchtitan's `view_as_complex(x.float()) * freqs` then `.type_as(x)`: upcast (r16 w32), complex
# mul (r32 w32), downcast (r32 w16), three kernels for q and three for k.
ROTARY_FUSED = Access(2, 0, 1)
ROTARY_EAGER = Access(2, 4, 6)
# Megatron-Core's unfused rotary (`_apply_rotary_pos_emb_bshd`, megatron/core/models/common/
# embeddings/rope_utils.py, core_v0.15.0 and core_v0.16.0), which runs when apply_rope_fusion is
# off: `t * cos` (r1 w1), `_rotate_half` = `-x2` (r1/2 w1/2) and `torch.cat((-x2, x1))` (r1 w1),
# `* sin` (r1 w1), the add (r2 w1), and `torch.cat((t, t_pass))` with an empty t_pass (r1 w1), per
# query/key element: 12 accesses, 6 kernels (the cos/sin tables are per position, not per head).
ROTARY_MEGATRON_UNFUSED = Access(12, 0, 6)
# GQA without native support in the attention call (torchtitan's `repeat_kv` before SDPA, eager or
# compiled): K and V expanded to every query head, read kv width, write q width. Counted per
# element of the written (query-width) tensor: 1 write + kv/q reads, added by the caller.
# Hidden dropout (Megatron fused bias-dropout-add): a 1-byte mask written per element per residual;
# eager dropout is its own kernel: read and write the 16-bit tensor plus the mask.
DROPOUT_MASK_BYTES = 1.0
DROPOUT_EAGER = Access(2, 0, 1)

# Cross-entropy over the vocabulary, per logit element: (forward, backward) accesses.
# Unfused, in fp32 (PyTorch `F.cross_entropy(logits.float())`, eager): upcast (r16 w32), log_softmax
# in two passes (r32 r32 w32); backward: nll grad zero-fill (w32), log_softmax backward (r32 r32
# w32), downcast of the gradient (r32 w16).
CE_EAGER = (Access(1, 4, 2), Access(1, 5, 3))
# Megatron-Core `vocab_parallel_cross_entropy(logits.float())`: upcast (r16 w32), max (r32), subtract
# in place (r32 w32), exp in place (r32 w32), sum (r32), normalise in place for the backward (r32
# w32); backward: scale the saved softmax by the incoming gradient (r32 w32), downcast (r32 w16).
CE_MEGATRON = (Access(1, 9, 6), Access(1, 3, 2))
# torch.compile: one pass reading the 16-bit logits twice (max, then sum-exp and the picked logit);
# backward: read the logits, write the 16-bit gradient, in one kernel.
CE_COMPILED = (Access(2, 0, 1), Access(2, 0, 1))
CROSS_ENTROPY = {"fused": CE_MEGATRON, "eager": CE_EAGER, "compiled": CE_COMPILED}

# Adam step, bytes per local parameter. Fused (Megatron/Apex FusedAdam, one multi-tensor kernel):
# fp32 grad read 4, master weight read+write 8, two moments read+write 16, 16-bit weight write 2,
# grad-norm pass reading the grad again 4 = 34.
ADAM_FUSED_BYTES = 34.0
# torch.optim.AdamW foreach on fp32 parameters (FSDP keeps its shard in fp32): weight decay
# param.mul_ (r w) 8, exp_avg.lerp_ (r r w) 12, exp_avg_sq.mul_ (r w) 8 + addcmul_ (r r r w) 16,
# denom = sqrt (r w) 8, div (r w) 8, add eps (r w) 8, param.addcdiv_ (r r r w) 16; grad-norm
# clipping: norm (r) 4 + mul_ (r w) 8 = 96.
ADAM_FOREACH_BYTES = 96.0
ADAM_KERNELS = {"fused": 8, "foreach": 12}


def check_mode(mode: str) -> str:
    if mode not in KERNEL_MODES:
        raise ValueError(f"kernel mode {mode!r} is not one of {KERNEL_MODES}")
    return mode


def norm_access(mode: str, rms: bool) -> Access:
    """A norm: an RMSNorm written as PyTorch ops in eager; one kernel otherwise."""
    return RMSNORM_EAGER if (mode == "eager" and rms) else NORM_FUSED


def activation_access(mode: str, gated: bool) -> Access:
    if not gated:
        return GELU
    return SWIGLU_EAGER if mode == "eager" else SWIGLU_FUSED


def glu_clamp_access(mode: str, clamped: bool) -> Access | None:
    """The clamp a clamped GLU (GPT-OSS) runs before its activation, when it is its own kernels:
    Megatron-Core's (`fused` mode). The PyTorch-native modes' GPT-OSS code is not modelled (None)."""
    return GLU_CLAMP_SPLIT if clamped and mode == "fused" else None


def expert_bias_access(mode: str, biases: bool, local_experts: float) -> Access | None:
    """The routed experts' output bias added outside their grouped GEMM (Megatron-Core's
    `_apply_bias`, `fused` mode), over `local_experts` experts on this GPU; None otherwise."""
    if not biases or mode != "fused":
        return None
    return Access(EXPERT_BIAS_ACCESSES, 0, EXPERT_BIAS_KERNELS_PER_EXPERT * max(1, round(local_experts)) + 1)


def rotary_access(mode: str, fusable: bool = True) -> Access:
    """`fusable` False: a position embedding Megatron-Bridge does not fuse (YaRN as its own type,
    `ModelSpec.yarn_positions`), so Megatron-Core (`fused` mode) runs its unfused rotary."""
    if mode == "eager":
        return ROTARY_EAGER
    return ROTARY_MEGATRON_UNFUSED if mode == "fused" and not fusable else ROTARY_FUSED


def repeat_kv_bytes(mode: str, q_width: float, kv_width: float, act_bytes: float) -> float:
    """Per token: K and V expanded to the query heads (PyTorch SDPA path with GQA); 0 when fused."""
    if mode == "fused" or kv_width >= q_width:
        return 0.0
    return 2.0 * (kv_width + q_width) * act_bytes


def cross_entropy_bytes(mode: str, logits: float, act_bytes: float) -> tuple[float, float, int, int]:
    """(forward bytes, backward bytes, forward kernels, backward kernels) over `logits` elements."""
    f, b = CROSS_ENTROPY[check_mode(mode)]
    return (logits * f.bytes_per_element(act_bytes), logits * b.bytes_per_element(act_bytes), f.kernels, b.kernels)


def adam_bytes_per_param(mode: str, param_state: str = "megatron") -> tuple[float, int]:
    """(bytes per local parameter, kernels) of one Adam step: fused in Megatron-style stacks,
    torch.optim foreach in the PyTorch-native ones (torch.compile does not compile the optimizer).
    With `bf16_params` (cost.param_state) every tensor the step reads or writes is bf16, so each
    access is 2 bytes instead of 4: the foreach list's 24 accesses give 48 (the fused list, whose
    fp32 master and 16-bit copy become one bf16 weight, is taken at half too). `bf16_optimizer`
    (Apex DistributedFusedAdam with a bf16 state) reads and writes its parameter shard, m and v in
    bf16 too: the same half."""
    scale = 0.5 if param_state in ("bf16_params", "bf16_optimizer") else 1.0
    if check_mode(mode) == "fused":
        return ADAM_FUSED_BYTES * scale, ADAM_KERNELS["fused"]
    return ADAM_FOREACH_BYTES * scale, ADAM_KERNELS["foreach"]
