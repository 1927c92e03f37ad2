"""Plans and requests the KV cache cannot hold: reported as results, never a crash or a hang."""

from __future__ import annotations

import json
from contextlib import contextmanager
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.errors import InputError
from parasim.search.plan_serve import evaluate, kv_holds_workload, kv_prune
from parasim.search.prune import REASONS, Pruned
from parasim.serving import ServingPlan, Workload, generate, simulate
from parasim.serving.engine import Instance
from parasim.serving.schedulers import SCHEDULERS
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from tests.conftest import run_cli
from tests.test_serving_cli import CONTRACT
from tests.test_serving_engine import util_for_blocks

L8, L70 = get_model("llama-3-8b"), get_model("llama-3-70b")
H100 = get_accelerator("h100-sxm")


def cluster(gpus: int) -> ClusterSpec:
    return ClusterSpec(accelerator=H100, gpus=gpus)


@contextmanager
def iteration_budget(wl: Workload, per_token: int = 20):
    """Turn a livelock into a failure without a clock: every engine iteration goes through
    `Instance.start` and processes at least one token, so a run needs at most one iteration per
    prompt and output token, times the recomputes preemption causes; `per_token` allows 19 of
    them per token before calling the run stuck."""
    tokens = int(wl.prompt_tokens.sum() + wl.output_tokens.sum())
    limit = per_token * tokens
    real_start = Instance.start
    iterations = 0

    def counted(inst, batch, t):
        nonlocal iterations
        iterations += 1
        assert iterations <= limit, f"{iterations} engine iterations for {tokens} tokens: stuck"
        return real_start(inst, batch, t)

    with patch.object(Instance, "start", counted):
        yield


def test_70b_at_tp2_bf16_is_an_infeasible_result_with_the_memory_breakdown():
    """Llama-3-70B in bf16 on two H100s (79.22 GiB each as CUDA reports them) at 85 % memory:
    67.34 GiB usable per GPU, of which the weights take 65.7 GiB (70.6 GB); after 0.13 GiB of
    activations and the 0.93 GiB reserve, 0.57 GiB at 160 KiB per token (80 layers x 4 KV heads x
    128 x 2 x 2 B) is 233 blocks, a 3,728-token pool that cannot hold a 4,608-token request."""
    wl = generate(requests=40, rate=5, prompt_tokens=4096, output_tokens=512)
    res = simulate(L70, cluster(2), ServingPlan(tp=2, gpu_memory_utilization=0.85), wl)
    assert not res.feasible and res.reason == "kv_cannot_hold_request"
    assert "3,728 tokens" in res.message and "4,608" in res.message
    kv = res.kv
    assert kv["usable_gib"] == pytest.approx(0.85 * 79.22)
    assert kv["weights_gib"] * 2**30 > 70e9 and kv["kv_tokens_per_engine"] == 3728
    assert kv["largest_request_tokens"] == 4608 and kv["largest_request_kv_tokens"] == 4608
    s = res.summary
    assert s["requests"] == s["dropped"] == s["unservable"] == 40 and s["completed"] == 0
    for k in CONTRACT:
        assert k in s, k
    d = res.to_dict()
    assert d["feasible"] is False and d["reason"] == "kv_cannot_hold_request"


def test_weights_that_leave_no_kv_cache_are_infeasible_not_an_error():
    res = simulate(L70, cluster(1), ServingPlan(tp=1), generate(requests=5, rate=1))
    assert not res.feasible and "no room for a KV cache" in res.message and res.kv["kv_blocks"] == 0
    # disaggregated pools are checked one by one
    res = simulate(L70, cluster(4), ServingPlan(scheduler="disagg", tp=2, gpu_memory_utilization=0.83),
                   generate(requests=5, rate=1))
    assert not res.feasible and "pool" in res.message and set(res.kv) == {"prefill", "decode"}


def test_requests_that_can_never_fit_are_counted_and_the_rest_complete():
    # previously a livelock: a chunked prefill that outgrows the whole cache, preempted and readmitted forever
    util = util_for_blocks(60)  # 960 tokens
    wl = Workload.from_columns(np.arange(12) * 0.05, [300, 900] * 6, [50, 200] * 6)
    for sched in ("sarathi", "splitfuse", "sglang", "vllm", "continuous", "static", "batchllm"):
        with iteration_budget(wl):
            plan = ServingPlan(scheduler=sched, token_budget=512, max_batch=256, gpu_memory_utilization=util)
            res = simulate(L8, cluster(1), plan, wl)
        s = res.summary
        assert res.feasible, sched
        assert s["unservable"] == 6 and s["completed"] == 6 and s["dropped"] == 6, sched
        assert np.all(res.requests["completed"] == (wl.prompt_tokens == 300)), sched


@pytest.mark.parametrize("reserve, total", [("incremental", 60 * 16 + 1), ("full", 60 * 16)])
def test_the_largest_servable_request_fills_the_cache_exactly(reserve, total):
    """The pre-check counts blocks as the engine allocates them: incremental caches prompt + output - 1
    tokens (the last token is never stored), full reservation books prompt + output."""
    util = util_for_blocks(60)
    plan = ServingPlan(scheduler="sarathi", kv_reservation=reserve, gpu_memory_utilization=util)
    wl = Workload.from_columns([0.0, 1.0], [400, 400], [total - 400, total - 400 + 1])
    with iteration_budget(wl):
        res = simulate(L8, cluster(1), plan, wl)
    assert res.kv["kv_blocks"] == 60
    assert res.requests["completed"].tolist() == [True, False]
    assert res.summary["unservable"] == 1 and res.summary["kv_utilization_peak"] == 1.0


