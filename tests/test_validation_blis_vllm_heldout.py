"""validation/blis-vllm-heldout.yaml: BLIS's held-out vLLM 0.15.1 runs on H100 (Qwen3-14B, Llama-3.1-8B).

Checked here, each from the case's own source string: the measured means are the CSV's milliseconds / 1000;
every trace is the rule the header states (request count = rate x duration, prompt = system_prompt_len +
question_len, output = output_len, request n re-sends prompt n mod 100, arrivals = inference-perf's
ConstantLoadTimer seeded with [experiment id, stage]); the cases run V1 with the prefix cache and the
stated limits; and the catalog's Qwen3-14B has the size Qwen's model card publishes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from parasim.specs.catalog import get_model
from parasim.specs.validation_case import load_cases
from parasim.validation.serving import case_plan

from tests.conftest import check_constant_load_arrivals
from tests.conftest import quoted_number as _num

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "validation" / "blis-vllm-heldout.yaml"
CASES = load_cases(FILE)


def test_the_file_holds_the_four_stated_experiments():
    # experiments 13 (2 stages), 14 (2), 15 (1), 16 (2)
    assert len(CASES) == 7
    assert len({c.id for c in CASES}) == 7
    exps = [int(_num(r"ground_truth/(\d+)-", c.source)) for c in CASES]
    assert sorted(exps) == [13, 13, 14, 14, 15, 16, 16]
    for c in CASES:
        assert "vllm/vllm-openai:v0.15.1" in c.source and "NVIDIA-H100-80GB-HBM3" in c.source
        assert c.cluster.accelerator.id == "h100-sxm" and c.cluster.gpus == 1


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_measured_is_the_csv_in_seconds(case):
    ttft_ms = _num(r"ttft_mean actual ([\d.]+) ms", case.source)
    e2e_ms = _num(r"e2e_mean actual ([\d.]+) ms", case.source)
    assert case.measured["ttft_mean_s"] == pytest.approx(ttft_ms / 1000, rel=1e-15)
    assert case.measured["e2e_mean_s"] == pytest.approx(e2e_ms / 1000, rel=1e-15)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_trace_is_the_stated_rule(case):
    src = case.source
    rate, duration = _num(r"rate ([\d.]+)/s for", src), _num(r"/s for (\d+) s", src)
    n = int(rate * duration)
    prompt = int(_num(r"system_prompt_len (\d+)", src) + _num(r"question_len (\d+)", src))
    output = int(_num(r"output_len (\d+)", src))
    with open(case.base_dir / case.workload["trace"], newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["arrival_s", "prompt_tokens", "output_tokens", "prefix_id", "prefix_tokens"]
    rows = rows[1:]
    assert len(rows) == n
    assert all(int(r[1]) == prompt and int(r[4]) == prompt and int(r[2]) == output for r in rows)
    # inference-perf e8e0aa9: 10 groups x 10 prompts, request n sends prompt n mod 100
    assert [int(r[3]) for r in rows] == [k % 100 for k in range(n)]
    exp = int(_num(r"ground_truth/(\d+)-", src))
    stage = int(_num(r"stage_index (\d)", src))
    check_constant_load_arrivals([float(r[0]) for r in rows], rate=rate, duration_s=duration, seed=[exp, stage])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cases_run_v1_with_the_prefix_cache_and_stated_limits(case):
    plan, choices, prof = case_plan(case)
    assert prof == "vllm"
    assert plan.prefix_cache is True
    assert plan.token_budget == 2048 and plan.max_batch == 128  # --max-num-batched-tokens, --max-num-seqs
    assert plan.schedule_ahead


def test_qwen3_14b_is_the_published_size():
    """Qwen's model card (https://huggingface.co/Qwen/Qwen3-14B, "Model Overview"): 14.8 B parameters,
    13.2 B without embeddings; 40 layers, 40 query and 8 KV heads."""
    m = get_model("Qwen/Qwen3-14B")
    assert m.name == "qwen3-14b"
    assert (m.layers, m.heads, m.kv_heads) == (40, 40, 8)
    assert m.params_total / 1e9 == pytest.approx(14.8, abs=0.05)
    embeddings = 2 * 151936 * 5120  # input embedding and the untied LM head
    assert (m.params_total - embeddings) / 1e9 == pytest.approx(13.2, abs=0.05)
