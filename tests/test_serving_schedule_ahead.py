"""Batches formed one iteration ahead (`ServingPlan.schedule_ahead`, serving/engine.py): SGLang's
overlap scheduler (from 0.4, `Scheduler.event_loop_overlap`) launches batch i, blocks on batch
i-1's result and only then receives requests and forms batch i+1, so a request that arrives while
batch i runs joins batch i+2 at the earliest. Checked against the rule itself: the wait grows by
exactly the iteration formed ahead of the request, an idle engine takes an arrival at once, and
the loops that run the same plan (single-engine, general event loop, on-demand stepping) agree."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.engines.sglang import sglang_setup
from parasim.serving import ServingPlan, Workload, generate, simulate
from parasim.serving.engine import Loop
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

MODEL = get_model("llama-3-8b")
CLUSTER = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=1)


def _plan(ahead: bool, **kw) -> ServingPlan:
    return ServingPlan(scheduler="sglang", token_budget=8192, schedule_ahead=ahead, **kw)


def _decode_steps(prompt: int, output: int) -> np.ndarray:
    """End times of a lone request's first token and decode steps (prefill, then batch-1 steps),
    from the iteration cost: the schedule of a request with nothing else running."""
    ic = IterationCost.for_plan(MODEL, CLUSTER, _plan(False))
    t = ic.prefill_alone_s(prompt)
    ends = [t]
    for k in range(output - 1):
        t += ic.decode_step_s(1)(prompt + k + 1)
        ends.append(t)
    return np.array(ends)


@pytest.mark.parametrize("frac", [0.1, 0.5, 0.9])
def test_arrival_during_a_decode_step_waits_one_more_step(frac):
    """Request B arrives inside decode step k of a lone request A: without the lag it is
    scheduled when step k ends; formed ahead, step k+1 (A alone, formed while k ran) runs first."""
    prompt, out = 200, 400
    ends = _decode_steps(prompt, out)
    k = 50
    ta = ends[k - 1] + frac * (ends[k] - ends[k - 1])
    wl = Workload.from_columns([0.0, ta], [prompt, 300], [out, 20])
    plain = simulate(MODEL, CLUSTER, _plan(False), wl).requests["queueing_s"][1]
    ahead = simulate(MODEL, CLUSTER, _plan(True), wl).requests["queueing_s"][1]
    assert plain == pytest.approx(ends[k] - ta, rel=1e-6)
    assert ahead == pytest.approx(ends[k + 1] - ta, rel=1e-6)
    assert ahead - plain == pytest.approx(ends[k + 1] - ends[k], rel=1e-6)


def test_idle_engine_takes_an_arrival_at_once():
    wl = Workload.from_columns([0.0, 30.0], [500, 500], [10, 10])  # the first is long done at 30 s
    for ahead in (False, True):
        q = simulate(MODEL, CLUSTER, _plan(ahead), wl).requests["queueing_s"]
        assert q[0] == 0.0 and q[1] == 0.0


def test_arrival_at_an_iteration_end_is_seen_by_the_next_batch():
    """An arrival at exactly an iteration's end comes after that iteration (event order), when the
    next batch has not been formed yet: no extra wait."""
    prompt, out = 200, 100
    ends = _decode_steps(prompt, out)
    wl = Workload.from_columns([0.0, float(ends[20])], [prompt, 100], [out, 5])
    for ahead in (False, True):
        assert simulate(MODEL, CLUSTER, _plan(ahead), wl).requests["queueing_s"][1] == 0.0


def test_light_load_ttft_grows_by_about_one_decode_step():
    """Poisson arrivals at light load: each arrival finds a decode step running, so the median
    TTFT grows by about one decode step of the running batch (here a few sequences)."""
    wl = generate(requests=300, rate=1.0, prompt_tokens=512, output_tokens=256, seed=3)
    plain = simulate(MODEL, CLUSTER, _plan(False), wl)
    ahead = simulate(MODEL, CLUSTER, _plan(True), wl)
    step = plain.summary["itl_p50_s"]
    grow = ahead.summary["ttft_p50_s"] - plain.summary["ttft_p50_s"]
    assert 0.8 * step < grow < 1.2 * step
    assert ahead.summary["output_tokens"] == plain.summary["output_tokens"]


def _same(a, b) -> None:
    assert json.dumps(a.summary, sort_keys=True) == json.dumps(b.summary, sort_keys=True)
    for k, v in a.requests.items():
        np.testing.assert_array_equal(v, b.requests[k], err_msg=k)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rate=hst.floats(0.5, 40.0), prompt=hst.integers(16, 3000), output=hst.integers(1, 300),
       seed=hst.integers(0, 50), budget=hst.sampled_from([512, 2048, 8192]))
def test_the_loops_agree(rate, prompt, output, seed, budget):
    """One replica: the single-engine loop (round robin), the general event loop with on-demand
    stepping (another router) and with every iteration on its heap run the same schedule."""
    wl = generate(requests=60, rate=rate, prompt_tokens=prompt, output_tokens=output, seed=seed)
    plan = ServingPlan(scheduler="sglang", token_budget=budget, schedule_ahead=True)
    alone = simulate(MODEL, CLUSTER, plan, wl)
    events = simulate(MODEL, CLUSTER, ServingPlan(scheduler="sglang", token_budget=budget, schedule_ahead=True,
                                                  router="least_outstanding_tokens"), wl)
    _same(alone, events)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Loop, "STEP_ON_DEMAND", False)
        heap = simulate(MODEL, CLUSTER, ServingPlan(scheduler="sglang", token_budget=budget, schedule_ahead=True,
                                                    router="least_outstanding_tokens"), wl)
    _same(alone, heap)


@pytest.mark.parametrize(("software", "source", "ahead", "attention"), [
    ("sglang 0.3.6", "", False, "flash2"),          # no overlap scheduler by default; FlashInfer 0.1.x
    ("sglang 0.4", "", True, "flash2"),             # December 2024 images: FlashInfer 0.1.6 (PR #2517)
    ("sglang 0.4.1.post2", "", True, "flash2"),
    ("sglang 0.4.3.post4", "", True, "flash"),      # FlashInfer 0.2 (FA3 template on Hopper)
    ("sglang 0.5.2", "", True, "flash"),
    ("sglang", "", True, "flash"),                  # unnamed: the current defaults
    ("sglang 0.4", "python -m sglang.launch_server --disable-overlap-schedule", False, "flash2"),
])
def test_profile_by_release(software, source, ahead, attention):
    s = sglang_setup(software, source, MODEL, get_accelerator("h200-sxm"), tp=1, pp=1, weights="bf16",
                     kv_dtype="bf16")
    assert (s.schedule_ahead, s.attention) == (ahead, attention)
    assert ("joins the one after next" in s.why) is ahead


MOE = get_model("mixtral-8x7b")
EP_CLUSTER = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=2)


def _ep_plan(ahead: bool) -> ServingPlan:
    return ServingPlan(scheduler="sglang", token_budget=8192, tp=1, replicas=2, ep=2, schedule_ahead=ahead)


def test_attention_dp_lockstep_holds_an_arrival_for_the_batch_formed_ahead():
    """Attention-DP ranks in lockstep (serving/lockstep.py) run one scheduler each, formed ahead
    like a single engine's: a request arriving while the group's iteration runs waits one more
    group iteration than without the lag (never less, never more than that one step), and an
    arrival at an idle group is taken at once."""
    wl = Workload.from_columns([0.0, 1.0], [200, 300], [400, 20])
    plain = simulate(MOE, EP_CLUSTER, _ep_plan(False), wl).requests["queueing_s"]
    ahead = simulate(MOE, EP_CLUSTER, _ep_plan(True), wl).requests["queueing_s"]
    assert plain[0] == ahead[0] == 0.0
    # one group decode step of one sequence: well under 50 ms for Mixtral on an H100, above 1 ms
    assert 1e-3 < ahead[1] - plain[1] < 0.05
    idle = Workload.from_columns([0.0, 60.0], [200, 300], [40, 20])  # the first is long done at 60 s
    for on in (False, True):
        assert simulate(MOE, EP_CLUSTER, _ep_plan(on), idle).requests["queueing_s"][1] == 0.0
