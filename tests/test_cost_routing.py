"""Routing statistics of a mixture-of-experts layer: padded tiles per expert and the busiest EP rank,
checked against exact binomial sums, tabulated normal order statistics and a seeded simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.routing import busiest_rank_factor, expected_max_normal, expected_tiles


def _exact_tiles(n: int, p: float, tile: int) -> float:
    """E[ceil(X / tile)], X ~ Binomial(n, p), by summing the probability mass function."""
    total = 0.0
    for x in range(n + 1):
        logpmf = (math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)
                  + x * math.log(p) + (n - x) * math.log1p(-p))
        total += math.exp(logpmf) * math.ceil(x / tile)
    return total


@pytest.mark.parametrize(("n", "p", "tile"), [(2048, 0.25, 128), (9208, 8 / 256, 128), (64, 0.25, 128), (700, 0.1, 16)])
def test_expected_tiles_matches_the_exact_binomial_sum(n, p, tile):
    assert expected_tiles(n, p, tile) == pytest.approx(_exact_tiles(n, p, tile), rel=5e-3)


def test_without_spread_the_tiles_are_the_ceiling():
    assert expected_tiles(300, 1.0, 128) == pytest.approx(math.ceil(300 / 128))


def test_expected_max_normal_against_exact_values():
    assert expected_max_normal(1) == 0.0
    assert expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), rel=0.05)  # exact: 1/sqrt(pi)
    assert expected_max_normal(8) == pytest.approx(1.4236, rel=0.01)  # tabulated (Harter 1961)


def test_busiest_rank_matches_a_seeded_routing_simulation():
    rng = np.random.default_rng(0)
    tokens, k, experts, ep, trials = 512, 4, 64, 8, 300
    ratios = []
    for _ in range(trials):
        picks = np.argsort(rng.random((tokens, experts)), axis=1)[:, :k]  # k distinct experts per token
        loads = np.bincount(picks.ravel() // (experts // ep), minlength=ep)
        ratios.append(loads.max() / loads.mean())
    assert busiest_rank_factor(tokens, k, experts, ep) == pytest.approx(float(np.mean(ratios)), rel=0.02)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 20000), st.sampled_from([(2, 8), (8, 256), (4, 64)]), st.sampled_from([2, 4, 8, 16]))
def test_the_busiest_rank_carries_more_than_the_mean_and_less_with_more_tokens(tokens, ke, ep):
    k, experts = ke
    f = busiest_rank_factor(tokens, k, experts, ep)
    assert f >= 1.0
    assert busiest_rank_factor(tokens * 4, k, experts, ep) <= f
    assert busiest_rank_factor(tokens, k, experts, 1) == 1.0


def test_a_grouped_gemm_shares_its_waves_across_experts():
    """8 experts of 512 real rows padded to 4.5 tiles each, N = 28,672 on 132 SMs: the grouped
    kernel runs 8 x 4.5 x 112 = 4,032 tiles in ceil(4032 / 132) = 31 waves, so the fill is the real
    work over 31 x 132 tiles, not each expert's own 4.5-tile column in its own waves."""
    from parasim.cost.roofline import grouped_fill
    from parasim.specs.catalog import get_accelerator

    acc = get_accelerator("h100-sxm")
    tm, tn = acc.efficiency.gemm_tile_m, acc.efficiency.gemm_tile_n
    got = grouped_fill(512, 4.5, 8, 28672, acc)
    assert got == pytest.approx(8 * 512 * 28672 / (31 * 132 * tm * tn))
    # fewer tiles than SMs: only the row padding
    assert grouped_fill(16, 1.0, 2, 256, acc) == pytest.approx(16 / tm)
