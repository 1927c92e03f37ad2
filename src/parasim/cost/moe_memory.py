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


def recompute_freed_units(model: ModelSpec, modules: frozenset[str], linear_input: float = 1.0) -> tuple[float, float]:
    """What the recomputed modules stop keeping, in the units of `activation_bytes_per_layer`
    (bytes per token per hidden element at 16-bit): (replicated over TP unless SP, split over TP).
    `linear_input`: a linear layer's saved input over a 16-bit activation (there: `lin`); the norm
    outputs and the experts' activation output are such inputs."""
    h = model.hidden
    replicated = split = 0.0
    if "layernorm" in modules:  # the two norm outputs: the QKV and MLP inputs (one when they share a norm)
        replicated += (2.0 if model.parallel_attn else 4.0) * linear_input
    if "moe_act" in modules and model.is_moe:  # the routed experts' activation output
        split += 2.0 * model.moe_ffn_hidden * model.experts_per_token / h * linear_input
    if "mla_up_proj" in modules and model.mla is not None:  # Q, K and V rebuilt from the latents
        split += 2.0 * model.q_dim / h + 2.0 * (2 * model.kv_heads * model.head_dim) / h
    return replicated, split
