"""Which engine releases form each batch one iteration ahead (`ServingPlan.schedule_ahead`), beyond
SGLang's overlap scheduler (tests/test_serving_schedule_ahead.py checks the mechanism itself).

- vLLM V1 with async scheduling: `EngineCore.step_with_batch_queue` with two batches in flight
  (`max_concurrent_batches` = 2) schedules batch i+1 before it blocks on batch i, and reads new
  requests only after that (`run_busy_loop`): on with the async-scheduling default from 0.14
  (PR #27614) or a stated `--async-scheduling`, off with `--no-async-scheduling`.
- TensorRT-LLM's PyTorch flow: `PyExecutor._executor_loop_overlap` fetches requests and schedules
  batch i+1, launches it, then waits for batch i: on by default from 0.20 (PR #4174, the 0.20.0
  release notes), off with `disable_overlap_scheduler: true`; the TensorRT-engine flows never.
- The launch commands carry the choice the plan was simulated with.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from parasim.engines.apply import engine_defaults
from parasim.engines.launch import launch_for
from parasim.engines.trtllm import overlap_scheduler
from parasim.engines.vllm import vllm_setup
from parasim.serving import ServingPlan, Workload, generate
from parasim.specs.catalog import cluster_for, get_accelerator, get_model

ROOT = Path(__file__).resolve().parents[1]
MODEL = get_model("llama-3.1-8b")


def _vllm(software: str, source: str = "", gpu: str = "h100-sxm", pp: int = 1):
    return vllm_setup(software, source, get_accelerator(gpu), tp=1, pp=pp)


@pytest.mark.parametrize(("software", "source", "gpu", "pp", "ahead"), [
    ("vllm 0.13.0", "", "h100-sxm", 1, False),
    ("vllm 0.14.0", "", "h100-sxm", 1, True),                        # the default from 0.14 (PR #27614)
    ("vllm 0.20.1", "vllm serve M --no-async-scheduling", "h100-sxm", 1, False),
    ("vllm 0.10.2", "vllm serve M --async-scheduling -tp 2", "h100-sxm", 1, True),  # the flag from 0.10
    ("vllm 0.14.0", "", "h100-sxm", 2, False),                       # pipeline parallelism keeps it off
    ("vllm 0.7.3", "", "h100-sxm", 1, False),                        # V0
    ("vllm", "", "h100-sxm", 1, False),                              # no release named
])
def test_vllm_batches_formed_ahead_follow_async_scheduling(software, source, gpu, pp, ahead):
    s = _vllm(software, source, gpu, pp)
    assert s.schedule_ahead is ahead
    assert ("joins the one after next" in s.why) is ahead


def test_vllm_rocm_with_the_flag_forms_batches_ahead_but_keeps_the_host_in_series():
    """The engine loop is the same on ROCm; only the graph launch keeps the host busy there
    (vLLM issue #43801), so the stated flag forms batches ahead without the overlapped host time."""
    stated = _vllm("vllm 0.11.0", "--async-scheduling", gpu="mi300x")
    assert stated.schedule_ahead and not stated.async_scheduling
    assert stated.iteration_overhead_s == _vllm("vllm 0.11.0", gpu="mi300x").iteration_overhead_s
    assert not _vllm("vllm 0.14.0", gpu="mi300x").schedule_ahead  # no default there


@pytest.mark.parametrize(("software", "text", "cpp", "ahead"), [
    ("tensorrt-llm 1.0 (pytorch backend)", "", False, True),
    ("tensorrt-llm 0.20", "", False, True),
    ("tensorrt-llm (pytorch backend)", "", False, True),                       # unnamed: the current flow
    ("tensorrt-llm 0.19", "", False, False),                                   # enable_overlap_scheduler off
    ("tensorrt-llm 0.19", "pytorch_backend_config: {enable_overlap_scheduler: true}", False, True),
    ("tensorrt-llm 1.0", "disable_overlap_scheduler: true", False, False),
    ("tensorrt-llm 1.0", "disable_overlap_scheduler=True", False, False),
    ("tensorrt-llm 1.0", "disable_overlap_scheduler: false", False, True),
    ("tensorrt-llm 0.17", "", True, False),                                    # TensorRT engine, C++ executor
])
def test_trtllm_overlap_scheduler_by_release_and_flag(software, text, cpp, ahead):
    on, why = overlap_scheduler(software, text, cpp)
    assert on is ahead
    assert bool(why) is (ahead or "disable" in text and "true" in text.lower())


def _defaults(engine: str, gpu: str = "h100-sxm") -> dict:
    wl = generate(requests=16, burst=True, prompt_tokens=500, output_tokens=100)
    _, fields, choices = engine_defaults(engine, MODEL, get_accelerator(gpu), {}, wl)
    return fields, choices


@pytest.mark.parametrize(("engine", "ahead"), [("vllm==0.13.0", False), ("vllm==0.14.0", True),
                                               ("tensorrt-llm==1.0", True), ("tensorrt-llm==0.17", False),
                                               ("sglang==0.3", False), ("sglang==0.4", True)])
def test_engine_profiles_set_the_plan_field(engine, ahead):
    fields, choices = _defaults(engine)
    assert fields["schedule_ahead"] is ahead
    if ahead:
        assert any(c.field == "schedule_ahead" or "after next" in c for c in choices)


def test_an_arrival_during_a_step_waits_one_more_step_on_vllm_0_14():
    """The same two-request run under the vLLM 0.14 profile's plan, with and without the batch
    formed ahead: request B arrives in the middle of one of A's decode steps; formed ahead, it
    waits for that step and the whole next one (A alone, formed while the first ran)."""
    fields, _ = _defaults("vllm==0.14.0")
    cluster = cluster_for(get_accelerator("h100-sxm"), 1)
    base = {k: v for k, v in fields.items() if k != "schedule_ahead"}
    from parasim.serving import simulate
    lone = simulate(MODEL, cluster, ServingPlan(**base, schedule_ahead=True),
                    Workload.from_columns([0.0], [200], [400]))
    step_s = lone.summary["tpot_mean_s"]
    ta = 0.5 + 0.5 * step_s  # well inside A's decode (its prefill takes milliseconds)
    wl = Workload.from_columns([0.0, ta], [200, 200], [400, 10])
    q = [simulate(MODEL, cluster, ServingPlan(**base, schedule_ahead=ahead), wl).requests["queueing_s"][1]
         for ahead in (False, True)]
    assert q[1] - q[0] == pytest.approx(step_s, rel=0.02)


def _flags(cmd: str) -> list[str]:
    return [w for w in shlex.split(cmd, comments=True) if w.startswith("--")]


@pytest.mark.parametrize("ahead", [False, True])
def test_launch_commands_carry_the_simulated_choice(ahead):
    cluster = cluster_for(get_accelerator("h100-sxm"), 1)
    v = launch_for("vllm", MODEL, cluster, ServingPlan(scheduler="sarathi", schedule_ahead=ahead))
    assert ("--async-scheduling" in _flags(v.commands[0])) is ahead
    t = launch_for("trtllm", MODEL, cluster, ServingPlan(scheduler="continuous", schedule_ahead=ahead))
    opts = yaml.safe_load(t.files["extra.yml"])
    assert opts.get("disable_overlap_scheduler", False) is (not ahead)
    assert any("overlap scheduler" in n for n in t.notes) is (not ahead)


def test_serve_reports_the_default_through_the_cli():
    def ahead(engine: str) -> bool:
        r = subprocess.run([sys.executable, "-m", "parasim", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm",
                            "--engine", engine, "--prompt-tokens", "200", "--output-tokens", "20", "--requests", "4",
                            "--burst", "--json"], capture_output=True, text=True, check=True, cwd=ROOT)
        return json.loads(r.stdout)["inputs"]["engine"]["defaults"]["schedule_ahead"]
    assert ahead("vllm==0.14.0") and not ahead("vllm==0.13.0")


@pytest.mark.parametrize(("software", "spec", "ahead"), [
    ("tensorrt-llm 1.0", "ngram", False),   # support_overlap_scheduler: never for n-gram
    ("tensorrt-llm 1.0", "draft", False),   # a separate draft model: from PR #7651 (1.1)
    ("tensorrt-llm 1.1", "draft", True),
    ("tensorrt-llm 1.0", "eagle", True),    # one-model Eagle3 / MTP keep it
])
def test_trtllm_speculation_keeps_the_overlap_scheduler_only_where_the_executor_does(software, spec, ahead):
    on, why = overlap_scheduler(software, "", False, spec)
    assert on is ahead and why
