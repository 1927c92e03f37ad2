"""GEMMs near the ridge point: published sweeps over M on H100 against the roofline.

vLLM PR 49363 ("[Benchmark] Add FP8 block-scaled GEMM to fp8_gemm benchmark",
https://github.com/vllm-project/vllm/pull/49363, description, "H100 benchmarks for
google/gemma-4-31B-it") prints TFLOP/s of torch's BF16 GEMM and of vLLM's per-tensor FP8 GEMM
(column fp8-tensor-w-tensor-a-noquant, no activation-quantization kernel) for the model's
(N, K) shapes at batch sizes M = 1 .. 256. Time = 2 M N K / rate. The FP8 column sets the
catalog's `gemm_ridge_p_fp8`; the BF16 column is the check that 16-bit GEMMs stay sharp.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_accelerator
from parasim.cost.roofline import gemm_flops_bytes, gemm_roofline_s, gemm_time_s, ridge_time_s
from parasim.errors import InputError
from parasim.specs.accelerator import Efficiency
from parasim.specs.catalog import get_accelerator

# (N, K, M, published TFLOP/s)
H100_BF16 = [(12288, 5376, 1, 2.870333), (12288, 5376, 16, 46.541434), (12288, 5376, 64, 182.588263),
             (12288, 5376, 128, 352.560566),
             (43008, 5376, 1, 3.072025), (43008, 5376, 16, 48.328807), (43008, 5376, 64, 187.994464),
             (43008, 5376, 128, 364.745064), (43008, 5376, 256, 593.264799)]
H100_FP8 = [(12288, 5376, 1, 5.162899), (12288, 5376, 16, 83.053145), (12288, 5376, 64, 318.410871),
            (12288, 5376, 128, 581.821280),
            (43008, 5376, 1, 6.077129), (43008, 5376, 16, 93.962340), (43008, 5376, 64, 356.667172),
            (43008, 5376, 128, 647.281778)]


def _ratio(acc, n, k, m, tflops, dtype):
    wb = 1.0 if dtype == "fp8" else 2.0
    measured_s = 2.0 * m * n * k / (tflops * 1e12)
    return gemm_time_s(m, k, n, acc, compute_dtype=dtype, weight_bytes=wb, act_bytes=wb) / measured_s


@pytest.mark.parametrize("n,k,m,tflops", H100_FP8)
def test_h100_fp8_sweep_within_6_percent(n, k, m, tflops):
    assert 0.94 < _ratio(get_accelerator("h100-sxm"), n, k, m, tflops, "fp8") < 1.06


@pytest.mark.parametrize("n,k,m,tflops", H100_BF16)
def test_h100_bf16_sweep_within_6_percent_of_the_sharp_roofline(n, k, m, tflops):
    acc = get_accelerator("h100-sxm")
    assert acc.gemm_ridge_p("bf16") == 0.0  # 16-bit GEMMs keep max(compute, memory)
    assert 0.94 < _ratio(acc, n, k, m, tflops, "bf16") < 1.06


def test_the_sharp_roofline_is_9_to_11_percent_fast_on_fp8_at_m_128():
    """Why the FP8 term exists: at M = 128 (MMA time ~0.6 of the weight read) both published shapes
    take 10-12 % longer than max(compute, memory) + the per-kernel overhead."""
    h100 = get_accelerator("h100-sxm")
    sharp = replace(h100, efficiency=replace(h100.efficiency, gemm_ridge_p_fp8=0.0))
    for n, k, m, tflops in H100_FP8:
        if m == 128:
            assert 0.88 < _ratio(sharp, n, k, m, tflops, "fp8") < 0.92


def test_the_fp8_ridge_term_does_not_move_the_catalogued_large_gemm():
    """gemm_fp8 was measured on 32768^3 (Azure H100 cuBLASLt); there HBM time is ~2 % of MMA time,
    so the p-norm must leave that GEMM within 0.1 % of the sharp roofline."""
    h100 = get_accelerator("h100-sxm")
    sharp = replace(h100, efficiency=replace(h100.efficiency, gemm_ridge_p_fp8=0.0))
    s = 32768
    t = gemm_time_s(s, s, s, h100, compute_dtype="fp8", weight_bytes=1.0, act_bytes=1.0)
    t0 = gemm_time_s(s, s, s, sharp, compute_dtype="fp8", weight_bytes=1.0, act_bytes=1.0)
    assert t0 <= t < t0 * 1.001


def test_ridge_time_at_the_ridge_is_2_to_the_1_over_p():
    assert ridge_time_s(10e-6, 10e-6, 2.0) == pytest.approx(10e-6 * math.sqrt(2.0))
    assert ridge_time_s(3e-6, 4e-6, 2.0) == pytest.approx(5e-6)  # the 3-4-5 triangle
    assert ridge_time_s(0.0, 4e-6, 2.0) == 4e-6


@settings(max_examples=200, deadline=None)
@given(c=st.floats(1e-7, 1e-2), m=st.floats(1e-7, 1e-2), p=st.floats(1.0, 20.0))
def test_ridge_time_lies_between_the_max_and_the_sum(c, m, p):
    t = ridge_time_s(c, m, p)
    assert max(c, m) * (1 - 1e-12) <= t <= (c + m) * (1 + 1e-12)
    assert t == pytest.approx(ridge_time_s(m, c, p))  # symmetric
    assert ridge_time_s(c, m, p + 1.0) <= t * (1 + 1e-12)  # a sharper norm is never slower


@settings(max_examples=100, deadline=None)
@given(m=st.integers(1, 65536), n=st.integers(64, 65536), k=st.integers(64, 65536))
def test_a_part_without_the_exponent_keeps_the_sharp_roofline(m, n, k):
    acc = make_accelerator()
    flops, mem = gemm_flops_bytes(m, k, n, weight_bytes=2.0, act_bytes=2.0)
    e = acc.efficiency
    eff = acc.gemm_efficiency("bf16", k) * (m / (math.ceil(m / e.gemm_tile_m) * e.gemm_tile_m))
    hand = max(flops / (acc.sustained_peak("bf16") * eff), mem / (acc.hbm_bw_bytes_per_s * e.memory))
    got = gemm_roofline_s(m, flops, mem, acc, compute_dtype="bf16", k=k)
    assert got == pytest.approx(hand + e.kernel_overhead_s, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(m=st.integers(1, 8192), n=st.integers(256, 32768), k=st.integers(256, 32768))
def test_the_ridge_term_never_makes_a_gemm_faster(m, n, k):
    h100 = get_accelerator("h100-sxm")
    sharp = replace(h100, efficiency=replace(h100.efficiency, gemm_ridge_p_fp8=0.0))
    t = gemm_time_s(m, k, n, h100, compute_dtype="fp8", weight_bytes=1.0, act_bytes=1.0)
    t0 = gemm_time_s(m, k, n, sharp, compute_dtype="fp8", weight_bytes=1.0, act_bytes=1.0)
    assert t >= t0


@pytest.mark.parametrize("p", [0.5, -1.0])
def test_an_exponent_below_one_is_an_input_error_naming_the_field(p):
    with pytest.raises(InputError, match="gemm_ridge_p_fp8"):
        Efficiency(gemm_ridge_p_fp8=p)
