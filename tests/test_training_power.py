"""Sustained clocks under a power cap: the f^3 law above idle power, applied to compute-bound work only."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.roofline import memory_time_s
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan, simulate

H100 = get_accelerator("h100-sxm")
PLAN = TrainingPlan(dp=8, micro_batch=1, global_batch=16, seq_len=4096, zero=3)


def test_clock_at_a_cap_solves_idle_plus_cubic_dynamic_power():
    capped = H100.with_(tdp_w=500.0)
    f = capped.clock_ratio
    # the clock at which idle + (rated - idle) * f^3 draws exactly the cap
    assert H100.idle_w + (700.0 - H100.idle_w) * f ** 3 == pytest.approx(500.0)
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


# --- the slowest of N ranks -------------------------------------------------------------------
from parasim.training.straggler import expected_max_z  # noqa: E402


def test_expected_max_of_normals_matches_exact_small_n_values():
    """Exact expected maxima of n standard normals (tabulated order statistics): n=2 1/sqrt(pi),
    n=3 1.5/sqrt(pi); Blom's approximation is within a few per cent."""
    import math

    assert expected_max_z(1) == 0.0
    assert expected_max_z(2) == pytest.approx(1 / math.sqrt(math.pi), rel=0.05)
    assert expected_max_z(3) == pytest.approx(1.5 / math.sqrt(math.pi), rel=0.05)
    # large N: below the sqrt(2 ln N) bound, approaching it
    assert 0.8 * math.sqrt(2 * math.log(16384)) < expected_max_z(16384) < math.sqrt(2 * math.log(16384))


def test_straggler_term_is_compute_times_sigma_times_z():
    model = get_model("llama-3-8b")
    res = simulate(model, ClusterSpec(accelerator=H100, gpus=8), PLAN)
    bd = res.breakdown
    assert bd["straggler"] == pytest.approx(bd["compute"] * H100.efficiency.rank_speed_sigma * expected_max_z(8))
    assert sum(bd.values()) == pytest.approx(res.step_time_s)


@given(n=st.integers(1, 100_000), more=st.integers(1, 100_000))
@settings(max_examples=50, deadline=None)
def test_more_ranks_never_shrink_the_straggler(n, more):
    assert expected_max_z(n + more) >= expected_max_z(n)


# --- FSDP edges no prefetch can hide ----------------------------------------------------------
def test_fsdp_first_gather_and_last_reduce_are_exposed_but_overlap_still_wins():
    model = get_model("llama-3-8b")
    cluster = ClusterSpec(accelerator=H100, gpus=16, nic_bw_bytes_per_s_per_gpu=50e9)
    plan = TrainingPlan(dp=16, micro_batch=1, global_batch=32, seq_len=4096, zero=3)
    on = simulate(model, cluster, plan).details
    off = simulate(model, cluster, plan.with_(overlap_param_gather=False)).details
    assert on["fsdp_first_gather_exposed"] > 0 and on["fsdp_last_reduce_exposed"] > 0
    assert off["fsdp_first_gather_exposed"] == off["fsdp_last_reduce_exposed"] == 0
    layers = model.layers
    # the first gather is at most one layer's all-gather, which the unoverlapped run exposes in full
    assert on["fsdp_first_gather_exposed"] <= off["fsdp_layer_exposed_fwd"]
    assert (layers * on["fsdp_layer_exposed_fwd"] + on["fsdp_first_gather_exposed"]
            <= layers * off["fsdp_layer_exposed_fwd"])
    assert (layers * on["fsdp_layer_exposed_bwd"] + on["fsdp_last_reduce_exposed"]
            <= layers * off["fsdp_layer_exposed_bwd"])
