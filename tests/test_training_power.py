"""Sustained clocks under a power cap: power above idle grows as f^n (n measured: test_cost_power_law.py),
applied to compute-bound work only."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.roofline import memory_time_s
from parasim.specs.accelerator import POWER_CLOCK_EXPONENT
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan, simulate

H100 = get_accelerator("h100-sxm")
PLAN = TrainingPlan(dp=8, micro_batch=1, global_batch=16, seq_len=4096, zero=3)


def test_clock_at_a_cap_draws_exactly_the_cap():
    capped = H100.with_(tdp_w=500.0)
    f = capped.clock_ratio
    # the clock at which idle + (rated - idle) * f^n draws exactly the cap
    assert H100.idle_w + (700.0 - H100.idle_w) * f ** POWER_CLOCK_EXPONENT == pytest.approx(500.0)
    assert capped.sustained_peak("bf16") == pytest.approx(H100.peak("bf16") * f)
    assert capped.peak("bf16") == H100.peak("bf16")  # MFU's denominator stays the datasheet's


def test_a_higher_limit_than_rated_does_not_raise_the_clock():
    assert H100.with_(tdp_w=1000.0).clock_ratio == 1.0
    assert H100.clock_ratio == 1.0


def test_memory_bound_kernels_keep_their_speed_under_a_cap():
    assert memory_time_s(1e9, H100.with_(tdp_w=400.0)) == memory_time_s(1e9, H100)


@given(cap=st.floats(100.0, 700.0), lower=st.floats(0.3, 1.0))
@settings(max_examples=15, deadline=None)
def test_a_lower_power_cap_is_never_faster(cap, lower):
    model = get_model("llama-3-8b")
    hi = simulate(model, ClusterSpec(accelerator=H100.with_(tdp_w=cap), gpus=8), PLAN).step_time_s
    lo = simulate(model, ClusterSpec(accelerator=H100.with_(tdp_w=cap * lower), gpus=8), PLAN).step_time_s
    assert lo >= hi - 1e-12

