"""Op-level selective activation checkpointing, as torchtitan runs it.

torchtitan's `activation_checkpoint.mode = "selective"` with `selective_ac_option = "op"` wraps
each transformer block in PyTorch's selective checkpoint with a policy that saves the outputs of
the ops in its save list (aten.mm, the fused attention kernels, reduce-scatter, max) except every
second aten.mm, counted per block in execution order (torchtitan/distributed/activation_checkpoint.py,
`_custom_policy`: `to_save = func in _save_list and not (func == mm and mm_count % 2 == 0)`).
Everything else (norms, RoPE, the activation function, the skipped matmuls) is recomputed in the
backward from the block input and what was saved. This is not Megatron's "selective" (which
recomputes only the attention core): it saves far less and recomputes part of the GEMMs.

A block's matmuls run Q, K, V, output projection, then the MLP (gate, up, down for SwiGLU; fc1,
fc2 for a GELU MLP), so the 1st, 3rd, 5th and 7th are saved: Q, V, gate and down for a Llama
block. An MoE block's expert GEMMs are counted as one dense MLP of the routed width (an
approximation: torchtitan's grouped GEMMs are not aten.mm).
"""

from __future__ import annotations

from parasim.specs.model import ModelSpec


def block_matmuls(model: ModelSpec) -> list[tuple[float, bool, float]]:
    """A block's matmuls in execution order: (output width per token, column-parallel (its output
    split by TP), parameters)."""
    h, kv = model.hidden, model.kv_heads * model.head_dim
    attn_out = model.heads * model.v_head_dim
    width = (model.moe_ffn_hidden * (model.experts_per_token + model.shared_experts) if model.is_moe
             else model.ffn_hidden)
    mm = [(model.q_dim, True, h * model.q_dim), (kv, True, h * kv), (kv, True, h * kv), (h, False, attn_out * h)]
    if model.gated_mlp:
        mm += [(width, True, h * width), (width, True, h * width)]
    else:
        mm += [(width, True, h * width)]
    return mm + [(h, False, width * h)]


def saved_bytes_per_token(model: ModelSpec, *, tp: int = 1, sp: bool = False, act_bytes: float = 2.0) -> float:
    """Bytes one block keeps per token on one GPU: the block input (split by TP only with
    sequence parallelism), every other matmul output (column-parallel ones split by TP; a
    row-parallel output is the full-width partial sum before its reduction), the attention
    output and its fp32 log-sum-exp (one per head)."""
    saved = model.hidden / (tp if sp else 1)
    for i, (width, column, _) in enumerate(block_matmuls(model)):
        if i % 2 == 0:
            saved += width / tp if column else width
    saved += model.heads * model.v_head_dim / tp
    return saved * act_bytes + 4.0 * model.heads / tp


def dots_saved_bytes_per_token(model: ModelSpec, *, tp: int = 1, sp: bool = False, act_bytes: float = 2.0) -> float:
    """Bytes one block keeps per token on one GPU when every weight matmul's output is saved and the
    elementwise ops are recomputed (JAX's `checkpoint_dots_with_no_batch_dims`, which MaxText's remat
    policies minimal / minimal_flash use; minimal_flash also saves the attention output, 'context'):
    the block input, every matmul output (TP-split as in `saved_bytes_per_token`), the attention
    output and its fp32 log-sum-exp."""
    saved = model.hidden / (tp if sp else 1)
    for width, column, _ in block_matmuls(model):
        saved += width / tp if column else width
    saved += model.heads * model.v_head_dim / tp
    return saved * act_bytes + 4.0 * model.heads / tp


def recomputed_matmul_fraction(model: ModelSpec) -> float:
    """Share of a block's matmul FLOPs the backward repeats: the matmuls whose outputs were not saved."""
    mm = block_matmuls(model)
    return sum(p for i, (_, _, p) in enumerate(mm) if i % 2 == 1) / sum(p for _, _, p in mm)
