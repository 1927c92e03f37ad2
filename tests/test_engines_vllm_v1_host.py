"""vLLM V1's per-request host work between two steps, in series with the GPU
(`serial_host_s_per_sequence`, engines.host.VLLM_V1_SYNC_HOST_S_PER_SEQ).

Without async scheduling the V1 engine walks its scheduled requests in Python between two GPU
steps, so the gap grows with the batch. Checked here against the one published figure (vllm issue
#10634: a 5-6 ms gap between two decode steps at batch 256), by hand arithmetic (the term adds,
it does not overlap), through the engine profile (which releases and parts take it) and through
the CLI and the compiled loop."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.engines.apply import engine_defaults
from parasim.engines.host import VLLM_V1_SYNC_HOST_S_PER_SEQ
from parasim.engines.vllm import vllm_setup
from parasim.serving import ServingPlan, generate
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from tests.conftest import serve_config
from tests.test_serving_fastloop import both, same

MODEL = get_model("llama-3-8b")
H100 = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=1)


def _fields(software: str, gpu: str = "h100-sxm") -> dict:
    wl = generate(requests=64, burst=True, prompt_tokens=128, output_tokens=128)
    _, fields, _ = engine_defaults(software, MODEL, get_accelerator(gpu), {"tp": 1, "weights": "bf16"}, wl)
    return fields


def test_gap_at_batch_256_is_the_published_5_to_6_ms():
    """The host part of a 256-sequence decode step of a V1 0.10 plan (fixed overhead plus the
    per-request work) is the gap vllm issue #10634 measured between two decode steps: 5-6 ms."""
    plan = ServingPlan(**_fields("vllm==0.10.2"))
    cost = IterationCost.for_plan(MODEL, H100, plan)
    b = cost.breakdown(256, 0.0, 0.0, 256, 256 * 300.0, 256)
    assert 5.0e-3 <= b["overhead"] <= 6.0e-3


@settings(max_examples=100, deadline=None)
@given(n=hst.integers(min_value=1, max_value=4096), ctx_per_seq=hst.integers(min_value=1, max_value=20000),
       per_seq=hst.sampled_from([1e-6, 1.5e-5, 1e-4]), prefill=hst.integers(min_value=0, max_value=2048))
def test_term_adds_per_sampling_row(n, ctx_per_seq, per_seq, prefill):
    """In series: time = the plain time + per_seq x sampling rows (no floor, no overlap); the
    breakdown still sums to time_s and carries it as host overhead; the decode step function
    gives time_s's float exactly."""
    plain = IterationCost.for_plan(MODEL, H100, ServingPlan())
    serial = IterationCost.for_plan(MODEL, H100, ServingPlan(serial_host_s_per_sequence=per_seq))
    tokens, pairs, ctx = n + prefill, prefill * (prefill + 1) / 2.0, float(n * ctx_per_seq)
    logits = n + (1 if prefill else 0)
    args = (tokens, pairs, 0.0, n, ctx, logits)
    assert serial.time_s(*args) == pytest.approx(plain.time_s(*args) + per_seq * logits, rel=1e-12)
    b = serial.breakdown(*args)
    assert b["total"] == pytest.approx(serial.time_s(*args), rel=1e-12)
    assert b["overhead"] == pytest.approx(plain.overhead_s + per_seq * logits, rel=1e-12)
    assert serial.decode_step_s(n)(ctx) == serial.time_s(n, 0.0, 0.0, n, ctx, n)


@pytest.mark.parametrize("software,gpu,expect", [
    ("vllm==0.8.5", "h100-sxm", True),     # V1 without async scheduling
    ("vllm==0.10.2", "h100-sxm", True),
    ("vllm==0.13.0", "h100-sxm", True),
    ("vllm==0.10.0", "mi300x", True),
    ("vllm==0.14.1", "h100-sxm", False),   # async scheduling by default: host work under the GPU step
    ("vllm==0.14.1", "mi300x", True),      # ROCm: the graph launch holds the host, nothing overlaps
    ("vllm==0.6.0", "h100-sxm", False),    # V0: its own (fixed) overhead model
])
def test_which_runs_take_the_term(software, gpu, expect):
    fields = _fields(software, gpu)
    assert (fields.get("serial_host_s_per_sequence", 0.0) > 0) is expect


@pytest.mark.parametrize("source,gpu,expect", [
    ("vllm serve M --async-scheduling", "h100-sxm", 0.0),  # 0.10+ on NVIDIA: the host work overlaps
    ("vllm serve M --async-scheduling", "mi300x", VLLM_V1_SYNC_HOST_S_PER_SEQ),  # ROCm: stays in series
    ("vllm serve M", "h100-sxm", VLLM_V1_SYNC_HOST_S_PER_SEQ),
])
def test_stated_async_scheduling(source, gpu, expect):
    setup = vllm_setup("vllm 0.11.0", source, get_accelerator(gpu), tp=1, weights="bf16")
    assert setup.serial_host_s_per_sequence == expect


def test_choice_names_the_field():
    wl = generate(requests=8, burst=True, prompt_tokens=64, output_tokens=8)
    _, _, choices = engine_defaults("vllm==0.10.2", MODEL, get_accelerator("h100-sxm"), {"tp": 1}, wl)
    assert any(c.field == "serial_host_s_per_sequence" and "10634" in c for c in choices)


@pytest.mark.parametrize("sched", ["sarathi", "vllm"])
def test_compiled_loop_equals_python_engine(sched):
    wl = generate(requests=300, rate=40.0, prompt_tokens=300, output_tokens=60, length_dist="lognormal", seed=3)
    slow, fast, ran = both(ServingPlan(scheduler=sched, serial_host_s_per_sequence=1.56e-5), wl)
    assert ran
    same(slow, fast)


def test_plan_mapping_without_the_term_is_unchanged():
    assert "serial_host_s_per_sequence" not in ServingPlan().to_mapping()
    assert ServingPlan(serial_host_s_per_sequence=1e-5).to_mapping()["serial_host_s_per_sequence"] == 1e-5


BASE = "model: llama-3-8b\ngpu: h100-sxm\nrate: 20\n"


@pytest.mark.parametrize("bad", ["-1", "nan", "abc", "11"])
def test_cli_rejects_a_bad_value(tmp_path, bad):
    r = serve_config(tmp_path, f"{BASE}serial_host_s_per_sequence: {bad}\nrequests: 10\n")
    assert r.returncode == 2 and "serial_host_s_per_sequence" in r.stderr and "Traceback" not in r.stderr


def test_cli_reports_the_term_in_the_plan(tmp_path):
    r = serve_config(tmp_path, f"{BASE}serial_host_s_per_sequence: 2.0e-05\nrequests: 40\n", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["inputs"]["plan"]["serial_host_s_per_sequence"] == 2.0e-5
