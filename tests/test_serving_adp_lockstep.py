"""Attention-DP ranks in lockstep (serving.lockstep): an EP group's iteration ends with its slowest rank."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.errors import InputError
from parasim.serving import ServingPlan, Workload, simulate
from parasim.serving.lockstep import DUMMY_TOKENS, RankCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

SIM = importlib.import_module("parasim.serving.simulate")
MIXTRAL = get_model("mixtral-8x7b")
DSV3 = get_model("deepseek-v3")


def _h100(gpus: int) -> ClusterSpec:
    return ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=gpus, gpus_per_node=8)


def _plan(ep: int = 2, **kw) -> ServingPlan:
    return ServingPlan(tp=1, replicas=ep, ep=ep, weights="bf16", **kw)


def _run(model, cluster, plan, wl, *, lockstep: bool = True, **kw):
    old = SIM.ADP_LOCKSTEP
    SIM.ADP_LOCKSTEP = lockstep
    try:
        return simulate(model, cluster, plan, wl, **kw)
    finally:
        SIM.ADP_LOCKSTEP = old


def test_decoder_waits_for_the_other_rank_prefill_by_hand():
    """Two ranks. A (10-token prompt) arrives first and goes to rank 0; B (a 4,000-token prompt)
    arrives while A's prefill runs and goes to rank 1, the rank with fewer active prompt tokens.
    Iteration 1: rank 0 prefills A, rank 1 runs a dummy token. Iteration 2: rank 0 decodes A's
    second token while rank 1 prefills B, so A's first inter-token gap is B's prefill (rank 1's own
    part) plus the MoE part over both ranks' tokens, not A's own decode step."""
    cl, plan = _h100(2), _plan(scheduler="continuous", token_budget=8192)
    cost = RankCost.for_plan(MIXTRAL, cl, plan.resolved(MIXTRAL))
    pre_a = cost.time_s(10, 10 * 11 / 2, 0.0, 0, 0.0, 1)
    dt1 = max(pre_a, cost.dummy_s()) + cost.group_s(10 + DUMMY_TOKENS, 10)
    wl = Workload.from_columns([0.0, dt1 / 2], [10, 4000], [3, 1])
    res = _run(MIXTRAL, cl, plan, wl)
    own_a = cost.time_s(1, 0.0, 0.0, 1, 11.0, 1)  # A's second token: one decode over 11 cached tokens
    own_b = cost.time_s(4000, 4000 * 4001 / 2, 0.0, 0, 0.0, 1)
    dt2 = max(own_a, own_b) + cost.group_s(4001, 4000)
    assert own_b > own_a  # the prefill is the slow rank
    first = res.requests["ttft_s"][0]
    assert first == pytest.approx(dt1, rel=1e-12)
    assert res.requests["ttft_s"][1] == pytest.approx(dt2 + dt1 / 2, rel=1e-12)  # B arrived at dt1 / 2
    # A's tokens: dt1, then dt1 + dt2 (waiting for B's prefill), then one more step alone with a dummy
    dt3 = max(cost.time_s(1, 0.0, 0.0, 1, 12.0, 1), cost.dummy_s()) + cost.group_s(1 + DUMMY_TOKENS, 1)
    assert res.requests["e2e_s"][0] == pytest.approx(dt1 + dt2 + dt3, rel=1e-12)
    lock = res.summary["lockstep"]
    assert lock["group_iterations"] == 3 and lock["dummy_steps"] == 2
    # rank-seconds waiting: iteration 2's decoder waits own_b - own_a; the dummy ranks' waits are small
    assert lock["wait_s"] >= own_b - own_a
    assert lock["wait_s"] == pytest.approx((max(pre_a, cost.dummy_s()) - min(pre_a, cost.dummy_s())) + (own_b - own_a)
                                           + abs(cost.time_s(1, 0.0, 0.0, 1, 12.0, 1) - cost.dummy_s()), rel=1e-9)


def test_equal_batches_cost_what_independent_replicas_cost():
    """With every rank's batch the same, own part + shared part is the pre-lockstep replica's
    iteration, whose experts saw ep equal batches."""
    cl, plan = _h100(8), ServingPlan(tp=1, replicas=8, ep=8, weights="fp8")
    cost = RankCost.for_plan(DSV3, cl, plan.resolved(DSV3))
    from parasim.serving.itercost import IterationCost
    alone = IterationCost.for_plan(DSV3, cl, plan.resolved(DSV3))
    for tokens, pairs, n, ctx in ((64, 0.0, 64, 64 * 900.0), (700, 500 * 501 / 2, 200, 200 * 1500.0), (1, 0.0, 1, 5.0)):
        split = cost.time_s(tokens, pairs, 0.0, n, ctx, n) + cost.group_s(8 * tokens, tokens)
        assert split == pytest.approx(alone.time_s(tokens, pairs, 0.0, n, ctx, n), rel=1e-12)


_REQS = hst.lists(hst.tuples(hst.floats(0, 3), hst.integers(1, 3000), hst.integers(1, 200)), min_size=1, max_size=30)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_REQS, hst.sampled_from(["continuous", "sarathi", "vllm", "sglang"]), hst.sampled_from([2, 4]))
def test_lockstep_conserves_tokens_and_never_beats_its_own_ranks(reqs, sched, ep):
    """Every request completes with all its tokens; the group's iterations are at least as long as
    any rank's busy time without waiting (wait >= 0), and every rank is charged the same group time."""
    arr, p, o = zip(*reqs)
    wl = Workload.from_columns(sorted(arr), list(p), list(o))
    res = _run(MIXTRAL, _h100(ep), _plan(ep, scheduler=sched), wl, record=True)
    s = res.summary
    assert s["completed"] == len(reqs) and s["output_tokens"] == sum(o)
    assert s["output_tokens_emitted"] >= sum(o) and s["kv_utilization_peak"] <= 1.0
    lock = s["lockstep"]
    assert lock["wait_s"] >= 0.0 and 0.0 < lock["balance_ratio_mean"] <= 1.0
    # an iteration's recorded time is the group's: ranks that start together end together
    ends: dict[float, set[float]] = {}
    for inst in res.recording.instances:
        for t, dt in zip(inst.starts["t_s"].tolist(), inst.starts["dt_s"].tolist()):
            ends.setdefault(t, set()).add(dt)
    assert ends and all(len(v) == 1 for v in ends.values())


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_REQS, hst.sampled_from(["continuous", "sarathi", "vllm"]))
def test_identical_streams_run_as_independent_replicas(reqs, sched):
    """Each request sent to every rank at once (ep copies): the ranks hold identical queues, so
    waiting for the slowest costs nothing and lockstep is the independent-replica run."""
    ep = 2
    arr, p, o = zip(*sorted(reqs))
    rep = lambda xs: [x for x in xs for _ in range(ep)]  # noqa: E731
    wl = Workload.from_columns(rep(arr), rep(p), rep(o))
    lock = _run(MIXTRAL, _h100(ep), _plan(ep, scheduler=sched), wl)
    alone = _run(MIXTRAL, _h100(ep), _plan(ep, scheduler=sched), wl, lockstep=False)
    assert lock.summary["lockstep"]["wait_s"] == pytest.approx(0.0, abs=1e-12)
    for k in ("ttft_s", "e2e_s"):
        np.testing.assert_allclose(lock.requests[k], alone.requests[k], rtol=1e-9)
    assert lock.summary["makespan_s"] == pytest.approx(alone.summary["makespan_s"], rel=1e-9)


