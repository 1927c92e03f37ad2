"""A Python executor's per-request host work, overlapped with the GPU (`host_s_per_sequence`).

TensorRT-LLM's PyTorch backend runs step i+1's host work while the GPU runs step i (the overlap
scheduler), so an iteration lasts max(GPU, host) + the non-overlapped overhead. Checked here by
hand arithmetic and invariants, through the engine profile (which parts get it) and through the
CLI; the published direction is the v1.0 perf-overview's own: on the 128/128 Qwen3-30B-A3B row the
Grace-hosted GB200 delivers less than the x86-hosted B200 (24,107 against 39,827 tokens/s) although
its GPU is the same or faster."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.engines.apply import engine_defaults
from parasim.engines.host import grace_hosted
from parasim.serving import ServingPlan, Workload, generate, simulate
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from tests.conftest import serve_config

MODEL = get_model("qwen3-30b-a3b")
GPU = get_accelerator("b200")
CLUSTER = ClusterSpec(accelerator=GPU, gpus=1)
PLAN = ServingPlan(tp=1, weights="fp4", kv_dtype="fp8", iteration_overhead_s=3e-4)


def _costs(per_seq: float) -> tuple[IterationCost, IterationCost]:
    with_host = ServingPlan(tp=1, weights="fp4", kv_dtype="fp8", iteration_overhead_s=3e-4, host_s_per_sequence=per_seq)
    return IterationCost.for_plan(MODEL, CLUSTER, PLAN), IterationCost.for_plan(MODEL, CLUSTER, with_host)


@settings(max_examples=150, deadline=None)
@given(n=hst.integers(min_value=1, max_value=4096), ctx_per_seq=hst.integers(min_value=1, max_value=20000),
       per_seq=hst.sampled_from([1e-6, 1e-5, 3e-5, 1e-4]), prefill=hst.integers(min_value=0, max_value=2048))
def test_iteration_is_max_of_gpu_and_host(n, ctx_per_seq, per_seq, prefill):
    """Overlapped: time = max(GPU part, per_seq x sampling rows) + overhead; never below the plain
    time; the breakdown still sums to time_s and its host wait is what the floor added."""
    plain, host = _costs(per_seq)
    ov = plain.overhead_s
    tokens, pairs, ctx = n + prefill, prefill * (prefill + 1) / 2.0, float(n * ctx_per_seq)
    args = (tokens, pairs, 0.0, n, ctx, n + (1 if prefill else 0))
    gpu = plain.time_s(*args) - ov
    t = host.time_s(*args)
    assert t == pytest.approx(max(gpu, per_seq * args[5]) + ov, rel=1e-12)
    assert t >= plain.time_s(*args)
    b = host.breakdown(*args)
    assert b["total"] == pytest.approx(t, rel=1e-12)
    assert b["eager_host_wait"] == pytest.approx(max(0.0, per_seq * args[5] - gpu), rel=1e-9, abs=1e-15)


@settings(max_examples=100, deadline=None)
@given(n=hst.integers(min_value=1, max_value=4096), ctx=hst.integers(min_value=1, max_value=40_000_000),
       per_seq=hst.sampled_from([0.0, 5e-6, 3e-5]))
def test_decode_step_function_is_time_s(n, ctx, per_seq):
    """The decode run's per-n step function gives time_s's float exactly, the host floor included."""
    cost = _costs(per_seq)[1]
    assert cost.decode_step_s(n)(ctx) == cost.time_s(n, 0.0, 0.0, n, ctx, n)


def test_host_floor_hides_under_long_gpu_steps():
    """The dense-row argument: a term that binds a 4,096-sequence decode of this MoE model leaves a
    step whose GPU work is longer than the host's untouched (same float)."""
    plain, host = _costs(3e-5)
    assert host.time_s(4096, 0.0, 0.0, 4096, 4096 * 200.0, 4096) > plain.time_s(4096, 0.0, 0.0, 4096, 4096 * 200.0, 4096)
    gpu_64 = plain.time_s(64, 0.0, 0.0, 64, 64 * 200.0, 64) - plain.overhead_s
    assert 3e-5 * 64 < gpu_64  # 1.9 ms of host under a longer GPU step
    assert host.time_s(64, 0.0, 0.0, 64, 64 * 200.0, 64) == plain.time_s(64, 0.0, 0.0, 64, 64 * 200.0, 64)


