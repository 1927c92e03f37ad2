"""How large the sizes in a model description may be.

A model file is user input: a typo such as `num_hidden_layers: 1e20`, `hidden: 1.5` or `heads: 0`
must be one error naming the key, not a hang, an overflow or a silently truncated answer. The caps
are sanity bounds far above every published model (Llama 3.1 405B: 126 layers, hidden 16384;
vocabularies reach ~256K, contexts 10M tokens); they exist so that a runaway value is caught at
the edge, and nothing is tuned to them. Each kind's bound can be raised from the environment
(ENV: PARASIM_MAX_LAYERS, PARASIM_MAX_MODEL_COUNT for heads and experts, PARASIM_MAX_MODEL_DIM for
widths and vocabularies, PARASIM_MAX_CONTEXT for context lengths).
"""

from __future__ import annotations

import os
from typing import Any

from parasim.errors import InputError
from parasim.specs import edge

#: kind of size -> largest accepted value (each can be raised with its environment variable)
LIMITS = {"layers": 10_000, "count": 1_000_000, "width": 10_000_000, "context": 1_000_000_000}
#: kind of size -> the environment variable that overrides its limit (docs/limits.md)
ENV = {"layers": "PARASIM_MAX_LAYERS", "count": "PARASIM_MAX_MODEL_COUNT", "width": "PARASIM_MAX_MODEL_DIM",
       "context": "PARASIM_MAX_CONTEXT"}


def limit(kind: str) -> int:
    """The largest accepted size of `kind`: LIMITS, or its ENV variable when set."""
    return env_limit(ENV[kind], LIMITS[kind])


def env_limit(variable: str, default: int) -> int:
    """A sanity bound: environment `variable` when set (read per call, so a test or a long-lived
    process sees a change), else `default`; a malformed value is an error naming the variable."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 10**15:
        raise InputError(variable, f"must be a whole number in 1..10^15, got {raw!r}")
    return int(raw)

#: ModelSpec integer fields -> their kind (what is not listed is a width)
SPEC_KINDS = {"layers": "layers", "dense_layers": "layers", "heads": "count", "kv_heads": "count",
              "experts": "count", "experts_per_token": "count", "shared_experts": "count",
              "position_offset": "count", "max_seq_len": "context", "sliding_window": "context",
              "sliding_layers": "layers"}
#: ModelSpec integer fields that may be 0 (0 = none / the default)
SPEC_ZERO_OK = ("experts", "experts_per_token", "shared_experts", "moe_ffn_hidden", "dense_layers",
                "position_offset", "embed_dim", "ffn_hidden", "q_lora_rank", "sliding_layers")
SPEC_INT_FIELDS = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn_hidden", "vocab", "experts",
                   "experts_per_token", "shared_experts", "moe_ffn_hidden", "dense_layers", "max_seq_len",
                   "sliding_window", "sliding_layers", "position_offset", "embed_dim")
SPEC_BOOL_FIELDS = ("gated_mlp", "biases", "tied_embeddings", "learned_positions", "parallel_attn", "dropout",
                    "final_norm")

#: Hugging Face config keys -> their kind (what is not listed is a width)
HF_KINDS = {"num_hidden_layers": "layers", "n_layer": "layers", "first_k_dense_replace": "layers",
            "num_attention_heads": "count", "n_head": "count", "num_key_value_heads": "count",
            "num_kv_heads": "count", "num_local_experts": "count", "num_experts": "count",
            "n_routed_experts": "count", "num_experts_per_tok": "count", "n_shared_experts": "count",
            "decoder_sparse_step": "count", "moe_layer_freq": "count",
            "max_position_embeddings": "context", "n_positions": "context", "sliding_window": "context"}


def size(field: str, value: Any, kind: str, *, zero_ok: bool = False) -> int:
    """`value` as a whole number in 1..limit(kind) (0.. with zero_ok); anything else names `field`."""
    hint = f"a sanity bound far above every published model; set {ENV[kind]} to raise it"
    return edge.number(field, value, integer=True, lo=0 if zero_ok else 1, hi=limit(kind), hint=hint)


def spec_size(field: str, name: str, value: Any) -> int:
    """A ModelSpec integer field `name` checked as `size`."""
    return size(field, value, SPEC_KINDS.get(name, "width"), zero_ok=name in SPEC_ZERO_OK)


def hf_size(field: str, key: str, value: Any, *, zero_ok: bool = False) -> int:
    """A Hugging Face config key checked as `size`."""
    return size(field, value, HF_KINDS.get(key, "width"), zero_ok=zero_ok)