def test_an_unbalanced_group_loses_throughput_to_waiting():
    """Long-tailed lengths (lognormal) keep the ranks out of step: some prefill while others decode,
    so part of every rank's time is spent waiting, and the balance ratio (blog 10's mean / max
    tokens over the ranks) is well below 1."""
    from parasim.serving.workload import generate
    wl = generate(requests=200, burst=True, prompt_tokens=800, output_tokens=300, length_dist="lognormal", seed=3)
    whole, chunked = (_run(MIXTRAL, _h100(4), _plan(4, max_batch=32, scheduler=s), wl, max_concurrency=64).summary
                      for s in ("continuous", "sarathi"))
    for s in (whole, chunked):
        lock = s["lockstep"]
        assert lock["wait_fraction"] > 0.0 and lock["balance_ratio_mean"] < 0.9 and lock["balanced_time_fraction"] < 1.0
    # whole prompts in one iteration leave the other ranks waiting longer than chunks of a budget do
    assert whole["lockstep"]["wait_fraction"] > chunked["lockstep"]["wait_fraction"]


def test_lockstep_refuses_features_it_does_not_model():
    wl = Workload.from_columns([0.0], [10], [5])
    with pytest.raises(InputError) as e:
        _run(MIXTRAL, _h100(2), _plan(overlap="nanoflow"), wl)
    assert e.value.field == "ep" and "--overlap" in str(e.value)


def test_non_ep_runs_carry_no_lockstep_object():
    wl = Workload.from_columns([0.0, 0.1], [100, 50], [5, 5])
    res = simulate(get_model("llama-3-8b"), _h100(1), ServingPlan(), wl)
    assert "lockstep" not in res.summary


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "parasim", *args], capture_output=True, text=True, timeout=120,
                          env=os.environ | (env or {}))


SERVE = ("serve", "--model", "mixtral-8x7b", "--gpu", "h100-sxm", "--gpus", "2", "--tp", "1", "--replicas", "2",
         "--ep", "2", "--weights", "bf16", "--requests", "40", "--rate", "20", "--length-dist", "lognormal")


def test_cli_serve_json_reports_the_wait():
    r = _cli(*SERVE, "--json")
    assert r.returncode == 0, r.stderr
    lock = json.loads(r.stdout)["summary"]["lockstep"]
    assert lock["ep"] == 2 and lock["group_iterations"] > 0 and lock["wait_s"] >= 0.0


def test_cli_fastpath_1_refuses_a_lockstep_plan():
    pytest.importorskip("numba")
    r = _cli(*SERVE, env={"PARASIM_FASTPATH": "1"})
    assert r.returncode == 2 and "PARASIM_FASTPATH" in r.stderr + r.stdout and "lockstep" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr


@settings(max_examples=40, deadline=None)
@given(hst.integers(1, 20_000), hst.integers(0, 20_000), hst.integers(1, 4_000), hst.integers(0, 4_000))
def test_shared_part_grows_with_the_group_tokens(total, more, most, more_most):
    """More routed tokens in the group, or more on its busiest sender, never make the shared MoE
    part cheaper: a rank's wait for its peers can only add time."""
    cl, plan = _h100(8), ServingPlan(tp=1, replicas=8, ep=8, weights="fp8")
    cost = RankCost.for_plan(DSV3, cl, plan.resolved(DSV3))
    assert cost.group_s(total + more, most) >= cost.group_s(total, most) * (1 - 1e-12)
    assert cost.group_s(total, most + more_most) >= cost.group_s(total, most) * (1 - 1e-12)
