"""The power-cap clock law against published capped-GEMM measurements (throughput at a cap / at the
rated TDP, compute-bound cuBLAS GEMMs, so the ratio is the clock ratio). The parts are not in the
catalog: each is built from its rated TDP with the catalog's idle rule (13 % of TDP)."""

from __future__ import annotations

import math
import statistics

import pytest

from parasim.specs.accelerator import POWER_CLOCK_EXPONENT
from parasim.specs.catalog import get_accelerator

H100 = get_accelerator("h100-sxm")
IDLE_FRACTION = 0.13  # the catalog's `idle_w` assumption (accelerators.yaml: "~13 % of TDP")

# (part, rated W, capped W, TFLOP/s at the cap, TFLOP/s at the rated TDP), as published
RTX = "RTX PRO 6000 Blackwell (1a1a11a/gpu_power figures/tflops_vs_power.png, read off the plot)"
GB300 = "GB300 (facebookexperimental/triton PR 2023: cuBLAS GEMM ~617 TFLOP/s at 500 W, 1,600-2,174 at 1,400 W)"
POINTS = [
    (RTX + " BF16", 600, 240, 120, 317), (RTX + " BF16", 600, 280, 146, 317), (RTX + " BF16", 600, 320, 170, 317),
    (RTX + " BF16", 600, 400, 218, 317), (RTX + " BF16", 600, 480, 259, 317),
    (RTX + " FP8", 600, 240, 217, 513), (RTX + " FP8", 600, 280, 261, 513), (RTX + " FP8", 600, 320, 297, 513),
    (RTX + " FP8", 600, 400, 369, 513), (RTX + " FP8", 600, 480, 428, 513),
    (GB300 + " low", 1400, 500, 617, 2174), (GB300 + " high", 1400, 500, 617, 1600),
]


def _part(rated: float, cap: float):
    return H100.with_(tdp_w=cap, rated_tdp_w=rated, idle_w=IDLE_FRACTION * rated)


def _implied_exponent(rated: float, cap: float, ratio: float) -> float:
    """The n for which idle + (rated - idle) ratio^n = cap."""
    idle = IDLE_FRACTION * rated
    return math.log((cap - idle) / (rated - idle)) / math.log(ratio)


@pytest.mark.parametrize(("part", "rated", "cap", "capped", "full"), POINTS[:10])
def test_the_law_gives_each_published_capped_gemm_within_tolerance(part, rated, cap, capped, full):
    """Tolerance 10 % of the measured ratio (the plot is read to about 2 TFLOP/s; the law is one
    exponent for two dtypes and caps from 40 % to 80 % of the rating)."""
    measured = capped / full
    assert _part(rated, cap).clock_ratio == pytest.approx(measured, rel=0.10), part


def test_gb300_at_500_w_falls_inside_its_published_range():
    """The PR gives one capped figure and a range at the rating (over its shapes): the law's ratio
    must lie between 617 / 2,174 and 617 / 1,600."""
    assert 617 / 2174 <= _part(1400, 500).clock_ratio <= 617 / 1600


def test_the_exponent_is_the_median_of_what_the_points_imply():
    implied = [_implied_exponent(r, c, lo / hi) for _, r, c, lo, hi in POINTS]
    assert min(implied) > 1.0 and max(implied) < 1.5  # below the cube law everywhere
    assert POWER_CLOCK_EXPONENT == pytest.approx(statistics.median(implied), abs=0.01)


def test_the_cube_law_misses_every_published_point_high():
    """The first-principles law it replaces (C V^2 f with V ~ f) over-predicts the clock at every cap."""
    for _, rated, cap, capped, full in POINTS:
        idle = IDLE_FRACTION * rated
        cube = ((cap - idle) / (rated - idle)) ** (1 / 3)
        assert cube > 1.09 * capped / full


def test_h100_at_torchtitans_500_w():
    """The case that asked for it: torchtitan's H100s at 500 W, idle 90 W (catalog)."""
    f = H100.with_(tdp_w=500.0).clock_ratio
    assert f == pytest.approx(((500 - 90) / (700 - 90)) ** (1 / POWER_CLOCK_EXPONENT))
    assert 0.70 < f < 0.78
