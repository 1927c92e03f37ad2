"""Effects that grow with the job: the slowest of N GPUs, and the FSDP collectives no prefetch can hide."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan, simulate
from parasim.training.straggler import expected_max_z

H100 = get_accelerator("h100-sxm")
PLAN = TrainingPlan(dp=8, micro_batch=1, global_batch=16, seq_len=4096, zero=3)

# --- the slowest of N ranks -------------------------------------------------------------------


def test_expected_max_of_normals_matches_exact_small_n_values():
    """Exact expected maxima of n standard normals (tabulated order statistics): n=2 1/sqrt(pi),
    n=3 1.5/sqrt(pi); Blom's approximation is within a few per cent."""
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
    assert on["fsdp_first_gather_exposed_s"] > 0 and on["fsdp_last_reduce_exposed_s"] > 0
    assert off["fsdp_first_gather_exposed_s"] == off["fsdp_last_reduce_exposed_s"] == 0
    layers = model.layers
    # the first gather is at most one layer's all-gather, which the unoverlapped run exposes in full
    assert on["fsdp_first_gather_exposed_s"] <= off["fsdp_layer_exposed_fwd"]
    assert (layers * on["fsdp_layer_exposed_fwd"] + on["fsdp_first_gather_exposed_s"]
            <= layers * off["fsdp_layer_exposed_fwd"])
    assert (layers * on["fsdp_layer_exposed_bwd"] + on["fsdp_last_reduce_exposed_s"]
            <= layers * off["fsdp_layer_exposed_bwd"])
