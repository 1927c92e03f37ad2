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
"""

from __future__ import annotations

from parasim.cost.dtypes import dtype_bytes
from parasim.cost.memory import expert_tp
from parasim.cost.quant_bytes import quant_scope
from parasim.mathx import cdiv
from parasim.specs.model import ModelSpec

#: padding name -> (hidden multiple, intermediate-per-partition multiple); "none" keeps the checkpoint's shape
EXPERT_PADDING = {"none": (1, 1), "marlin": (256, 128)}


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
    return layers_on_stage * cdiv(model.experts, ep) * extra_per_expert * elem
