"""Routed-expert weights an engine pads to its MoE kernel's tile before serving.

Some grouped-GEMM kernels need each expert matrix's dimensions to be multiples of their tile, so
the engine allocates the experts at the padded shape and copies the checkpoint into it; the
padding is device memory like any weight (it shows in the engine's "Model loading took" line) and
is what leaves less room for the KV cache.

vLLM's MXFP4 MoE method (`vllm/model_executor/layers/quantization/mxfp4.py`,
`Mxfp4MoEMethod.create_weights`) allocates `w13` as (experts, 2 x intermediate', hidden') and
`w2` as (experts, hidden', intermediate'), where for the Marlin backend "the moe marlin kernel
requires that for each linear n % 256 == 0 and k % 128 == 0": intermediate per partition rounded
up to 128 and hidden to 256. gpt-oss (hidden = intermediate = 2,880) thus holds 2,944 x 3,072
expert matrices, 9.0 % more expert bytes. The Triton backend rounds only the intermediate size
to 64 (2,880 is a multiple: no padding); the FlashInfer backends of Blackwell round both to 256
or 128, which parasim does not model (no measurement to check it against).

The Triton backend on Hopper (`triton_hopper`) holds more than the padded checkpoint: its
`process_weights_after_loading` (same file) casts both expert biases to float32 and passes the
weights and their E8M0 scales through `_swizzle_mxfp4` (`quantization/utils/mxfp4_utils.py`) into
triton_kernels' Hopper layouts. The swizzled weights replace the loaded ones (`del
layer.w13_weight`), but the loaded scale parameters (`layer.w13_weight_scale`, `w2_weight_scale`)
are never released while the swizzled scales live on in the PrecisionConfig: the scales are held
twice. triton_kernels' Hopper scale layout (`swizzle_mxfp4_scale_hopper`, triton-lang/triton
python/triton_kernels/.../hopper_scale.py) pads each expert's scale matrix, output rows by
reduction columns, to rows a multiple of 2 x num_warps x 2 x 8 = 256 (num_warps 8, vLLM's value
outside the batched DeepEP / pplx formats) and columns a multiple of 2. The Hopper value layout of
the triton_kernels those releases used pads the packed weights only to its 16 x 32-byte tile
(memory_layout/hopper_value.py pads each axis only to its tile), which gpt-oss's shapes already are: no value
padding. vLLM only swizzles on Hopper with torch >= 2.8.1 (`_swizzle_mxfp4`: older torch keeps
triton_kernels' strided layout), i.e. from vLLM 0.11.1 (torch 2.9, vllm issue #27228), until PR #46549
(merged 2026-06-24, taken as from 0.24) frees the loaded scales.
"""

from __future__ import annotations

from parasim.cost.dtypes import dtype_bytes
from parasim.cost.memory import expert_tp
from parasim.cost.quant_bytes import quant_scope
from parasim.mathx import cdiv
from parasim.specs.model import ModelSpec

#: padding name -> (hidden multiple, intermediate-per-partition multiple); "none" keeps the checkpoint's shape
EXPERT_PADDING = {"none": (1, 1), "marlin": (256, 128), "triton_hopper": (1, 64)}

#: triton_kernels' Hopper MX scale layout: rows a multiple of 2 x num_warps x 2 x 8 with vLLM's
#: num_warps = 8 (mxfp4.py, non-batched MoE), columns a multiple of 2 (hopper_scale.py SWIZZLE_ALIGN_M/K)
TRITON_HOPPER_SCALE_ROWS = 2 * 8 * 2 * 8
TRITON_HOPPER_SCALE_COLS = 2
#: MXFP4: one E8M0 byte per 32 elements along the reduction axis (OCP MX spec)
MXFP4_BLOCK = 32
#: bytes of a float32 expert bias (mxfp4.py casts w13_bias / w2_bias `.to(torch.float32)` for Triton)
FP32_BYTES = 4.0


def round_up(n: int, multiple: int) -> int:
    return cdiv(n, multiple) * multiple


def expert_padding_bytes_per_gpu(model: ModelSpec, *, tp: int, pp: int, ep: int, weights: str,
                                 padding: str) -> float:
    """Bytes the `padding` adds to one GPU's routed experts (the stage with the most MoE layers):
    each expert matrix grows from hidden x (intermediate / expert TP) to the padded shape, at the
    bytes per element the experts are stored in (their quantized format's, scales included)."""
    hm, fm = EXPERT_PADDING[padding]
    if not model.is_moe or (hm, fm) == (1, 1):
        return 0.0
    etp = expert_tp(tp, ep)
    part = model.moe_ffn_hidden // etp
    extra_per_expert = model.mlp_matrices * (round_up(model.hidden, hm) * round_up(part, fm) - model.hidden * part)
    scope = quant_scope(model, weights)
    if scope is None:
        elem = dtype_bytes(weights, field="weights")
    else:
        elem = scope.element_bytes if scope.experts else 2.0
    moe_layers = model.layers - model.dense_layers
    layers_on_stage = min(cdiv(model.layers, pp), moe_layers)
    extra = extra_per_expert * elem
    if padding == "triton_hopper" and scope is not None and scope.experts and model.weight_scales == "mxfp4":
        extra += triton_hopper_resident_bytes_per_expert(model, part, elem)
    return layers_on_stage * cdiv(model.experts, ep) * extra


def triton_hopper_resident_bytes_per_expert(model: ModelSpec, part: int, elem: float) -> float:
    """What vLLM's Triton MXFP4 path on Hopper holds per expert beyond the padded checkpoint:
    the swizzled (padded) copy of both scale matrices next to the loaded ones, and the biases in
    float32 where the checkpoint count charges them at `elem` bytes."""
    padded = round_up(part, EXPERT_PADDING["triton_hopper"][1])
    up_rows = (model.mlp_matrices - 1) * padded  # w13: output rows x hidden / 32 scale columns
    swizzled = (round_up(up_rows, TRITON_HOPPER_SCALE_ROWS) * round_up(model.hidden // MXFP4_BLOCK, TRITON_HOPPER_SCALE_COLS)
                + round_up(model.hidden, TRITON_HOPPER_SCALE_ROWS) * round_up(padded // MXFP4_BLOCK, TRITON_HOPPER_SCALE_COLS))
    biases = 0.0
    if model.biases:
        biases = (up_rows + model.hidden) * FP32_BYTES - ((model.mlp_matrices - 1) * part + model.hidden) * elem
    return float(swizzled) + biases
