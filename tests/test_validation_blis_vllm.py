"""validation/blis-vllm-online.yaml: the inference-sim/training vLLM 0.15 runs, and vLLM V1's default
prefix cache (engines/vllm.py `_prefix_cache`).

Checked here: every case's trace is the rule the file's header states, re-derived from the numbers in
the case's own source string (request count = rate x duration, prompt = the measured prompt_len mean
rounded, output = output_len, request n re-sends prompt n mod 100, arrivals = inference-perf's
ConstantLoadTimer with the stated seed); the vLLM profile turns the prefix cache on for V1 with a
shared-prefix workload only, and a stated flag wins; and the cache then computes what vLLM's
`get_computed_blocks` leaves: a re-sent 592-token prompt prefills 592 - 16 x floor(591 / 16) = 16
tokens (attending to the cached 576), and of 300 requests over 100 prompts 200 hit.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from parasim.engines.apply import engine_defaults
from parasim.serving import ServingPlan, simulate
from parasim.serving.requests import Workload
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.specs.validation_case import load_cases
from parasim.validation.serving import case_plan

from tests.conftest import check_constant_load_arrivals
from tests.conftest import quoted_number as _num

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "validation" / "blis-vllm-online.yaml"
CASES = load_cases(FILE)


def _rows(case) -> list[list[str]]:
    with open(case.base_dir / case.workload["trace"], newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["arrival_s", "prompt_tokens", "output_tokens", "prefix_id", "prefix_tokens"]
    return rows[1:]


def test_the_file_has_every_stage_below_ten_percent_failures():
    # 16 experiments, 24 stages; the three overloaded reasoning runs (one stage each) are left out
    assert len(CASES) == 21
    assert len({c.id for c in CASES}) == 21
    for c in CASES:
        failures = _num(r"(\d+) failures", c.source)
        successes = _num(r"\((\d+) successes", c.source)
        assert failures / (failures + successes) <= 0.10


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_trace_is_the_stated_rule(case):
    src = case.source
    rate, duration = _num(r"rate ([\d.]+)/s for", src), _num(r"/s for (\d+) s", src)
    n = int(rate * duration)
    prompt = int(np.floor(_num(r"prompt_len\.mean ([\d.]+)", src) + 0.5))
    output = int(_num(r"output_len (\d+) \(every request", src))
    groups, per_group = int(_num(r"num_groups (\d+)", src)), int(_num(r"num_prompts_per_group (\d+)", src))
    rows = _rows(case)
    assert len(rows) == n
    assert all(int(r[1]) == prompt and int(r[4]) == prompt and int(r[2]) == output for r in rows)
    assert [int(r[3]) for r in rows] == [k % (groups * per_group) for k in range(n)]
    # ConstantLoadTimer: n exponential gaps scaled to sum to the duration; first request at 0
    exp = re.search(r"default_args/(\d{8})-(\d{6})-", src)
    stage = int(_num(r"stage_(\d)_lifecycle", src))
    check_constant_load_arrivals([float(r[0]) for r in rows], rate=rate, duration_s=duration,
                                 seed=[int(exp.group(1) + exp.group(2)), stage])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cases_run_v1_with_the_prefix_cache_and_stated_limits(case):
    plan, choices, prof = case_plan(case)
    assert prof == "vllm"
    assert plan.prefix_cache is True
    assert plan.token_budget == 2048 and plan.max_batch == 128  # exp-config.yaml
    assert plan.schedule_ahead  # async scheduling, the default from 0.14
    assert any("prefix cache on" in str(ch) for ch in choices)


def _wl(shared: bool) -> Workload:
    n = 300
    return Workload.from_columns(np.arange(n) * 1.0, np.full(n, 592), np.full(n, 8),
                                 np.arange(n) % 100 if shared else None, np.full(n, 592) if shared else None)


@pytest.mark.parametrize(("software", "flag", "shared", "on"), [
    ("vllm==0.15.1", "", True, True),
    ("vllm==0.15.1", "", False, None),   # nothing to share: the plan is left as it was
    ("vllm==0.6.3", "", True, None),     # V0: off unless asked for
])
def test_engine_default(software, flag, shared, on):
    _, fields, _ = engine_defaults(software, get_model("llama-2-7b"), get_accelerator("h100-sxm"), {}, _wl(shared))
    assert fields.get("prefix_cache") is on


def test_a_stated_plan_value_wins():
    _, fields, _ = engine_defaults("vllm==0.15.1", get_model("llama-2-7b"), get_accelerator("h100-sxm"),
                                   {"prefix_cache": False}, _wl(True))
    assert "prefix_cache" not in fields


@pytest.mark.parametrize(("software", "source", "on"), [
    ("vllm 0.15.1", "vllm serve M --no-enable-prefix-caching", False),
    ("vllm 0.15.1", "enable_prefix_caching: false", False),
    ("vllm 0.6.3", "vllm serve M --enable-prefix-caching", True),
])
def test_source_flags(software, source, on):
    case = CASES[0]
    text = case.source + " " + source
    variant = type(case)(**{**case.__dict__, "software": software, "source": text})
    plan, _, _ = case_plan(variant)
    assert bool(plan.prefix_cache) is on


def test_hits_and_prefilled_tokens_are_vllms():
    """300 requests re-sending 100 prompts of 592 tokens, one every 1 s (each done before the next):
    200 hit, and a hit prefills 16 tokens, so its TTFT is about that of a 16-token prompt."""
    model, cluster = get_model("llama-2-7b"), ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=1)
    plan = ServingPlan(tp=1, scheduler="sarathi", token_budget=2048, max_batch=128, prefix_cache=True)
    res = simulate(model, cluster, plan, _wl(True), seed=0)
    assert res.summary["prefix_cache_hits"] == 200
    n = 100
    short = Workload.from_columns(np.arange(n) * 1.0, np.full(n, 16), np.full(n, 8))
    full = Workload.from_columns(np.arange(n) * 1.0, np.full(n, 592), np.full(n, 8))
    r_short = simulate(model, cluster, plan, short, seed=0).summary["ttft_mean_s"]
    r_full = simulate(model, cluster, plan, full, seed=0).summary["ttft_mean_s"]
    hits = simulate(model, cluster, plan, _wl(True), seed=0)
    # the 100 first sends prefill in full; a hit's 16 tokens also attend to the 576 cached ones, so it
    # costs a little more than a 16-token prompt and far less than the whole one
    per_hit = (300 * hits.summary["ttft_mean_s"] - 100 * r_full) / 200
    assert r_short <= per_hit < r_short + 0.1 * (r_full - r_short)


def test_serve_engine_vllm_takes_it_and_the_flag_wins(tmp_path):
    """`serve --engine vllm==0.15.1` on a trace of re-sent prompts: the cache is on (200 hits of 300), and
    `--no-prefix-cache` turns it off (0 hits)."""
    import json
    import subprocess
    import sys
    trace = tmp_path / "t.csv"
    rows = ["arrival_s,prompt_tokens,output_tokens,prefix_id,prefix_tokens"]
    rows += [f"{k * 0.2:.3f},592,16,{k % 100},592" for k in range(300)]
    trace.write_text("\n".join(rows) + "\n")
    hits = []
    for extra in ([], ["--no-prefix-cache"]):
        out = subprocess.run([sys.executable, "-m", "parasim", "serve", "-m", "llama-2-7b", "--gpu", "h100-sxm",
                              "--engine", "vllm==0.15.1", "--trace", str(trace), "--json", *extra],
                             capture_output=True, text=True, check=True,
                             env={"PYTHONPATH": str(ROOT / "src"), "PATH": "", "PYTHONDONTWRITEBYTECODE": "1"})
        hits.append(json.loads(out.stdout)["summary"]["prefix_cache_hits"])
    assert hits == [200, 0]
