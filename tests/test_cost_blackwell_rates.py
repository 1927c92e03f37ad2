"""Blackwell GEMM and attention rates from published measurements (docs/training.md, "Blackwell GEMM
and attention rates").

The B200 / GB200 entries used to inherit H100's figures. They now come from two public sources, and
these tests derive each figure from the published numbers, not from the catalog:

- stas00/ml-engineering's Maximum Achievable Matmul FLOPS table (BF16 matmul, best shape found, one
  benchmark on every part): A100 SXM 271.2 of 312, H100 SXM 794.5 of 989, B200 1,745.0 of 2,250,
  GB200 1,822.0 of 2,500 TFLOP/s;
- FlashAttention-4 (arXiv:2603.05451): BF16 forward up to 1,613 TFLOP/s on B200.
"""

from __future__ import annotations

import pytest

from parasim.cost.roofline import attention_time_s, gemm_time_s, wave_fill
from parasim.specs.catalog import get_accelerator

#: the benchmark's BF16 matmul efficiency per part (TFLOP/s / dense peak)
MAMF = {"a100-sxm-80gb": 271.2 / 312, "h100-sxm": 794.5 / 989, "b200": 1745.0 / 2250, "gb200": 1822.0 / 2500}
H100_8192_CUBE = 762 / 989  # the H100 GEMM measurement the catalog's other parts are scaled from
FA4_B200_TFLOPS = 1613.0


def _transfer(part: str) -> float:
    """A part's large-GEMM efficiency from H100's measured one and the two parts' ratio in one benchmark."""
    return H100_8192_CUBE * MAMF[part] / MAMF["h100-sxm"]


def test_the_transfer_reproduces_a100s_own_measurement():
    """The rule used for Blackwell, applied to A100, lands within 2 % of A100's independent cuBLASLt
    measurement (256.5 of 312 TFLOP/s at 16384^3, Azure): the benchmark ranks parts as cuBLAS does."""
    assert _transfer("a100-sxm-80gb") == pytest.approx(256.5 / 312, rel=0.02)


@pytest.mark.parametrize("part", ["b200", "gb200"])
def test_blackwell_bf16_gemm_follows_the_benchmark(part):
    assert get_accelerator(part).gemm_efficiency("bf16") == pytest.approx(_transfer(part), abs=0.002)


def test_gb200_gains_what_its_matmuls_gain_not_its_peak():
    """GB200's dense peak is 2,500 / 2,250 = 1.11x B200's; measured matmuls run 1,822 / 1,745 = 1.044x.
    A large, wave-aligned BF16 GEMM (same SM count on both) is predicted at the measured ratio."""
    m, k, n = 148 * 128, 8192, 256 * 8  # 148 x 8 tiles: whole waves on 148 SMs
    kw = {"compute_dtype": "bf16", "weight_bytes": 2, "act_bytes": 2}
    ratio = gemm_time_s(m, k, n, get_accelerator("b200"), **kw) / gemm_time_s(m, k, n, get_accelerator("gb200"), **kw)
    assert ratio == pytest.approx(1822.0 / 1745.0, rel=0.01)
    assert ratio < 2500 / 2250 - 0.05


def test_b200_attention_runs_at_flashattention4s_rate():
    """A long compute-bound attention forward on B200 runs at FA4's published 1,613 TFLOP/s."""
    acc = get_accelerator("b200")
    flops = 1e15
    t = attention_time_s(flops, 1e6, acc, dtype="bf16") - acc.efficiency.kernel_overhead_s
    assert flops / t / 1e12 == pytest.approx(FA4_B200_TFLOPS, rel=0.005)


def test_gb200_attention_scales_b200s_by_the_measured_matmul_ratio():
    b, g = get_accelerator("b200"), get_accelerator("gb200")
    tb = attention_time_s(1e15, 1e6, b, dtype="bf16")
    tg = attention_time_s(1e15, 1e6, g, dtype="bf16")
    assert tb / tg == pytest.approx(1822.0 / 1745.0, rel=0.01)


def test_gb200_pays_wave_quantisation():
    """148 SMs: 74 x 2 output tiles fill one wave; one more row opens a 75th tile row, 150 tiles,
    two waves of which the second holds 2 tiles: about half the SM-slots busy (hand count)."""
    g = get_accelerator("gb200")
    tm, tn = g.efficiency.gemm_tile_m, g.efficiency.gemm_tile_n
    assert wave_fill(74 * tm, 2 * tn, g) == pytest.approx(1.0)
    m = 74 * tm + 1
    assert wave_fill(m, 2 * tn, g) == pytest.approx(m * 2 * tn / (2 * 148 * tm * tn))
    assert wave_fill(m, 2 * tn, g) == pytest.approx(wave_fill(m, 2 * tn, get_accelerator("b200")))
