"""Capacity is a rate the plan can serve: within the SLOs and stable (the offered rate within the
saturated throughput of a burst run, the median queueing bounded), as Sarathi-Serve and
DistServe require; it needs no --rate, and the run at the capacity is `serve --rate <capacity>`."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parasim.search.capacity import capacity
from parasim.serving import SLO, ServingPlan, Workload, simulate
from tests.conftest import make_cluster, make_model, run_cli

MODEL = make_model()
ISSUE = ["serve", "--model", "mistral-7b", "--gpu", "a100-sxm-80gb", "--scheduler", "sarathi"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheduler=st.sampled_from(["vllm", "sarathi", "continuous"]), max_batch=st.sampled_from([4, 16, 64]),
       n=st.integers(20, 60), prompt=st.integers(16, 1024), output=st.integers(2, 64), spread=st.booleans(),
       tpot_s=st.floats(0.01, 5.0), seed=st.integers(0, 3))
def test_tpot_only_capacity_never_exceeds_the_saturated_throughput(scheduler, max_batch, n, prompt, output, spread,
                                                                   tpot_s, seed):
    """With only a TPOT SLO, the decode steps stay fast however long requests queue, so the SLO
    alone would pass any rate; capacity must stay at or below what a burst of the same requests
    (the queue never empty) is served at."""
    rng = np.random.default_rng(seed)
    p = rng.integers(max(1, prompt // 2), prompt + 1, n) if spread else np.full(n, prompt)
    o = rng.integers(1, output + 1, n) if spread else np.full(n, output)
    cluster, plan = make_cluster(1), ServingPlan(scheduler=scheduler, max_batch=max_batch)
    cap = capacity(MODEL, cluster, plan, slo=SLO(tpot_s=tpot_s), requests=n, seed=seed, lengths=(p, o))
    burst = simulate(MODEL, cluster, plan, Workload.from_columns(np.zeros(n), p, o), slo=SLO(tpot_s=tpot_s), seed=seed)
    assert cap.requests_per_s <= burst.summary["requests_per_s"] * (1 + 1e-12)


def test_issue_example_capacity_is_a_rate_the_plan_keeps_up_with():
    """The issue's example: TPOT-only SLO, 99 % attainment, --capacity and no --rate."""
    r = run_cli(*ISSUE, "--slo-tpot", "0.1", "--attainment", "0.99", "--capacity", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    burst = run_cli(*ISSUE, "--burst", "--json")
    assert burst.returncode == 0, burst.stderr
    saturated = json.loads(burst.stdout)["summary"]["requests_per_s"]
    assert 0 < d["capacity_requests_per_s"] <= saturated
    assert d["capacity"]["saturated_requests_per_s"] == saturated
    # the rows shown are the run at the capacity: every request meets the TPOT SLO and waits little
    s = d["summary"]
    assert d["capacity"]["summary_at"] == "capacity" and s["slo_met"] and s["completed"] == s["requests"]
    assert s["queueing_p50_s"] <= 2.0 and d["capacity"]["binding"]


def test_run_at_the_capacity_is_serve_at_that_rate_and_the_next_rate_fails_its_binding_slo():
    args = ["serve", "--model", "mistral-7b", "--gpu", "a100-sxm-80gb", "--scheduler", "vllm", "--requests", "150",
            "--slo-itl", "0.05"]
    r = run_cli(*args, "--capacity", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    cap = d["capacity_requests_per_s"]
    again = run_cli(*args, "--rate", repr(cap), "--json")
    assert again.returncode == 0, again.stderr
    s = json.loads(again.stdout)["summary"]
    assert s == {k: v for k, v in d["summary"].items() if k != "capacity_requests_per_s"}
    assert s["slo_met"] and s["slo_itl_observed_s"] <= 0.05
    above = [p for p in d["capacity"]["probes"] if p["requests_per_s"] > cap]
    assert above and all(not p["meets_slo"] for p in above)
    first = min(above, key=lambda p: p["requests_per_s"])
    assert first["fails"] == d["capacity"]["binding"] and "itl" in first["fails"]
