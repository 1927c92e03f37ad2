"""The compiled single-engine loop (serving.fastloop) against the Python engine, its reference:
byte-identical results on every in-scope run, the Python engine everywhere else, and the
`PARASIM_FASTPATH` switch's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.errors import InputError
from parasim.serving import ServingPlan, Workload, generate, simulate
from parasim.serving import fastloop
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from tests.test_serving_engine import util_for_blocks, workloads

MODEL = get_model("llama-3-8b")
CLUSTER = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=3)
IN_SCOPE = ["continuous", "vllm", "sarathi", "splitfuse", "sglang"]


@contextmanager
def fastpath(mode: str):
    old = os.environ.get("PARASIM_FASTPATH")
    os.environ["PARASIM_FASTPATH"] = mode
    try:
        yield
    finally:
        if old is None:
            del os.environ["PARASIM_FASTPATH"]
        else:
            os.environ["PARASIM_FASTPATH"] = old


def both(plan: ServingPlan, wl: Workload, model=MODEL):
    """(Python engine's result, compiled loop's result, whether the compiled loop ran)."""
    ran = []
    inner = fastloop.run
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastloop, "run", lambda loop: (ran.append(1), inner(loop)))
        with fastpath("0"):
            slow = simulate(model, CLUSTER, plan, wl, seed=1)
        with fastpath("1"):
            fast = simulate(model, CLUSTER, plan, wl, seed=1)
    return slow, fast, bool(ran)


def same(a, b) -> None:
    da, db = a.to_dict(include_requests=True), b.to_dict(include_requests=True)
    da.pop("sim_wall_s"), db.pop("sim_wall_s")
    assert json.dumps(da, sort_keys=True) == json.dumps(db, sort_keys=True)
    assert (a.itl_gaps is None) == (b.itl_gaps is None)  # an infeasible plan has none
    for x, y in zip(a.itl_gaps or (), b.itl_gaps or ()):  # every inter-token gap, in order
        np.testing.assert_array_equal(x, y)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=workloads, sched=hst.sampled_from(IN_SCOPE), blocks=hst.sampled_from([40, 60, 200, 100000]),
       block=hst.sampled_from([1, 16]), budget=hst.sampled_from([None, 64, 512, 1024]),
       max_batch=hst.sampled_from([None, 3, 64]), burst=hst.booleans(), replicas=hst.sampled_from([1, 1, 2, 3]),
       ahead=hst.booleans())
def test_compiled_loop_equals_python_engine(w, sched, blocks, block, budget, max_batch, burst, replicas, ahead):
    """Rates incl. bursts (every arrival at 0), KV pressure down to preemption and dropped
    requests, token budgets, batch caps, round-robin replicas, batches formed ahead: the whole
    JSON and every gap byte-identical."""
    gaps, prompts, outputs, _ = w
    arrivals = np.zeros(len(gaps)) if burst else np.cumsum(gaps)
    wl = Workload.from_columns(arrivals, prompts, outputs)
    util = min(0.99, util_for_blocks(max(1, blocks * 16 // block), block=block, max_tokens=budget or 8192,
                                     max_batch=max_batch or 256))
    plan = ServingPlan(scheduler=sched, block_size=block, gpu_memory_utilization=util, token_budget=budget,
                       max_batch=max_batch, replicas=replicas, schedule_ahead=ahead)
    slow, fast, ran = both(plan, wl)
    assert ran or not slow.feasible
    same(slow, fast)
    s = fast.summary
    if fast.feasible:  # conservation, from the workload alone
        assert s["completed"] + s["dropped"] == len(prompts)
        assert s["output_tokens"] == int(np.asarray(outputs)[fast.requests["completed"]].sum())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=workloads, sched=hst.sampled_from(IN_SCOPE), window=hst.sampled_from([1, 64, 300, 5000]),
       sliding=hst.sampled_from([None, 1, 16, 31]), budget=hst.sampled_from([None, 64, 512]))
def test_compiled_loop_equals_python_engine_with_sliding_windows(w, sched, window, sliding, budget):
    """A model with sliding-window layers (windows inside, across and beyond the contexts): the
    windowed attention arithmetic is the same in both loops."""
    gaps, prompts, outputs, _ = w
    wl = Workload.from_columns(np.cumsum(gaps), prompts, outputs)
    model = MODEL.with_(sliding_window=window, sliding_layers=sliding)
    slow, fast, ran = both(ServingPlan(scheduler=sched, token_budget=budget), wl, model)
    assert ran
    same(slow, fast)


@pytest.mark.parametrize("sched", ["sarathi", "vllm"])
def test_preempting_run_equal(sched):
    """A run with many preemptions (a small KV cache under a burst), checked to preempt."""
    wl = generate(requests=300, burst=True, prompt_tokens=400, output_tokens=200, length_dist="lognormal", seed=2)
    plan = ServingPlan(scheduler=sched, gpu_memory_utilization=util_for_blocks(300, max_tokens=8192), token_budget=8192)
    slow, fast, ran = both(plan, wl)
    assert ran and slow.summary["preemptions"] > 0
    same(slow, fast)


@pytest.mark.parametrize("sched", ["sglang", "sarathi"])
def test_batches_formed_ahead_equal_with_an_arrival_at_an_iteration_end(sched):
    """schedule_ahead: B arrives inside A's prefill iteration (held until the next batch has
    started), C exactly at its end (seen by the next batch, so queued before B): both loops keep
    that order, and C starts no later than B."""
    lone = simulate(MODEL, CLUSTER, ServingPlan(scheduler=sched, schedule_ahead=True),
                    Workload.from_columns([0.0], [2000], [50]), seed=1)
    end = float(lone.requests["first_token_s"][0])  # A's prefill iteration ends here
    wl = Workload.from_columns([0.0, end / 2, end], [2000, 300, 300], [50, 20, 20])
    plan = ServingPlan(scheduler=sched, schedule_ahead=True)
    slow, fast, ran = both(plan, wl)
    assert ran
    same(slow, fast)
    start = slow.requests["queueing_s"] + np.asarray(wl.arrival_s)
    assert start[2] <= start[1]  # sarathi: both fit the next batch together


@pytest.mark.parametrize("extra", [dict(prefix_cache=True), dict(replicas=2, router="least_outstanding_tokens"), dict(scheduler="static"),
                                   dict(kv_reservation="full"), dict(pp=2), dict(max_queued=5),
                                   dict(spec_method="ngram", num_speculative_tokens=3, spec_acceptance=0.6)])
def test_out_of_scope_runs_the_python_engine(extra, monkeypatch):
    python_engine_only(ServingPlan(**({"scheduler": "sarathi"} | extra)), monkeypatch)


def python_engine_only(plan: ServingPlan, monkeypatch, reason: str = "does not run") -> None:
    """`auto` sends a run the kernel does not reproduce to the Python engine, whatever its size;
    `1` (forced) refuses it with one message naming the switch and `reason`, never a quiet Python run."""
    import sys

    sim = sys.modules["parasim.serving.simulate"]  # the package exports the function under the same name

    wl = generate(requests=60, rate=20, prompt_tokens=200, output_tokens=30, seed=3)
    ran = []
    inner = fastloop.run
    monkeypatch.setattr(fastloop, "run", lambda loop: (ran.append(1), inner(loop)))
    monkeypatch.setattr(sim, "FAST_PATH_MIN_REQUESTS", 1)  # auto would take the kernel at any size
    with fastpath("0"):
        slow = simulate(MODEL, CLUSTER, plan, wl, seed=1)
    with fastpath("auto"):
        auto = simulate(MODEL, CLUSTER, plan, wl, seed=1)
    assert not ran
    same(slow, auto)
    with fastpath("1"), pytest.raises(InputError, match=f"PARASIM_FASTPATH.*{reason}") as e:
        simulate(MODEL, CLUSTER, plan, wl, seed=1)
    assert str(e.value).count("\n") == 0


def _cli(env: dict, *args: str, pre: str = "") -> subprocess.CompletedProcess:
    code = f"{pre}import sys; from parasim.cli.main import main; sys.argv = ['parasim', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, "serve", "--model", "llama-3-8b", "--gpu", "h100-sxm",
                           "--rate", "20", "--requests", "200", *args], capture_output=True, text=True,
                          env=os.environ | env)


def test_cli_json_same_by_path():
    a, b = _cli({"PARASIM_FASTPATH": "0"}, "--json"), _cli({"PARASIM_FASTPATH": "1"}, "--json")
    assert a.returncode == b.returncode == 0, b.stderr
    da, db = json.loads(a.stdout), json.loads(b.stdout)
    da.pop("sim_wall_s"), db.pop("sim_wall_s")
    assert da == db


def test_cli_bad_switch_and_missing_numba_exit_2():
    r = _cli({"PARASIM_FASTPATH": "fast"})
    assert r.returncode == 2 and "PARASIM_FASTPATH" in r.stderr + r.stdout and "Traceback" not in r.stderr
    block = "sys.modules['numba'] = None; "  # numba cannot be imported
    r = _cli({"PARASIM_FASTPATH": "1"}, pre="import sys; " + block)
    assert r.returncode == 2 and "numba" in r.stderr + r.stdout and "Traceback" not in r.stderr
    r = _cli({"PARASIM_FASTPATH": "auto"}, "--requests", "100", pre="import sys; " + block)
    assert r.returncode == 0, r.stderr  # auto falls back to the Python engine
    r = _cli({"PARASIM_FASTPATH": "1"}, "--prefix-cache")  # forced on a run the kernel does not model
    assert r.returncode == 2 and "prefix cache" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_switch_names_the_variable():
    with fastpath("yes"), pytest.raises(InputError, match="PARASIM_FASTPATH"):
        simulate(MODEL, CLUSTER, ServingPlan(), generate(requests=5, rate=5, prompt_tokens=50, output_tokens=5))


def test_auto_below_threshold_does_not_import_numba():
    code = ("import sys; from parasim.serving import ServingPlan, generate, simulate; "
            "from parasim.specs.catalog import get_accelerator, get_model; from parasim.specs.cluster import ClusterSpec; "
            "simulate(get_model('llama-3-8b'), ClusterSpec(accelerator=get_accelerator('h100-sxm'), gpus=1), "
            "ServingPlan(scheduler='sarathi'), generate(requests=50, rate=10, prompt_tokens=100, output_tokens=10)); "
            "print('numba' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=os.environ | {"PARASIM_FASTPATH": "auto"})
    assert r.stdout.strip() == "False", r.stderr


def test_benchmark_workload_10k_equal():
    """benchmarks/serve_speed.py's workload (sarathi, one H100, lognormal lengths, Poisson at 80 %
    of the saturated rate, about 16 req/s) at 10,000 requests."""
    rng = np.random.default_rng(0)
    n = 10_000
    prompt = np.clip(rng.lognormal(np.log(700), 0.8, n), 16, 7000).astype(np.int64)
    output = np.clip(rng.lognormal(np.log(180), 0.8, n), 4, 1500).astype(np.int64)
    gaps = rng.exponential(1.0 / 16.0, n)
    wl = Workload.from_columns(np.cumsum(gaps) - gaps[0], prompt, output)
    slow, fast, ran = both(ServingPlan(scheduler="sarathi"), wl)
    assert ran
    same(slow, fast)
