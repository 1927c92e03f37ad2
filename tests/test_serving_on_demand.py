"""On-demand stepping (engine.Loop._advance): instances that decode are stepped only up to the
instant of the next event that reads or feeds them, not through the loop's heap; the runs must be
exactly those of stepping every iteration through the heap."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.serving import ServingPlan, Workload, generate, simulate
from parasim.serving.engine import Loop
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from tests.test_serving_decode_runs import run_counting_decode_runs
from tests.test_serving_engine import util_for_blocks, workloads

MODEL = get_model("llama-3-8b")
CLUSTER = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=16)
ROUTERS = ["round_robin", "least_outstanding_tokens", "least_kv", "prefix_affinity", "llumnix"]


def _run(plan: ServingPlan, wl: Workload, *, on_demand: bool, **kw):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Loop, "STEP_ON_DEMAND", on_demand)
        return simulate(MODEL, CLUSTER, plan, wl, seed=1, **kw)


def _same(a, b) -> None:
    """The same run: summary and request columns exactly; the pooled inter-token gaps as a
    multiset. Their order is the heap's except where two instances' iterations start and end at
    the same instants (then instance order); the summary sorts them, only `--bench-json`'s mean
    sums them in array order (engine.Loop._tag_gaps)."""
    if a.itl_gaps is None or b.itl_gaps is None:  # an infeasible plan: the same verdict
        assert (a.feasible, a.reason, a.message) == (b.feasible, b.reason, b.message)
        return
    assert json.dumps(a.summary, sort_keys=True) == json.dumps(b.summary, sort_keys=True)
    for k, v in a.requests.items():
        np.testing.assert_array_equal(v, b.requests[k], err_msg=k)  # NaN == NaN here
    (va, wa), (vb, wb) = a.itl_gaps, b.itl_gaps
    oa, ob = np.lexsort((wa, va)), np.lexsort((wb, vb))
    np.testing.assert_array_equal(va[oa], vb[ob])
    np.testing.assert_array_equal(wa[oa], wb[ob])


def _plan(kind: str, sched: str, router: str, pp: int, replicas: int, util: float, block: int, prefix: bool,
          reserve: str, max_queued: int | None) -> ServingPlan:
    common = dict(block_size=block, prefix_cache=prefix, gpu_memory_utilization=util, max_queued=max_queued,
                  router=router)
    if kind == "disagg":
        return ServingPlan(scheduler="disagg", prefill_gpus=pp * replicas, prefill_pp=pp, decode_gpus=2 * pp,
                           decode_pp=pp, **common)
    return ServingPlan(scheduler=sched, pp=pp, replicas=replicas, kv_reservation=reserve, token_budget=512,
                       **common)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=workloads, kind=hst.sampled_from(["colocated", "disagg"]),
       sched=hst.sampled_from(["sarathi", "vllm", "continuous", "splitfuse", "static"]),
       router=hst.sampled_from(ROUTERS), pp=hst.sampled_from([1, 2, 3]), replicas=hst.sampled_from([1, 2]),
       blocks=hst.sampled_from([60, 200, 100000]), block=hst.sampled_from([1, 16]), prefix=hst.booleans(),
       reserve=hst.sampled_from(["incremental", "full"]), max_queued=hst.sampled_from([None, 1, 4]),
       burst=hst.booleans())
def test_on_demand_equals_heap_stepping(w, kind, sched, router, pp, replicas, blocks, block, prefix, reserve,
                                        max_queued, burst):
    gaps, prompts, outputs, pids = w
    plens = [min(p - 1, 300) if g >= 0 else 0 for p, g in zip(prompts, pids)]
    arrivals = np.zeros(len(gaps)) if burst else np.cumsum(gaps)  # a burst: every event at one instant
    wl = Workload.from_columns(arrivals, prompts, outputs, pids, plens)
    util = min(0.99, util_for_blocks(max(1, blocks * 16 // block), block=block))
    plan = _plan(kind, sched, router, pp, replicas, util, block, prefix, reserve, max_queued)
    fast, slow = _run(plan, wl, on_demand=True), _run(plan, wl, on_demand=False)
    _same(fast, slow)
    if fast.feasible:
        s = fast.summary
        assert s["completed"] + s["dropped"] == len(prompts)  # conservation, from the workload alone


@pytest.mark.parametrize("plan", [
    ServingPlan(scheduler="sarathi", pp=2, replicas=2),
    ServingPlan(scheduler="vllm", replicas=3, router="least_outstanding_tokens"),
    ServingPlan(scheduler="disagg", prefill_gpus=2, decode_gpus=4, decode_tp=2),
    ServingPlan(scheduler="disagg", prefill_gpus=2, prefill_pp=2, decode_gpus=4, decode_pp=2),
])
def test_on_demand_on_longer_runs(plan):
    """A few hundred requests with lognormal lengths: long decode stretches between events."""
    wl = generate(requests=300, rate=25, prompt_tokens=400, output_tokens=150, length_dist="lognormal", seed=7)
    _same(_run(plan, wl, on_demand=True), _run(plan, wl, on_demand=False))


def test_on_demand_takes_decode_runs_in_coupled_loops():
    """The point of it: a pipeline-parallel or disaggregated plan steps most decode iterations in
    decode runs (before, only independent replicas did), so the heap sees few of them."""
    wl = generate(requests=100, rate=5, prompt_tokens=200, output_tokens=300, seed=2)
    for plan in (ServingPlan(scheduler="sarathi", pp=2), ServingPlan(scheduler="disagg", prefill_gpus=1, decode_gpus=1)):
        res, stepped = run_counting_decode_runs(plan, wl, CLUSTER)
        # 299 of each request's 300 tokens are decode steps, most with no prompt in the batch
        assert stepped > 0.5 * res.summary["iterations"], plan
        assert res.summary["output_tokens_emitted"] == 100 * 300


def test_on_demand_off_for_coupled_extras():
    """A closed-loop client or an autoscaler couples instances through their answers or ticks:
    those loops keep every iteration on the heap (no instance is stepped on demand)."""
    wl = generate(requests=50, rate=10, prompt_tokens=200, output_tokens=40, seed=3)
    for plan, kw in ((ServingPlan(pp=2), {"max_concurrency": 4}),
                     (ServingPlan(replicas=1, autoscale_max=3, autoscale_target=4, autoscale_startup_s=30), {})):
        calls = []
        inner = Loop._advance

        def spy(self, inst, tau):
            calls.append(tau)
            inner(self, inst, tau)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Loop, "_advance", spy)
            res = simulate(MODEL, CLUSTER, plan, wl, **kw)
        assert not calls and res.summary["completed"] == 50


@settings(max_examples=200, deadline=None)
@given(n=hst.integers(min_value=1, max_value=600), ctx=hst.integers(min_value=1, max_value=4_000_000),
       host=hst.sampled_from([None, 2e-5, 4e-4]), graph=hst.sampled_from([None, 0, 8, 256]),
       per_ctx=hst.sampled_from([0.0, 3e-9]), tp=hst.sampled_from([1, 2]))
def test_decode_step_s_is_time_s(n, ctx, host, graph, per_ctx, tp):
    """The decode run's per-n step function gives time_s's float exactly, host terms included."""
    from parasim.serving.itercost import IterationCost

    extra = {} if host is None else {"eager_prefill_layer_s": host, "cuda_graph_max_batch": graph}
    plan = ServingPlan(tp=tp, host_s_per_context_token=per_ctx, **extra)
    cost = IterationCost.for_plan(MODEL, CLUSTER, plan)
    assert cost.decode_step_s(n)(ctx) == cost.time_s(n, 0.0, 0.0, n, ctx, n)


def test_decode_step_s_of_a_repriced_iteration_is_its_own():
    """Speculative decoding prices an iteration its own way: its step function is its time_s."""
    from parasim.serving.simulate import spec_cost

    plan = ServingPlan(spec_method="ngram", num_speculative_tokens=3, spec_acceptance=0.6)
    cost = spec_cost(MODEL, CLUSTER, plan, tp=1)
    for n, ctx in ((1, 500), (7, 9000), (64, 200_000)):
        assert cost.decode_step_s(n)(ctx) == cost.time_s(n, 0.0, 0.0, n, ctx, n)
