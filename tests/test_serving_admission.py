"""Admission control (`--max-queued N`): shed rather than queue past a queue depth."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.serving import ServingPlan, simulate
from parasim.serving.workload import generate
from parasim.specs.catalog import cluster_for, get_accelerator, get_model

MODEL, GPU = "llama-3-8b", "h100-sxm"


def _run(rate, n, max_queued, replicas=1, router="round_robin"):
    wl = generate(requests=n, rate=rate, prompt_tokens=1000, output_tokens=250, seed=0, length_dist="lognormal")
    plan = ServingPlan(scheduler="sarathi", max_queued=max_queued, replicas=replicas, router=router)
    return simulate(get_model(MODEL), cluster_for(get_accelerator(GPU), replicas), plan, wl).summary


def test_shedding_bounds_the_wait_of_the_served_under_overload_at_the_same_served_rate():
    """Offered 3x what one engine serves: an unbounded queue grows for the whole run (TTFT in the
    tens of seconds); a bounded one refuses the excess, the served requests wait about as long as
    the queue takes to drain, and the engine serves about the same rate."""
    free, bounded = _run(60, 2000, None), _run(60, 2000, 16)
    assert free["shed"] == 0 and bounded["shed"] > 0.4 * 2000
    assert bounded["completed"] + bounded["dropped"] == 2000
    assert bounded["ttft_p99_s"] < 0.1 * free["ttft_p99_s"]
    assert abs(bounded["requests_per_s"] - free["requests_per_s"]) <= 0.15 * free["requests_per_s"]


def test_a_queue_bound_never_reached_changes_nothing():
    light = _run(2, 200, None)
    same = _run(2, 200, 10_000)
    assert same == light


@settings(max_examples=15, deadline=None)
@given(rate=hst.floats(1, 200), max_queued=hst.integers(1, 64), replicas=hst.integers(1, 3),
       router=hst.sampled_from(["round_robin", "least_outstanding_tokens"]))
def test_every_request_is_served_or_shed(rate, max_queued, replicas, router):
    s = _run(rate, 150, max_queued, replicas, router)
    assert s["completed"] + s["dropped"] == 150
    assert 0 <= s["shed"] <= s["dropped"]
