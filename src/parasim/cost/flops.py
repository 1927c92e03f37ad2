"""Analytic FLOP counts per token: the conventions users compare against.

* Inference forward: 2 * N + attention, N = active matmul weights (LM head included, embedding
  lookup not), attention = 2 * ctx * heads * (qk_head_dim + v_head_dim) per layer for a token
  that attends `ctx` keys.
* Training "model FLOPs" (MFU; PaLM / Megatron / NeMo convention): 6 * N + 6 * seq * heads *
  (qk + v) per layer, counting the full (non-causal) s x s score matrix as Megatron's
  72*B*s*L*h^2*(1 + s/6h + V/12hL) formula and NeMo's reported TFLOP/s do.
* "Hardware FLOPs" add what recomputation does again: full recompute one more forward of every
  layer (Megatron's 96*B*s*L*h^2 form), selective recompute the attention core's forward.
"""

from __future__ import annotations

from parasim.specs.model import ModelSpec


def attention_flops_per_token_layer(model: ModelSpec, ctx: float) -> float:
    """Forward score + value FLOPs of one query attending `ctx` keys, one layer."""
    return 2.0 * ctx * model.heads * (model.qk_head_dim + model.v_head_dim)


def forward_flops_per_token(model: ModelSpec, ctx: float) -> float:
    return 2.0 * model.matmul_params_active + model.layers * attention_flops_per_token_layer(model, ctx)


def layer_matmul_params_active(model: ModelSpec) -> float:
    return model.matmul_params_active - model.edge_matmul_params


def training_model_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """6N + attention (non-causal convention), per trained token."""
    return 6.0 * model.matmul_params_active + 3.0 * model.layers * attention_flops_per_token_layer(model, seq_len)


def training_hardware_flops_per_token(model: ModelSpec, seq_len: int, recompute: str) -> float:
    base = training_model_flops_per_token(model, seq_len)
    if recompute == "full":
        return base + 2.0 * layer_matmul_params_active(model) + model.layers * attention_flops_per_token_layer(model, seq_len)
    if recompute == "selective":
        return base + model.layers * attention_flops_per_token_layer(model, seq_len)
    return base
