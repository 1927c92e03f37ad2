"""The grouped expert GEMM's MMA rate against the dense GEMM's (cost.moe_tile.grouped_gemm_rate).

DeepGEMM's README (February 2025 table, H800) states every speedup against one CUTLASS 3.6 baseline:
1.1, 1.0, 1.0, 1.2, 1.1, 1.1 on the six dense rows at M = 4096 and 1.2, 1.2, 1.2, 1.1 (contiguous)
and 1.2, 1.2, 1.2, 1.2, 1.1, 1.2 (masked) on the ten grouped MoE rows. By hand: the baseline's
grouped rate over its dense rate is (6.5 / 6) / (11.8 / 10) = 0.918. TensorRT-LLM's Hopper MoE
runner is that kind of kernel (the `cutlass` family); the rate scales the compute side only, so a
compute-bound prefill's expert GEMMs take 1 / 0.918 as long and a weight-bound decode's do not move.
Where nothing was measured for it (Ampere, Marlin weight-only kernels, training's grouped GEMMs)
the CUTLASS rate stays 1; the Triton family has its own 16-bit prefill rate
(tests/test_cost_moe_triton_prefill.py) and keeps 1 for FP8 experts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.cost.layer import LayerCost, Sharding, op_time_s
from parasim.cost.moe_tile import CUTLASS_GROUPED_RATE, grouped_gemm_rate
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

H100 = get_accelerator("h100-sxm")
A100 = get_accelerator("a100-sxm-80gb")
MIXTRAL = get_model("mixtral-8x7b")


def _experts(acc, tokens: float, *, gemm: str = "cutlass", weights: str = "fp8", sharding: Sharding | None = None):
    s = sharding or Sharding(tp=2)
    layer = LayerCost(MIXTRAL, ClusterSpec(accelerator=acc, gpus=8), s, weight_dtype=weights,
                      act_dtype="fp8" if weights == "fp8" else "bf16", moe_gemm=gemm)
    return [o for o in layer.token_ops(tokens, moe=True) if o.name.startswith("experts_")]


def _dense_rate_s(op, acc) -> float:
    return op_time_s(replace(op, rate=1.0), acc)


def test_rate_is_the_readmes_speedups_by_hand():
    assert CUTLASS_GROUPED_RATE == pytest.approx((6.5 / 6) / (11.8 / 10), rel=1e-12)
    assert CUTLASS_GROUPED_RATE == pytest.approx(0.918, abs=5e-4)


def test_compute_bound_prefill_takes_one_over_the_rate():
    """8,192 tokens at TP 2: 2,048 rows per expert, FP8 on an H100, far above the ridge (the bytes
    are a few percent of the time), so both the padded compute floor and the ridge term scale by
    1 / rate."""
    for op in _experts(H100, 8192.0):
        assert op.rate == CUTLASS_GROUPED_RATE
        assert op_time_s(op, H100) / _dense_rate_s(op, H100) == pytest.approx(1.0 / CUTLASS_GROUPED_RATE, rel=0.02)


def test_weight_bound_decode_does_not_move():
    """One 16-bit decode token: each touched expert reads its whole weights for one row, so the
    time is the bytes over the bandwidth at any MMA rate."""
    for op in _experts(H100, 1.0, weights="bf16"):
        assert op_time_s(op, H100) == pytest.approx(_dense_rate_s(op, H100), rel=1e-12)


@pytest.mark.parametrize("case", ["ampere", "triton", "training", "weight_only"])
def test_unmeasured_kernels_keep_the_dense_rate(case):
    if case == "ampere":
        ops = _experts(A100, 8192.0, weights="bf16")
    elif case == "triton":  # FP8 experts: the Triton family's rate is measured for 16-bit ones only
        ops = _experts(H100, 8192.0, gemm="triton")
    elif case == "training":  # Megatron-Core's folded layout: TE's grouped GEMMs, not a serving runner
        ops = _experts(H100, 8192.0, weights="bf16", sharding=Sharding(tp=2, etp=2))
    else:
        ops = _experts(H100, 8192.0, weights="int4")  # INT4 runs weight-only (Marlin) in every engine
    assert ops and all(o.rate == 1.0 for o in ops)


def test_rate_function_by_family_and_generation():
    assert grouped_gemm_rate("cutlass", "hopper", weight_only=False, dtype="fp8") == CUTLASS_GROUPED_RATE
    assert grouped_gemm_rate("cutlass", "hopper", weight_only=False, dtype="bf16") == CUTLASS_GROUPED_RATE
    assert grouped_gemm_rate("cutlass", "hopper", weight_only=True, dtype="bf16") == 1.0
    # the Triton family's FP8 experts: no tuned prefill sweep (its 16-bit rate: test_cost_moe_triton_prefill.py)
    assert grouped_gemm_rate("triton", "hopper", weight_only=False, dtype="fp8") == 1.0
    assert grouped_gemm_rate("cutlass", "ampere", weight_only=False, dtype="bf16") == 1.0
    assert grouped_gemm_rate("cutlass", "blackwell", weight_only=False, dtype="fp8") == 1.0


@settings(max_examples=40, deadline=None)
@given(tokens=hst.floats(1.0, 32768.0))
def test_a_slower_mma_never_speeds_up_and_never_costs_more_than_its_inverse(tokens):
    """max(compute / rate, memory) lies between max(compute, memory) and max(compute, memory) / rate."""
    for op in _experts(H100, tokens):
        t, dense = op_time_s(op, H100), _dense_rate_s(op, H100)
        assert dense * (1 - 1e-12) <= t <= dense / CUTLASS_GROUPED_RATE * (1 + 1e-12)
