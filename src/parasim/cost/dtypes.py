"""Bytes per element for every precision parasim knows."""

from __future__ import annotations

from parasim.errors import InputError

BYTES_PER_ELEMENT: dict[str, float] = {
    "fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "fp4": 0.5,
}
TRAINING_PRECISIONS = ("bf16", "fp16", "fp8")
WEIGHT_PRECISIONS = ("bf16", "fp16", "fp8", "int8", "int4", "fp4")
KV_PRECISIONS = ("bf16", "fp16", "fp8", "int8", "int4", "fp4")


def dtype_bytes(dtype: str, *, field: str = "dtype") -> float:
    try:
        return BYTES_PER_ELEMENT[dtype]
    except KeyError:
        raise InputError(field, f"unknown precision '{dtype}'; allowed: {', '.join(BYTES_PER_ELEMENT)}") from None


def attention_dtype(dtype: str) -> str:
    """The dtype attention's matmuls run in: formats narrower than 16 bits run it in bf16.

    Transformer Engine keeps softmax(QK^T)V and the activations around it in bf16 in FP8 training,
    and serving kernels dequantize an 8- or 4-bit KV cache to 16 bits before the attention math.
    """
    return "bf16" if BYTES_PER_ELEMENT.get(dtype, 2.0) < 2.0 else dtype


def check_choice(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(field, f"'{value}' is not allowed; choose one of {', '.join(allowed)}")
    return value

