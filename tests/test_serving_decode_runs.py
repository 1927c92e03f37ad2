"""Decode runs (engine.Instance.decode_run): stretches of decode-only iterations stepped without a
batch or a scheduler call per step must give exactly the run that per-iteration stepping gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.serving import ServingPlan, Workload, generate, simulate
from parasim.serving.engine import Instance
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from tests.test_serving_engine import util_for_blocks, workloads

MODEL = get_model("llama-3-8b")
CLUSTER = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=2)
COLOCATED = ["static", "continuous", "vllm", "sarathi", "splitfuse", "sglang", "batchllm"]


def _run(plan: ServingPlan, wl: Workload, *, runs: bool, **kw):
    """The run with decode runs on, or with every iteration decided and applied one by one."""
    with pytest.MonkeyPatch.context() as mp:
        if not runs:
            mp.setattr(Instance, "decode_run", lambda self, t, until_s, done_cb, end_by_s=None: t)
        return simulate(MODEL, CLUSTER, plan, wl, seed=1, **kw)


def _same(a, b) -> None:
    assert json.dumps(a.summary, sort_keys=True) == json.dumps(b.summary, sort_keys=True)
    for k, v in a.requests.items():
        np.testing.assert_array_equal(v, b.requests[k], err_msg=k)  # NaN == NaN here
    for x, y in zip(a.itl_gaps, b.itl_gaps):
        np.testing.assert_array_equal(x, y)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=workloads, sched=hst.sampled_from(COLOCATED), blocks=hst.sampled_from([60, 200, 100000]),
       block=hst.sampled_from([1, 16]), prefix=hst.booleans(), reserve=hst.sampled_from(["incremental", "full"]),
       replicas=hst.sampled_from([1, 2]))
def test_decode_runs_equal_per_iteration_stepping(w, sched, blocks, block, prefix, reserve, replicas):
    gaps, prompts, outputs, pids = w
    prefix = prefix or sched == "batchllm"
    plens = [min(p - 1, 300) if g >= 0 else 0 for p, g in zip(prompts, pids)]
    wl = Workload.from_columns(np.cumsum(gaps), prompts, outputs, pids, plens)
    max_batch = 1024 if sched == "batchllm" else 256
    util = min(0.99, util_for_blocks(max(1, blocks * 16 // block), block=block, max_tokens=1024, max_batch=max_batch))
    plan = ServingPlan(scheduler=sched, block_size=block, prefix_cache=prefix, kv_reservation=reserve,
                       gpu_memory_utilization=util, token_budget=1024, replicas=replicas)
    fast, slow = _run(plan, wl, runs=True), _run(plan, wl, runs=False)
    _same(fast, slow)
    # conservation, from the workload alone: every completed request emitted its whole output
    s, done = fast.summary, fast.requests["completed"]
    assert s["completed"] + s["dropped"] == len(prompts)
    assert s["output_tokens"] == int(np.asarray(outputs)[done].sum())
    # the same finish order (ties broken by request id)
    fin = fast.requests["finish_s"]
    order = np.lexsort((np.arange(len(fin)), fin))
    np.testing.assert_array_equal(order, np.lexsort((np.arange(len(fin)), slow.requests["finish_s"])))


@pytest.mark.parametrize("extra", [dict(spec_method="ngram", num_speculative_tokens=3, spec_acceptance=0.6),
                                   dict(pp=2, scheduler="vllm"), dict(gpu_memory_utilization=util_for_blocks(150))])
def test_decode_runs_with_options_on(extra):
    wl = generate(requests=150, rate=30, prompt_tokens=300, output_tokens=120, length_dist="lognormal", seed=4)
    plan = ServingPlan(**({"scheduler": "sarathi"} | extra))
    _same(_run(plan, wl, runs=True), _run(plan, wl, runs=False))


def run_counting_decode_runs(plan: ServingPlan, wl: Workload, cluster: ClusterSpec = CLUSTER):
    """(the run, iterations stepped inside decode runs)."""
    stepped = []
    inner = Instance.decode_run

    def spy(self, t, until_s, done_cb, **kw):
        k = self.iterations
        t = inner(self, t, until_s, done_cb, **kw)
        stepped.append(self.iterations - k)
        return t

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Instance, "decode_run", spy)
        res = simulate(MODEL, cluster, plan, wl)
    return res, sum(stepped)


def test_decode_runs_cover_most_decode_only_iterations():
    """The fast path is taken: on a decode-heavy run most iterations are stepped inside runs."""
    wl = generate(requests=100, rate=5, prompt_tokens=200, output_tokens=300, seed=2)
    res, stepped = run_counting_decode_runs(ServingPlan(scheduler="sarathi"), wl)
    # each request's prompt is one iteration (200 tokens < the 512 budget); its other 299 tokens
    # are decode steps, and with arrivals 0.2 s apart most of them run with no prompt in the batch
    assert stepped > 0.5 * res.summary["iterations"]
    assert res.summary["output_tokens_emitted"] == 100 * 300


def test_recording_steps_every_iteration():
    """A recorded run keeps one timeline row per iteration: decode runs stay off."""
    wl = generate(requests=40, rate=5, prompt_tokens=200, output_tokens=50, seed=2)
    res = simulate(MODEL, CLUSTER, ServingPlan(scheduler="sarathi"), wl, record=True)
    assert res.recording.iterations == res.summary["iterations"]
