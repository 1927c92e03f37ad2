"""How a training stack stores each parameter's state, and the 16-bit copies it holds on top.

Bytes per parameter (weights, gradients, optimizer), before ZeRO/FSDP sharding:

* ``megatron`` (default): Megatron-Core mixed precision. 16-bit parameters, main gradients in the
  gradient dtype (fp32 unless `grad_dtype` says bf16), and the optimizer's fp32 master copy plus
  Adam m and v (12 B): 18 B, Megatron's theoretical-memory rule.
* ``fp32_params``: PyTorch's own mixed precision (FSDP / FSDP2 `MixedPrecision(Policy)`, or
  `torch.autocast`). The parameter is fp32 and is itself the master copy; the sharded gradient is
  kept in the parameter's dtype (FSDP casts the reduced gradient back to it, whatever the reduce
  dtype); AdamW's m and v are fp32: 4 + 4 + 8 = 16 B. The 16-bit copies the matmuls read are
  transient (`gathered_bytes`).
* ``bf16_params``: the model itself cast to bf16 (`model.to(torch.bfloat16)`) with no fp32 master:
  `torch.optim.AdamW` keeps m and v in the parameter's dtype: 2 + 2 + 4 = 8 B (KempnerForge's
  `mixed_precision: bf16`, read from its `TrainConfig.param_dtype` and `build_optimizer`).
* ``bf16_optimizer``: Megatron-style 16-bit parameters and main gradients (the gradient dtype), with
  the optimizer's state in bf16: Apex's DistributedFusedAdam, which NeMo wraps as
  `distributed_fused_adam`, takes `dtype` as "datatype for optimizer state" and by default
  (`store_params=True`) keeps its own shard of the parameters in that dtype beside Adam's m and v,
  so NeMo's `optim.dtype: bf16` (the Nemotron-4 340B recipe) stores 2 + 2 + 2 = 6 B of optimizer
  state where Megatron stores 12: 2 + grad + 6 B in all.
"""

from __future__ import annotations

PARAM_STATES = ("megatron", "fp32_params", "bf16_params", "bf16_optimizer")

#: states whose 16-bit parameters are the model's own (Megatron's layout): no transient 16-bit
#: copies at the peak, and Transformer Engine's FP8 weights are held beside them
MEGATRON_LAYOUT = ("megatron", "bf16_optimizer")

#: a 16-bit copy of a parameter or gradient, bytes
HALF_BYTES = 2.0


def bytes_per_param(state: str, grad_bytes: float) -> tuple[float, float, float]:
    """(weight, gradient, optimizer) bytes per parameter of `state` (module docstring)."""
    if state == "fp32_params":
        return 4.0, 4.0, 8.0
    if state == "bf16_params":
        return HALF_BYTES, HALF_BYTES, 2 * HALF_BYTES
    if state == "bf16_optimizer":
        return HALF_BYTES, grad_bytes, 3 * HALF_BYTES
    return HALF_BYTES, grad_bytes, 12.0


def gathered_bytes(state: str, *, params: float, edge_params: float, layers: int, sharded: bool,
                   grad_bytes: float, pipelined: bool = False) -> tuple[float, float]:
    """(weights, gradients) bytes one GPU holds beyond its state at the activation peak (the end of
    the forward, the start of the backward): the unsharded 16-bit copies PyTorch's own stacks make.
    Megatron keeps its 16-bit parameters as state, so it holds none.

    Sharded (FSDP, one unit per layer plus the root: embedding, final norm and head, `edge_params`):
    `fully_shard` does not reshard the root after the forward (its docstring: the root's parameters
    would be all-gathered again at once for the backward), so the root stays gathered, and so does
    the block being computed plus the one prefetched; the head's unsharded gradient lives until the
    root's reduce-scatter at the end of the backward, and each block's unsharded gradient (16-bit)
    and its reduce-scatter input (in the reduce dtype, `grad_bytes`) exist while it is reduced.
    Sharded and `pipelined` (a stage of a pipeline runs many micro-batches): torchtitan sets
    `reshard_after_forward = not pp_enabled`, so the whole stage stays gathered, and the pipeline
    schedule turns FSDP's gradient sync off until the last micro-batch, so FSDP2 accumulates every
    unsharded gradient in the reduce dtype (its `unsharded_accumulated_grad`) until then.
    Unsharded `fp32_params` (torch.autocast): the 16-bit casts of every weight, kept by autograd for
    each layer's backward."""
    if state in MEGATRON_LAYOUT:
        return 0.0, 0.0
    if sharded and pipelined:
        return HALF_BYTES * params, grad_bytes * params
    if sharded:
        layer = max(params - edge_params, 0.0) / max(layers, 1)
        return (HALF_BYTES * (edge_params + 2 * layer),
                HALF_BYTES * edge_params + (HALF_BYTES + grad_bytes) * layer)
    if state == "fp32_params":
        return HALF_BYTES * params, 0.0
    return 0.0, 0.0
