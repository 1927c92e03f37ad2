"""CDNA3 (MI300X, MI325X) catalog figures flow through the cost model to the published kernel rates
they come from: AMD's max-achievable GEMM FLOPs, the aiter attention table, an MI300X FP8 / BF16
GEMM at shallower K, and the rccl-tests all-reduce sweep of AMD's xGMI blog (sources in the
catalog header: [amd-maf], [aiter-mha], [rocm-xgmi], [azure-mi300x])."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as hst

from parasim.cost.comm import Group, collective_time_s
from parasim.cost.roofline import attention_time_s, gemm_time_s
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import default_cluster, get_accelerator, get_model

MI300X = get_accelerator("mi300x")
MI325X = get_accelerator("mi325x")
GIB = 1024 ** 3
MIB = 1024 ** 2

#: [amd-maf] Table 1: hipblaslt-bench TFLOPS at (M, N, K) of its Appendix B commands
MAF = {("mi300x", "bf16"): 708.0, ("mi325x", "bf16"): 843.0,
       ("mi300x", "fp8"): 1273.0, ("mi325x", "fp8"): 1519.0}
#: (M, K, N). AMD's FP8 command uses N 3648 (19 tiles of 192: one wave of 304 CUs in 256 x 192 tiles);
#: parasim's fixed 128 x 256 tile would count that shape 75 % full, so both dtypes are checked at the
#: BF16 command's N 4864, which fills two waves of 304 in either tiling.
MAF_SHAPE = (4096, 32896, 4864)


def gemm_tflops(acc, m, k, n, dtype):
    width = 1.0 if dtype == "fp8" else 2.0
    t = gemm_time_s(m, k, n, acc, compute_dtype=dtype, weight_bytes=width, act_bytes=width)
    return 2.0 * m * k * n / t / 1e12


@pytest.mark.parametrize("acc_id, dtype", sorted(MAF))
def test_gemm_at_the_published_shape_runs_at_the_published_rate(acc_id, dtype):
    m, k, n = MAF_SHAPE
    assert gemm_tflops(get_accelerator(acc_id), m, k, n, dtype) == pytest.approx(MAF[acc_id, dtype], rel=0.02)


def test_mi325x_outruns_mi300x_by_its_sustained_clock():
    """Same 304 CUs and peaks; [amd-maf] measures 1,447 against 1,207 MHz under dense BF16 load
    (ratio 1.20). parasim's compute-bound GEMM ratio should be that clock ratio, within 3 %."""
    m, k, n = MAF_SHAPE
    ratio = gemm_tflops(MI325X, m, k, n, "bf16") / gemm_tflops(MI300X, m, k, n, "bf16")
    assert ratio == pytest.approx(1447 / 1207, rel=0.03)


@pytest.mark.parametrize("m, dtype, measured_tflops", [
    (8192, "fp8", 1159.23),   # [azure-mi300x] hipBLASLt FP8, M = N = K = 8192 (2024 stack)
    (4096, "bf16", 553.0),    # gau-nernst/learn-cuda 02d_matmul_cdna3: PyTorch 2.8+rocm6.4 BF16 4096^3, 548-558
])
def test_shallower_k_runs_slower_as_measured(m, dtype, measured_tflops):
    """The K-depth term (gemm_k0) was derived from these two points against [amd-maf] (k0 = 316
    and 368 16-bit elements; their mean, 342, is catalogued), so each is reproduced within 8 %; before it, parasim
    charged both at the K = 32896 rate (up to 20 % too fast)."""
    assert gemm_tflops(MI300X, m, m, m, dtype) == pytest.approx(measured_tflops, rel=0.08)


@given(hst.integers(min_value=256, max_value=65536), hst.integers(min_value=256, max_value=65536))
def test_deeper_k_is_never_less_efficient(k1, k2):
    lo, hi = sorted((k1, k2))
    for dtype in ("bf16", "fp8"):
        assert MI300X.gemm_efficiency(dtype, lo) <= MI300X.gemm_efficiency(dtype, hi) + 1e-12


@pytest.mark.parametrize("batch, heads, seq", [(1, 32, 8192), (4, 64, 8192), (8, 64, 4096)])
def test_prefill_attention_runs_at_aiters_head_dim_128_rate(batch, heads, seq):
    """[aiter-mha] MI300X BF16, head dim 128, non-causal forward: 558-592 TFLOPS at these shapes.
    FLOPs 4 * b * h * s^2 * d; Q, K, V, O read or written once."""
    d = 128
    flops = 4.0 * batch * heads * seq * seq * d
    bytes_moved = 4.0 * batch * heads * seq * d * 2
    t = attention_time_s(flops, bytes_moved, MI300X, dtype="bf16")
    assert flops / t / 1e12 == pytest.approx(575.7, rel=0.05)


@pytest.mark.parametrize("size, busbw_gb_s", [(1 * GIB, 314.72), (4 * GIB, 317.40), (16 * GIB, 318.98)])
def test_tp8_rccl_all_reduce_bus_bandwidth_matches_rccl_tests(size, busbw_gb_s):
    """[rocm-xgmi] all_reduce_perf on 8 MI300X: bus bandwidth (= 2 (n-1)/n x size / time) at large
    messages. All 7 links of each GPU are in use at TP8, so 448 GB/s x 0.71 applies; within 3 %."""
    n = 8
    t = collective_time_s("all_reduce", size, Group(n, n), default_cluster("mi300x", 8))
    assert 2 * (n - 1) / n * size / t / 1e9 == pytest.approx(busbw_gb_s, rel=0.03)


def test_the_link_bandwidth_is_one_way():
    """[rocm-xgmi]: 64 GB/s per link each way, 7 links; TransferBench all-to-all measures 45-47 GB/s
    per link one way, 315-319 GB/s per GPU. The catalog's 448 GB/s is the one-way aggregate and its
    busbw fraction lands on that measured aggregate."""
    assert MI300X.link_bw_bytes_per_s == pytest.approx(7 * 64e9)
    achieved = MI300X.link_bw_bytes_per_s * MI300X.efficiency.nvlink_busbw / 1e9
    assert 315.0 <= achieved <= 326.0


#: vllm-project/vllm PR 19744 (quick all-reduce for ROCm), MI300X TP=4 float16 kernel table, column
#: "baseline" (vLLM's custom all-reduce): microseconds per all-reduce
VLLM_PR19744_MI300X_TP4_CR_US = {2 * MIB: 36.64, 4 * MIB: 63.86, 8 * MIB: 118.31}


@pytest.mark.parametrize("size", sorted(VLLM_PR19744_MI300X_TP4_CR_US))
def test_mi300x_tp4_custom_all_reduce_matches_the_published_kernel_times(size):
    """A TP4 group of MI300X uses 3 of each GPU's 7 links (192 GB/s one way). vLLM's custom
    all-reduce at 2-8 MiB is within 15 % of parasim's serving all-reduce (IterationCost). At 1 MiB,
    near the one-/two-shot crossing, parasim is 20 % slow (27.5 against 22.9 us)."""
    cost = IterationCost(get_model("llama-3.1-70b"), default_cluster("mi300x", 8), tp=4, pp=1, weights="bf16",
                         kv_dtype="bf16", act_dtype="bf16", overhead_s=0.0)
    assert cost.tp_allreduce_s(size) * 1e6 == pytest.approx(VLLM_PR19744_MI300X_TP4_CR_US[size], rel=0.15)