def test_cli_reports_infeasible_plans_with_exit_1():
    args = ["serve", "--model", "llama-3-70b", "--gpu", "h100-sxm", "--tp", "2", "--rate", "5", "--requests", "20",
            "--prompt-tokens", "4096", "--output-tokens", "512", "--gpu-memory-utilization", "0.84"]
    p = run_cli(*args, "--json", "--slo-ttft", "1", "--capacity")
    assert p.returncode == 1, p.stderr  # nothing feasible: the result is printed all the same
    d = json.loads(p.stdout)
    assert d["feasible"] is False and d["reason"] == "kv_cannot_hold_request" and d["message"]
    assert d["kv"]["kv_tokens_per_engine"] < d["kv"]["largest_request_kv_tokens"]
    assert d["summary"]["completed"] == 0 and d["summary"]["slo_attainment"] == 0.0
    assert d["capacity_requests_per_s"] == 0.0 == d["summary"]["capacity_requests_per_s"]
    for k in (*CONTRACT, "unservable"):
        assert k in d["summary"], k
    t = run_cli(*args)
    assert t.returncode == 1 and "infeasible" in t.stdout and "kv_cannot_hold_request" in t.stdout
    bad = run_cli(*args, "--scheduler", "nope")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_planner_prunes_plans_whose_kv_cannot_hold_a_request():
    assert "kv_cannot_hold_request" in REASONS
    wl = generate(requests=30, rate=5, prompt_tokens=2048, output_tokens=512)
    # 70B bf16 at TP2 on 40 GB A100s: the weights alone exceed the usable memory; TP4 leaves a KV pool
    item = {"gpu": "a100-sxm-40gb", "tp": 2, "pp": 1, "replicas": 1, "scheduler": "sarathi", "token_budget": None,
            "max_batch": None, "weights": "bf16", "kv_dtype": None, "requests": 30}
    ok, why = kv_holds_workload(L70, item, wl)
    assert not ok and "KV cache" in why
    res = evaluate({"model": L70, "workload": wl, "slo_ttft": 1.0, "slo_tpot": 0.1, "seed": 0}, item)
    assert not res["ok"] and res["reason"] == "kv_cannot_hold_request"
    pruned, errors = Pruned(), {}
    fits = {**item, "tp": 4, "replicas": 1}
    assert kv_prune(L70, [item, fits], wl, pruned, errors) == [fits]
    assert pruned.as_dict() == {"kv_cannot_hold_request": 1} and errors["kv_cannot_hold_request"]


# --- property: only InputError, never a hang --------------------------------------------------------
lengths = hst.integers(min_value=1, max_value=9000)
plans = hst.fixed_dictionaries({
    "scheduler": hst.sampled_from(sorted(SCHEDULERS)),
    "tp": hst.sampled_from([1, 2, 3, 4]),
    "pp": hst.sampled_from([1, 2]),
    "replicas": hst.sampled_from([1, 2]),
    "weights": hst.sampled_from(["bf16", "fp8", "int4"]),
    "kv_reservation": hst.sampled_from(["incremental", "full"]),
    "gpu_memory_utilization": hst.floats(min_value=0.05, max_value=1.0),
    "block_size": hst.sampled_from([1, 16, 64]),
    "token_budget": hst.one_of(hst.none(), hst.integers(min_value=1, max_value=4096)),
    "max_batch": hst.one_of(hst.none(), hst.integers(min_value=1, max_value=64)),
    "prefix_cache": hst.booleans(),
    "router": hst.sampled_from(["round_robin", "least_outstanding_tokens"]),
})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans, model=hst.sampled_from([L8, L70]), gpus=hst.sampled_from([1, 2, 4, 8]),
       n=hst.integers(min_value=1, max_value=12), data=hst.data())
def test_simulate_raises_only_input_error(plan, model, gpus, n, data):
    prompts = data.draw(hst.lists(lengths, min_size=n, max_size=n))
    outputs = data.draw(hst.lists(hst.integers(min_value=1, max_value=3000), min_size=n, max_size=n))
    pids = data.draw(hst.lists(hst.integers(min_value=-1, max_value=1), min_size=n, max_size=n))
    arrivals = np.cumsum(data.draw(hst.lists(hst.floats(min_value=0.0, max_value=0.3), min_size=n, max_size=n)))
    wl = Workload.from_columns(arrivals, prompts, outputs, pids, [min(p - 1, 500) for p in prompts])
    try:
        with iteration_budget(wl):
            res = simulate(model, cluster(gpus), ServingPlan(**plan), wl, slo={"ttft_s": 1.0})
    except InputError:
        return
    s = res.summary
    assert s["completed"] + s["dropped"] == n
    assert s["unservable"] <= s["dropped"]
    assert res.feasible == (s["unservable"] < n or n == 0)
