"""Blackwell serving figures from published measurements (docs/serving.md, "Blackwell serving
figures (2026-12-07)").

Each test rebuilds a published kernel measurement from its shape by hand and checks that the
roofline predicts it, so the catalog figure is judged by a measurement it was not read from (or,
for the HBM figure, by the time the kernel took rather than the rate the catalog stores):

- NVIDIA/cutlass PR 2917: a CuTeDSL BF16 RMSNorm on B200, M 32768 x N 16384, 329.54 us,
  "Memory throughput: 6516.67 GB/s";
- Azure/AI-benchmarking-guide, ND GB200 v6 results: cuBLASLt FP4 GEMM TFLOP/s at square sizes
  2048-32768 (the catalog's `gemm_fp4` is only the 16384^3 point).
"""

from __future__ import annotations

import pytest

from parasim.cost.roofline import gemm_time_s, memory_time_s
from parasim.specs.catalog import get_accelerator

RMSNORM_M, RMSNORM_N = 32768, 16384
RMSNORM_S = 329.54e-6
RMSNORM_GB_S = 6516.67

#: Azure ND GB200 v6, "GEMM CuBLASLt (FP4)", m = n = k -> TFLOP/s
AZURE_GB200_FP4 = {2048: 1677.7, 4096: 5177.3, 8192: 7535.6, 16384: 7627.6, 32768: 7487.2}


def _rmsnorm_bytes() -> int:
    """BF16 in, BF16 out, one BF16 weight row: each element read once and written once."""
    return 2 * RMSNORM_M * RMSNORM_N * 2 + RMSNORM_N * 2


def test_the_published_rmsnorm_rate_is_its_bytes_over_its_time():
    """The PR's GB/s counts exactly the read and the write of the activation (so the kernel moved
    2.1 GB, 17x B200's 126 MB L2: an HBM figure, not an L2 one)."""
    assert _rmsnorm_bytes() / RMSNORM_S / 1e9 == pytest.approx(RMSNORM_GB_S, rel=1e-4)
    assert _rmsnorm_bytes() > 16 * 126e6


def test_b200_streams_the_rmsnorm_in_the_measured_time():
    """The roofline's memory-bound kernel (plus its per-kernel overhead) takes the measured 329.54 us
    within 2 %; at the H200-borrowed 0.88 it took 309 us, 6 % too fast."""
    acc = get_accelerator("b200")
    assert memory_time_s(_rmsnorm_bytes(), acc) == pytest.approx(RMSNORM_S, rel=0.02)
    old = _rmsnorm_bytes() / (acc.hbm_bw_bytes_per_s * 0.88) + acc.efficiency.kernel_overhead_s
    assert old < 0.95 * RMSNORM_S


def test_b200_achieved_bandwidth_stays_below_its_bus_rate():
    """pytorch/ao PR 4002 reads a 7,680-bit bus at 3,996 MHz DDR from the driver: 7.672 TB/s, under the
    8 TB/s the catalog lists. Whatever the catalog's peak, the achieved rate must stay under the bus's."""
    bus_b_s = 7680 / 8 * 3996e6 * 2
    acc = get_accelerator("b200")
    assert bus_b_s == pytest.approx(7.672e12, rel=1e-3)
    assert acc.hbm_bw_bytes_per_s * acc.efficiency.memory < bus_b_s


@pytest.mark.parametrize("size", [4096, 8192, 16384, 32768])
def test_gb200_fp4_gemm_follows_azures_size_sweep(size):
    """The large-shape `gemm_fp4` (one point, 16384^3) with the wave model and the per-kernel
    overhead predicts the rest of Azure's sweep within 8 %: 4096^3 is charged four waves of 148 SMs
    for 512 tiles (predicted +7 %), the larger cubes whole waves."""
    acc = get_accelerator("gb200")
    t = gemm_time_s(size, size, size, acc, compute_dtype="fp4", weight_bytes=0.5, act_bytes=0.5)
    assert 2.0 * size**3 / t / 1e12 == pytest.approx(AZURE_GB200_FP4[size], rel=0.08)


def test_gb200_fp4_gemm_below_4096_is_not_claimed():
    """At 2048^3 (a 10 us GEMM, fewer tiles than SMs) cuBLASLt runs at 1,678 TFLOP/s and the roofline
    predicts about 1.6x that: fixed per-kernel costs the model does not carry at this size. The
    70B-class serving GEMMs are larger (one FP4 decode GEMM of 512 rows x 57,344 x 8,192 is 0.48
    TFLOP); documented in docs/serving.md, not fitted."""
    acc = get_accelerator("gb200")
    t = gemm_time_s(2048, 2048, 2048, acc, compute_dtype="fp4", weight_bytes=0.5, act_bytes=0.5)
    assert 2.0 * 2048**3 / t / 1e12 > 1.4 * AZURE_GB200_FP4[2048]


#: vLLM PR 19566 (B200, `benchmarks/kernels/bench_fp8_gemm.py`, Llama-3.1-8B's N 6144 x K 4096 at
#: batch 16384): CUTLASS FP8 with tensor-wise scales, quantisation excluded
VLLM_B200_FP8_16384x6144x4096 = 2544.7
MAMF_B200_FP8 = 3432.5 / 4500  # the best-shape benchmark's figure the catalog did not take


def test_b200_fp8_gemm_at_an_llm_shape_sides_with_the_fixed_shape_measurement():
    """Two FP8 figures disagreed for Blackwell (Azure's cuBLASLt 0.58, the best-shape MAMF table's
    0.763). A fixed-shape B200 run at a Llama-8B projection lands within 2 % of the catalog's 0.58;
    the 0.763 figure would predict it about 30 % too fast."""
    acc = get_accelerator("b200")
    m, n, k = 16384, 6144, 4096
    kw = {"compute_dtype": "fp8", "weight_bytes": 1, "act_bytes": 1}
    rate = 2.0 * m * n * k / gemm_time_s(m, k, n, acc, **kw) / 1e12
    assert rate == pytest.approx(VLLM_B200_FP8_16384x6144x4096, rel=0.02)
    scaled = rate * MAMF_B200_FP8 / acc.gemm_efficiency("fp8")
    assert scaled > 1.25 * VLLM_B200_FP8_16384x6144x4096
