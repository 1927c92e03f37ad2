"""vLLM V1's async scheduling by release (engines/vllm.py `_async_scheduling`).

From 0.14 (PR #27614) the V1 scheduler prepares step i+1 while the GPU runs step i, so the host's
per-iteration work leaves the critical path and only the gap between two steps stays in series.
Checked here: which releases, parts and setups get it (a stated flag wins), that only the series
host term moves (the GPU part of every iteration is the same), and the published direction: with
async scheduling vLLM's throughput rises, by 9-32 % in NVIDIA's own A/B on B200 (TensorRT-LLM issue
#8436), 5-10 % over the first async version from full overlap alone (vLLM PR #23569)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.engines.vllm import vllm_setup
from parasim.serving import ServingPlan, generate, simulate
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

B200 = get_accelerator("b200")
ROOT = Path(__file__).resolve().parents[1]


def _setup(software: str, source: str = "", gpu: str = "b200", pp: int = 1):
    return vllm_setup(software, source, get_accelerator(gpu), tp=1, weights="fp8", pp=pp)


def test_default_from_0_14_on_nvidia_only():
    old, new = _setup("vllm 0.13.0"), _setup("vllm 0.14.0")
    assert not old.async_scheduling and new.async_scheduling
    assert new.iteration_overhead_s < old.iteration_overhead_s
    assert "async scheduling" in new.why and "async scheduling" not in old.why
    # ROCm: the graph launch holds the host thread (vLLM issue #43801), so nothing changes there
    rocm_old, rocm_new = _setup("vllm 0.13.0", gpu="mi300x"), _setup("vllm 0.14.0", gpu="mi300x")
    assert rocm_new.iteration_overhead_s == rocm_old.iteration_overhead_s == old.iteration_overhead_s
    # an unnamed release keeps the synchronous host model
    assert not _setup("vllm").async_scheduling


@pytest.mark.parametrize(("software", "source", "pp", "on"), [
    ("vllm 0.20.1", "vllm serve M --no-async-scheduling", 1, False),
    ("vllm 0.20.1", "async_scheduling: false", 1, False),
    ("vllm 0.11.0", "vllm serve M --async-scheduling", 1, True),     # the flag exists from 0.10 (PR #19970)
    ("vllm 0.14.0", "", 2, False),                                    # pipeline parallelism: off by default
    ("vllm 0.14.0", "--distributed-executor-backend ray", 1, False),  # Ray executor: unsupported
    ("vllm 0.14.0", "--speculative-config '{\"method\": \"ngram\"}'", 1, False),
    ("vllm 0.14.0", "--speculative-config '{\"method\": \"eagle3\"}'", 1, True),  # EAGLE/MTP: PR #31998
])
def test_stated_flags_and_excluded_setups(software, source, pp, on):
    assert _setup(software, source, pp=pp).async_scheduling is on


@given(minor=hst.integers(8, 13), patch=hst.integers(0, 9),
       text=hst.text(alphabet="abcdefghijklmnopqrstuvwxyz -=_", max_size=40))
@settings(max_examples=60, deadline=None)
def test_no_release_before_0_14_overlaps_unless_stated(minor, patch, text):
    if "async" in text:
        text = text.replace("async", "")
    assert not _setup(f"vllm 0.{minor}.{patch}", text).async_scheduling


def test_only_the_series_host_term_moves():
    """An iteration of any batch costs the same GPU time either way; the difference is the host
    time taken off the critical path, the same for every batch."""
    model, cluster = get_model("llama-3.1-8b"), ClusterSpec(accelerator=B200, gpus=1)
    sync_s, async_s = _setup("vllm 0.13.0").iteration_overhead_s, _setup("vllm 0.14.0").iteration_overhead_s
    costs = [IterationCost.for_plan(model, cluster, ServingPlan(weights="fp8", iteration_overhead_s=s))
             for s in (sync_s, async_s)]
    for prefill_tokens, decode_seqs in [(0, 1), (0, 64), (512, 63), (8192, 0)]:
        tokens = prefill_tokens + decode_seqs
        pairs = prefill_tokens * prefill_tokens / 2
        t = [c.time_s(tokens, pairs, prefill_tokens, decode_seqs, decode_seqs * 1500.0,
                      decode_seqs + (1 if prefill_tokens else 0)) for c in costs]
        assert t[0] - t[1] == pytest.approx(sync_s - async_s, rel=1e-9)


def test_throughput_rises_by_a_published_size():
    """Llama-3.1-8B FP8 on one B200, 1000/1000 at 64 in flight (the new case file's setup): async
    scheduling raises throughput, and by less than 1.5x the largest published A/B gain (32 %)."""
    model, cluster = get_model("llama-3.1-8b"), ClusterSpec(accelerator=B200, gpus=1)
    wl = generate(requests=256, burst=True, prompt_tokens=1000, output_tokens=1000)
    tput = []
    for software in ("vllm 0.13.0", "vllm 0.14.0"):
        s = _setup(software)
        plan = ServingPlan(weights="fp8", kv_dtype="bf16", scheduler="sarathi", token_budget=s.token_budget,
                           max_batch=s.max_batch, iteration_overhead_s=s.iteration_overhead_s)
        tput.append(simulate(model, cluster, plan, wl, seed=0, max_concurrency=64).summary["output_tokens_per_s"])
    gain = tput[1] / tput[0] - 1
    assert 0.05 < gain < 0.48


def test_validate_reports_the_choice_through_the_cli():
    r = subprocess.run([sys.executable, "-m", "parasim", "validate", str(ROOT / "validation/vllm-v1-recent-nvidia.yaml"),
                        "--json"], capture_output=True, text=True, check=True, cwd=ROOT)
    cases = json.loads(r.stdout)["cases"]
    assert cases and all(any("async scheduling" in c for c in case["choices"]) for case in cases)


def _serve_overhead(*extra: str) -> float:
    r = subprocess.run([sys.executable, "-m", "parasim", "serve", "--model", "llama-3.1-8b", "--gpu", "b200",
                        "--weights", "fp8", "--prompt-tokens", "200", "--output-tokens", "50", "--requests", "8",
                        "--burst", "--json", *extra], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(r.stdout)["inputs"]["engine"]["defaults"]["iteration_overhead_s"]


def test_serve_engine_release_through_the_cli():
    sync_s, async_s = _serve_overhead("--engine", "vllm==0.13.0"), _serve_overhead("--engine", "vllm==0.14.0")
    assert async_s < sync_s
    # ngram speculation keeps the synchronous scheduler (vLLM PR #31998: only EAGLE/MTP overlap)
    spec = ("--spec-method", "ngram", "--num-speculative-tokens", "3", "--spec-acceptance", "0.5")
    assert _serve_overhead("--engine", "vllm==0.14.0", *spec) == sync_s
