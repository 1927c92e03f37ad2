"""The GEMM roofline against a published kernel sweep.

DeepGEMM's README (deepseek-ai/DeepGEMM, February 2025 release notes table) lists FP8 GEMM
throughput on an H800 SXM5 for the DeepSeek-V3 shapes at M = 64, 128 (decode-sized, memory
bound) and 4096 (prefill-sized, compute bound). Each row gives TFLOP/s; the time is
2 M N K / rate. The catalog's H800 entry was not fitted to these rows.
"""

from __future__ import annotations

import pytest

from parasim.cost.roofline import gemm_time_s
from parasim.specs.catalog import get_accelerator

# (M, N, K, published TFLOP/s)
DEEPGEMM_H800_FP8 = [
    (64, 2112, 7168, 206), (64, 24576, 1536, 289), (64, 32768, 512, 219), (64, 7168, 16384, 336),
    (64, 4096, 7168, 287),
    (128, 2112, 7168, 352), (128, 24576, 1536, 535), (128, 32768, 512, 358), (128, 7168, 16384, 645),
    (128, 4096, 7168, 533),
    (4096, 2112, 7168, 1058), (4096, 24576, 1536, 990), (4096, 32768, 512, 590), (4096, 7168, 16384, 1358),
    (4096, 4096, 7168, 1304), (4096, 7168, 2048, 1025),
]


@pytest.mark.parametrize("m,n,k,tflops", DEEPGEMM_H800_FP8)
def test_gemm_time_within_25_percent_of_deepgemm(m, n, k, tflops):
    acc = get_accelerator("h800")
    measured_s = 2.0 * m * n * k / (tflops * 1e12)
    model_s = gemm_time_s(m, k, n, acc, compute_dtype="fp8", weight_bytes=1.0, act_bytes=1.0)
    assert 0.75 < model_s / measured_s < 1.25, (m, n, k, model_s / measured_s)


@pytest.mark.parametrize("m,n,k,tflops", [(64, 7168, 2048, 295), (128, 7168, 2048, 510)])
def test_gemm_time_of_the_shortest_kernels_is_pessimistic(m, n, k, tflops):
    """The two rows under 8 us: the catalog's assumed 4 us per-kernel overhead (launch, ramp, tail)
    is more than DeepGEMM pays, so the model is 25-45 % slow there. Kept as a known deviation."""
    acc = get_accelerator("h800")
    measured_s = 2.0 * m * n * k / (tflops * 1e12)
    model_s = gemm_time_s(m, k, n, acc, compute_dtype="fp8", weight_bytes=1.0, act_bytes=1.0)
    assert 1.0 < model_s / measured_s < 1.5
