"""The grouped (MoE expert) GEMM cost against a published kernel sweep.

DeepGEMM's README (deepseek-ai/DeepGEMM, February 2025 release table) lists FP8 grouped-GEMM throughput
on an H800 SXM5 for DeepSeek-V3's expert shapes, in two layouts:

* contiguous (prefill): every group (expert) has exactly M rows;
* masked (decode): group j has int(expected_m * U(0.7, 1.3)) rows (DeepGEMM's test generator,
  `masked_m[j] = int(expected_m_per_group * random.uniform(0.7, 1.3))`), so its rows pad to whole
  tiles unevenly, as routed tokens do.

parasim costs an expert GEMM as one grouped launch whose rows are padded to whole tiles per group
(`roofline.grouped_fill`, the term `cost.routing` feeds from the routing's spread). Here the padded
tiles per group are the hand-computed expectation under the benchmark's own uniform spread
(E[ceil(X / tile)] = sum_j P(X > j * tile)), not routing's binomial. The catalog's H800 entry was not
fitted to these rows (see tests/test_cost_gemm_published.py for the dense rows of the same table).
"""

from __future__ import annotations

import math

import pytest

from parasim.cost.roofline import gemm_flops_bytes, gemm_roofline_s, grouped_fill
from parasim.specs.catalog import get_accelerator

# (groups, M per group, N, K, published TFLOP/s)
CONTIGUOUS = [(4, 8192, 4096, 7168, 1297), (4, 8192, 7168, 2048, 1099), (8, 4096, 4096, 7168, 1288),
              (8, 4096, 7168, 2048, 1093)]
MASKED = [(1, 1024, 4096, 7168, 1233), (1, 1024, 7168, 2048, 925), (2, 512, 4096, 7168, 1040),
          (2, 512, 7168, 2048, 916), (4, 256, 4096, 7168, 932), (4, 256, 7168, 2048, 815)]


def uniform_tiles(expected_m: float, tile: int, lo: float = 0.7, hi: float = 1.3) -> float:
    """E[ceil(X / tile)] for X uniform on [lo, hi] x expected_m: sum over j >= 0 of P(X > j * tile)."""
    a, b = lo * expected_m, hi * expected_m
    total, j = 0.0, 0
    while j * tile < b:
        edge = j * tile
        total += 1.0 if edge <= a else (b - edge) / (b - a)
        j += 1
    return total


def model_s(groups: int, m: float, n: int, k: int, tiles_per_group: float, acc=None) -> float:
    acc = acc or get_accelerator("h800")
    fill = grouped_fill(m, tiles_per_group, groups, n, acc)
    flops, bytes_ = gemm_flops_bytes(m, k, n, weight_bytes=1.0, act_bytes=1.0, count=groups)
    return gemm_roofline_s(m, flops, bytes_, acc, compute_dtype="fp8", n=n, k=k, fill=fill)


def measured_s(groups: int, m: int, n: int, k: int, tflops: float) -> float:
    return 2.0 * groups * m * n * k / (tflops * 1e12)


def test_uniform_tiles_hand_values():
    # 256 rows +-30 % on 128-row tiles: half the groups need 2 tiles, half 3
    assert uniform_tiles(256, 128) == pytest.approx(2.5)
    # exact multiples with no spread need exactly M / tile
    assert uniform_tiles(512, 128, 1.0 - 1e-9, 1.0) == pytest.approx(4.0)


@pytest.mark.parametrize("g,m,n,k,tflops", CONTIGUOUS)
def test_contiguous_grouped_gemm_within_10_percent_of_deepgemm(g, m, n, k, tflops):
    tile = get_accelerator("h800").efficiency.gemm_tile_m
    ratio = model_s(g, m, n, k, math.ceil(m / tile)) / measured_s(g, m, n, k, tflops)
    assert 0.9 < ratio < 1.1, ratio


@pytest.mark.parametrize("g,m,n,k,tflops", MASKED)
def test_masked_grouped_gemm_with_padded_tiles_within_10_percent_of_deepgemm(g, m, n, k, tflops):
    tile = get_accelerator("h800").efficiency.gemm_tile_m
    ratio = model_s(g, m, n, k, uniform_tiles(m, tile)) / measured_s(g, m, n, k, tflops)
    assert 0.9 < ratio < 1.1, ratio


def test_padding_or_the_ridge_term_closes_the_few_rows_gap():
    """At 256 rows per group, the sharp roofline charging only the mean's own tiles (no spread) is
    optimistic by more than 15 %; the padded tiles of the groups' spread bring it within 10 % (the
    direction the routing term `cost.routing.expected_tiles` charges for routed tokens). The Hopper
    FP8 ridge term (catalog `gemm_ridge_p_fp8`, fitted to H100 dense sweeps, not to this row) closes
    the same gap on its own: with it, this row is within 10 % with or without the spread's padding,
    so the row no longer tells the two apart."""
    from dataclasses import replace

    g, m, n, k, tflops = MASKED[4]
    h800 = get_accelerator("h800")
    sharp = replace(h800, efficiency=replace(h800.efficiency, gemm_ridge_p_fp8=0.0))
    tile = h800.efficiency.gemm_tile_m
    meas = measured_s(g, m, n, k, tflops)
    assert model_s(g, m, n, k, math.ceil(m / tile), sharp) / meas < 0.85
    assert model_s(g, m, n, k, uniform_tiles(m, tile), sharp) / meas > 0.9
    for tiles in (math.ceil(m / tile), uniform_tiles(m, tile)):
        assert 0.9 < model_s(g, m, n, k, tiles) / meas < 1.1
