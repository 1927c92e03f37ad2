"""Autoscaling on a lagged metric with a start-up delay (`--autoscale-max ...`)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.errors import InputError
from parasim.serving import ServingPlan, Workload, simulate
from parasim.specs.catalog import cluster_for, get_accelerator, get_model

MODEL = get_model("llama-3-8b")
AUTO = dict(replicas=1, autoscale_max=6, autoscale_target=48, autoscale_startup_s=60)


def _step(low=4.0, high=30.0, seg_s=240.0, seed=0) -> Workload:
    """Low load, then a step up for one segment, then low again."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, rate in enumerate((low, high, low)):
        t = k * seg_s + np.cumsum(rng.exponential(1 / rate, int(rate * seg_s * 1.2)))
        parts.append(t[t < (k + 1) * seg_s])
    arr = np.concatenate(parts)
    n = arr.size
    return Workload.from_columns(arr, np.clip(rng.lognormal(np.log(1000), 0.5, n), 16, 6000).astype(int),
                                 np.clip(rng.lognormal(np.log(250), 0.5, n), 4, 2000).astype(int))


def _run(wl, **plan):
    cluster = cluster_for(get_accelerator("h100-sxm"), 6)
    return simulate(MODEL, cluster, ServingPlan(scheduler="sarathi", **plan), wl).summary


def test_a_load_step_costs_latency_while_replicas_start_and_saves_gpu_hours():
    """The trade an operator makes: holding the peak's replicas all the time keeps latency flat;
    scaling on a lagged metric pays for the start-up delay with a queue at the step, and holds
    fewer GPU-hours."""
    wl = _step()
    fixed = _run(wl, replicas=6)
    auto = _run(wl, **AUTO)
    a = auto["autoscale"]
    assert auto["completed"] == fixed["completed"] == len(wl)
    assert a["scale_ups"] >= 1 and 1 < a["replicas_peak"] <= 6 and 1 <= a["replicas_mean"] < 6
    assert auto["ttft_p99_s"] > 5 * fixed["ttft_p99_s"]
    assert auto["gpu_hours"] < 0.8 * fixed["gpu_hours"]
    slower = _run(wl, **{**AUTO, "autoscale_startup_s": 180})
    assert slower["ttft_p99_s"] >= auto["ttft_p99_s"]


def test_short_looks_without_a_scale_down_window_flap():
    """HPA's 300 s scale-down window exists to stop flapping: without it, and looking every 5 s,
    the replica count goes up and down more often on the same load."""
    wl = _step(seed=1)
    hpa = _run(wl, **AUTO)["autoscale"]
    twitchy = _run(wl, **{**AUTO, "autoscale_interval_s": 5, "autoscale_down_delay_s": 0})["autoscale"]
    assert twitchy["scale_ups"] + twitchy["scale_downs"] > hpa["scale_ups"] + hpa["scale_downs"]


def test_a_light_load_never_scales_and_matches_the_fixed_minimum():
    rng = np.random.default_rng(2)
    arr = np.cumsum(rng.exponential(1.0, 200))
    arr -= arr[0]
    wl = Workload.from_columns(arr, np.full(200, 500), np.full(200, 100))
    fixed = _run(wl, replicas=1)
    auto = _run(wl, **AUTO)
    assert auto["autoscale"]["scale_ups"] == 0 and auto["autoscale"]["replicas_peak"] == 1
    for k in ("ttft_mean_s", "tpot_mean_s", "completed", "output_tokens_per_s"):
        assert auto[k] == fixed[k]
    assert auto["gpu_hours"] == pytest.approx(fixed["gpu_hours"], rel=1e-9)  # one replica held throughout


@settings(max_examples=10, deadline=None)
@given(high=hst.floats(5, 60), interval=hst.floats(1, 60), startup=hst.floats(0, 120), maxr=hst.integers(1, 6))
def test_every_request_is_served_and_replicas_stay_in_bounds(high, interval, startup, maxr):
    wl = _step(low=2.0, high=high, seg_s=60.0)
    s = _run(wl, replicas=1, autoscale_max=maxr, autoscale_target=32, autoscale_startup_s=startup,
             autoscale_interval_s=interval)
    assert s["completed"] == len(wl)
    a = s["autoscale"]
    assert 1 <= a["replicas_mean"] <= maxr + 1e-9 and a["replicas_peak"] <= maxr


@pytest.mark.parametrize("kw, field", [
    (dict(autoscale_max=4, autoscale_startup_s=30), "autoscale_target"),
    (dict(autoscale_max=4, autoscale_target=10), "autoscale_startup_s"),
    (dict(replicas=3, autoscale_max=2, autoscale_target=10, autoscale_startup_s=1), "autoscale_max"),
    (dict(autoscale_target=10), "autoscale_target"),
    (dict(autoscale_max=4, autoscale_target=10, autoscale_startup_s=1, scheduler="disagg"), "autoscale_max"),
])
def test_incomplete_autoscaling_names_the_field(kw, field):
    with pytest.raises(InputError) as e:
        ServingPlan(**kw)
    assert e.value.field == field
