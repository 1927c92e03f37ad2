"""What an MoE layer holds for its backward beyond a dense layer's, and what Megatron-Core's
selective recomputation modules give back.

Megatron-Core's MoE layer (alltoall dispatcher, grouped GEMM) keeps, per micro-batch:

* the permuted tokens: each of this GPU's routed tokens copied once per chosen expert (k copies
  of the hidden vector, 16-bit), gathered over the etp ranks of an expert: the input of the
  experts' first GEMM, saved for its weight gradient;
* the router's fp32 probabilities over all experts (the softmax / top-k backward needs them);
* the experts' first-GEMM output and the activation's output (counted with the MLP in
  `cost.memory.activation_bytes_per_layer`, at the routed width).

`--recompute-granularity selective --recompute-modules` (Megatron-Core 0.12+) names what is
recomputed in the backward instead of kept (`RECOMPUTE_MODULES`): `core_attn` (the default: the
attention core), `moe_act` (the experts' activation function: its output is not kept), `layernorm`
(the two norms of the layer: their outputs, the attention and MLP inputs, are not kept) and
`mla_up_proj` (multi-head latent attention's up-projections: Q, K and V are rebuilt from the kept
latents).

`layernorm` recomputes only a norm that is a module of its own (`recomputed_norms`): Megatron-Core
skips a norm its layer spec fused into the next linear layer (an `IdentityOp` in the layer,
megatron/core/transformer/transformer_layer.py, `recompute_input_layernorm` /
`recompute_pre_mlp_layernorm`, Megatron-LM core_v0.15.0 and commit 0d8e0714, the Megatron-Bridge
v0.2.0 pin). With Transformer Engine (`TESpecProvider.fuse_layernorm_and_linear()`,
megatron/core/models/gpt/gpt_layer_specs.py) the input norm of GQA/MHA attention is fused into the
QKV projection (`TELayerNormColumnParallelLinear`, which keeps its own normed output for the weight
gradient) and the pre-MLP norm of a dense MLP into its first linear; multi-latent attention's input
norm (`fuse_input_layernorm: False`) and an MoE layer's pre-MLP norm (moe_module_specs.py
`fuse_pre_mlp_layernorm: False`: the router and the dispatcher read the normed tokens) stay separate
and are the ones recomputed. A graphed scope keeps its norm too (commit 0d8e0714: not the input
norm with `attn` graphed, not an MoE layer's pre-MLP norm with `moe_router` graphed).
"""

from __future__ import annotations

from parasim.specs.model import ModelSpec

RECOMPUTE_MODULES = ("core_attn", "moe_act", "layernorm", "mla_up_proj")
#: the fp32 router probabilities, bytes per expert per routed token
ROUTER_PROB_BYTES = 4.0


def moe_buffer_bytes_per_token(model: ModelSpec, *, tp: int, etp: int, sp: bool, act_bytes: float = 2.0,
                               load: float = 1.0) -> float:
    """Bytes per token of the micro-batch (on this GPU's TP group) an MoE layer keeps on one GPU
    beyond the dense-style terms: permuted tokens (k x hidden, `load` = the busiest rank's share
    over the mean, gathered over etp) and router probabilities. Each GPU routes its
    sequence-parallel shard (1/tp of the tokens) when SP is on, all of them otherwise."""
    if not model.is_moe:
        return 0.0
    share = 1.0 / tp if sp else 1.0
    permuted = etp * model.experts_per_token * model.hidden * act_bytes * load
    return share * (permuted + model.experts * ROUTER_PROB_BYTES)


def recomputed_norms(model: ModelSpec, modules: frozenset[str], *, fused_norms: bool = True,
                     graph_scopes: frozenset[str] = frozenset(), moe_layer: bool | None = None) -> float:
    """How many norm outputs per layer `layernorm` recomputation drops (module docstring): the
    input norm when it is a module of its own (multi-latent attention, or no Transformer Engine
    fusion: `fused_norms` False) and not graphed with `attn`; the pre-MLP norm of an MoE layer
    (of a dense MLP layer only without the fusion) unless `moe_router` is graphed. `moe_layer`:
    one layer's kind; None = the average layer of the model (its MoE layers' share). A model whose
    attention and MLP share one norm (`parallel_attn`) has only the input norm."""
    if "layernorm" not in modules:
        return 0.0
    n = 1.0 if (model.mla is not None or not fused_norms) and "attn" not in graph_scopes else 0.0
    if model.parallel_attn:
        return n
    moe_share = model.moe_layer_share if moe_layer is None else float(moe_layer)
    moe_norm = 0.0 if "moe_router" in graph_scopes else moe_share
    return n + (moe_norm + (1.0 - moe_share) if not fused_norms else moe_norm)


def recompute_freed_units(model: ModelSpec, modules: frozenset[str], linear_input: float = 1.0, *,
                          fused_norms: bool = True, graph_scopes: frozenset[str] = frozenset()) -> tuple[float, float]:
    """What the recomputed modules stop keeping, in the units of `activation_bytes_per_layer`
    (bytes per token per hidden element at 16-bit): (replicated over TP unless SP, split over TP).
    `linear_input`: a linear layer's saved input over a 16-bit activation (there: `lin`); the norm
    outputs and the experts' activation output are such inputs. `fused_norms`, `graph_scopes`:
    which norms `layernorm` can drop (`recomputed_norms`)."""
    h = model.hidden
    replicated = split = 0.0
    if "layernorm" in modules:  # the norm outputs that are modules of their own: QKV and / or MLP inputs
        n = recomputed_norms(model, modules, fused_norms=fused_norms, graph_scopes=graph_scopes)
        # an MoE layer's pre-MLP norm output is kept at 16 bits (`activation_bytes_per_layer`), the
        # others as a linear layer's saved input
        moe_norm = model.moe_layer_share if not model.parallel_attn and "moe_router" not in graph_scopes else 0.0
        replicated += 2.0 * (linear_input * (n - moe_norm) + moe_norm)
    if "moe_act" in modules and model.is_moe:  # the routed experts' activation output
        split += 2.0 * model.moe_ffn_hidden * model.experts_per_token / h * linear_input
    if "mla_up_proj" in modules and model.mla is not None:  # Q, K and V rebuilt from the latents
        split += 2.0 * model.q_dim / h + 2.0 * (2 * model.kv_heads * model.head_dim) / h
    return replicated, split
