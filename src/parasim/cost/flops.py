"""Analytic FLOP counts per token: the conventions users compare against.

* Inference forward: 2 * N + attention, N = active matmul weights (LM head included, embedding
  lookup not), attention = 2 * ctx * heads * (qk_head_dim + v_head_dim) per layer for a token
  that attends `ctx` keys.
* Training model FLOPs: 6 * N + 3 x that forward attention, for a mean context `ctx` per token.
  Two contexts are in use, and a result reports both:
  - causal (parasim's headline MFU): the pairs the causal mask keeps, s(s+1)/2 per sequence of s
    tokens, i.e. ctx = (s + 1) / 2 - what a causal kernel executes and what the simulator costs,
    so MFU on it cannot pass 100 %;
  - Megatron / PaLM / NeMo (`ctx = s`): the full, non-causal s x s score matrix, as Megatron's
    72*B*s*L*h^2*(1 + s/6h + V/12hL) formula and NeMo's reported TFLOP/s count it. Published
    TFLOP/s and MFU use it; at long sequences it credits up to twice the attention executed and
    can pass 100 %.
* "Hardware FLOPs" add what recomputation does again: full recompute one more forward of every
  layer (Megatron's 96*B*s*L*h^2 form at ctx = s), selective recompute the attention core's forward,
  `op` (torchtitan's per-op selective checkpointing) every other matmul of the block.
"""

from __future__ import annotations

from parasim.cost.sac import recomputed_matmul_fraction
from parasim.specs.model import ModelSpec


def attention_flops_per_token_layer(model: ModelSpec, ctx: float) -> float:
    """Forward score + value FLOPs of one query attending `ctx` keys, one layer."""
    return 2.0 * ctx * model.heads * (model.qk_head_dim + model.v_head_dim)


def forward_flops_per_token(model: ModelSpec, ctx: float) -> float:
    return 2.0 * model.matmul_params_active + model.layers * attention_flops_per_token_layer(model, ctx)


def layer_matmul_params_active(model: ModelSpec) -> float:
    return model.matmul_params_active - model.edge_matmul_params


def causal_context(seq_len: float) -> float:
    """Mean keys a query attends under a causal mask: s(s+1)/2 pairs shared by s queries."""
    return (seq_len + 1) / 2.0


def training_model_flops_per_token(model: ModelSpec, ctx: float) -> float:
    """6N + forward and backward attention (3x the forward) of a token attending `ctx` keys:
    ctx = causal_context(s) for the executed (causal) count, ctx = s for Megatron's convention."""
    return 6.0 * model.matmul_params_active + 3.0 * model.layers * attention_flops_per_token_layer(model, ctx)


def training_hardware_flops_per_token(model: ModelSpec, ctx: float, recompute: str) -> float:
    """Model FLOPs plus the forward work recomputation repeats, at the same attention context."""
    base = training_model_flops_per_token(model, ctx)
    if recompute == "full":
        return base + 2.0 * layer_matmul_params_active(model) + model.layers * attention_flops_per_token_layer(model, ctx)
    if recompute == "selective":
        return base + model.layers * attention_flops_per_token_layer(model, ctx)
    if recompute == "selective_op":
        return base + 2.0 * recomputed_matmul_fraction(model) * layer_matmul_params_active(model)
    return base