def _wl(n: int, isl: int, osl: int) -> Workload:
    return generate(requests=n, burst=True, prompt_tokens=isl, output_tokens=osl)


@pytest.mark.parametrize("software,gpu,expect", [
    ("tensorrt-llm==1.0", "gb200", True),
    ("tensorrt-llm==1.0", "gh200", True),
    ("tensorrt-llm==1.0", "b200", False),  # x86 host: no published figure
    ("tensorrt-llm==1.0", "h200-sxm", False),
    ("tensorrt-llm==0.15", "gh200", False),  # TensorRT engine, C++ runtime
    ("vllm==0.6.0", "gb200", False),
])
def test_which_runs_take_the_term(software, gpu, expect):
    acc = get_accelerator(gpu)
    _, fields, choices = engine_defaults(software, MODEL, acc, {"tp": 1, "weights": "fp4" if gpu != "h200-sxm" else "fp8"},
                                         _wl(64, 128, 128))
    assert (fields.get("host_s_per_sequence", 0.0) > 0) is expect
    assert any(c.field == "host_s_per_sequence" for c in choices) is expect
    assert grace_hosted(acc.form_factor) is (gpu in ("gb200", "gh200"))


def _qwen_row(gpu: str, n: int = 6000) -> float:
    acc = get_accelerator(gpu)
    wl = _wl(n, 128, 128)
    _, fields, _ = engine_defaults("tensorrt-llm==1.0", MODEL, acc, {"tp": 1, "weights": "fp4",
                                                                                      "kv_dtype": "fp8"}, wl)
    plan = ServingPlan(tp=1, weights="fp4", kv_dtype="fp8", **fields)
    return simulate(MODEL, ClusterSpec(accelerator=acc, gpus=1), plan, wl).summary["output_tokens_per_s"]


def test_grace_host_row_below_x86_host_row_as_published():
    """v1.0 perf-overview, Qwen3-30B-A3B FP4 TP1 128/128: GB200 24,107 < B200 39,827 tokens/s. The
    GPU-side model alone ranks GB200 at or above B200; with the executor's host work the order is
    the page's."""
    assert _qwen_row("gb200") < _qwen_row("b200")


def test_plan_mapping_without_the_term_is_unchanged():
    """Results made before the field existed stay byte-identical: a zero term is left out."""
    assert "host_s_per_sequence" not in ServingPlan().to_mapping()
    assert ServingPlan(host_s_per_sequence=1e-5).to_mapping()["host_s_per_sequence"] == 1e-5


#: a per-request / per-sequence host term set in a config file: (the plan's other lines, the field, a value)
HOST_TERMS = [("model: qwen3-30b-a3b\ngpu: gb200\nweights: fp4\nrate: 100\n", "host_s_per_sequence", 2.0e-5),
              ("model: llama-3-8b\ngpu: h100-sxm\nrate: 20\n", "frontend_s_per_request", 0.003)]


@pytest.mark.parametrize("base,field,value", HOST_TERMS)
def test_cli_rejects_a_negative_term(tmp_path, base, field, value):
    r = serve_config(tmp_path, f"{base}{field}: -1\nrequests: 10\n")
    assert r.returncode == 2 and field in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("base,field,value", HOST_TERMS)
def test_cli_reports_the_term_in_the_plan(tmp_path, base, field, value):
    r = serve_config(tmp_path, f"{base}{field}: {value:.1e}\nrequests: 40\n", "--json")  # YAML 1.1: 2.0e-05, not 2e-05
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["inputs"]["plan"][field] == value
