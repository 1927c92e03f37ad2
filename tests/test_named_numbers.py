"""#17 item 4: numbers with names and sources, each rule in one place."""

from __future__ import annotations

import pytest

from parasim.cost.dtypes import BYTES_PER_ELEMENT, attention_dtype
from parasim.cost.roofline import attention_time_s
from parasim.specs.catalog import get_accelerator


@pytest.mark.parametrize("dtype", sorted(BYTES_PER_ELEMENT))
def test_attention_runs_in_16_bit_or_wider(dtype):
    """8- and 4-bit formats run attention in bf16; 16- and 32-bit formats keep their own."""
    expected = dtype if dtype in ("fp32", "tf32", "bf16", "fp16") else "bf16"
    assert attention_dtype(dtype) == expected


@pytest.mark.parametrize("low", ["fp8", "int8", "int4", "fp4"])
def test_attention_time_of_8_bit_equals_bf16(low):
    """The roofline applies the rule: an 8-bit attention takes the bf16 time, not the 8-bit peak's."""
    acc = get_accelerator("h100-sxm")
    flops, bytes_ = 3e13, 1e9
    assert acc.peak("fp8") > acc.peak("bf16")  # otherwise the check below could not fail
    assert attention_time_s(flops, bytes_, acc, dtype=low) == attention_time_s(flops, bytes_, acc, dtype="bf16")
