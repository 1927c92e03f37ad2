"""validation/sglang-0.4-h200-datacrunch.yaml: DataCrunch's sglang.bench_serving runs of Llama-3.3-70B (TP 4) and
Llama-3.1-405B (TP 8) on H200 under SGLang 0.4 (December 2024). The traces hold each request's lengths as
bench_serving drew them (--random-range-ratio 0, numpy seed 1); the checks tie them back to the totals the benchmark
printed, and every case must produce a prediction."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from parasim.specs.validation_case import load_cases
from parasim.validation.serving import predict_case

FILE = Path(__file__).resolve().parents[1] / "validation" / "sglang-0.4-h200-datacrunch.yaml"
CASES = load_cases(FILE)
_TOTALS = re.compile(r"total_input_tokens (\d+), total_output_tokens (\d+)")
_SHAPE = re.compile(r"random_input_len (\d+), random_output_len (\d+), random_range_ratio 0\.0, completed (\d+)")


def _trace(case) -> list[dict]:
    return [json.loads(line) for line in (FILE.parent / case.workload["trace"]).read_text().splitlines()]


def test_the_file_is_every_random_run():
    """14 runs: 70B online at 1/2/4/8/16 req/s and offline at five length pairs, 405B online at 1/2/4/8 req/s."""
    assert len(CASES) == 14 and len({c.id for c in CASES}) == 14
    assert sum(c.cluster.gpus == 4 and c.model.name == "llama-3.1-70b" for c in CASES) == 10
    assert sum(c.cluster.gpus == 8 and c.model.name == "llama-3.1-405b" for c in CASES) == 4
    assert all(c.cluster.accelerator.id == "h200-sxm" and c.plan["tp"] == c.cluster.gpus
               and c.plan["weights"] == "bf16" for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_trace_lengths_are_the_benchmarks_draws(case):
    """bench_serving's draws (numpy seed 1, prompt in [1, L], output in [0, O]) give exactly the printed totals,
    and the trace is those draws less the zero-output requests."""
    L, O, n = map(int, _SHAPE.search(case.source).groups())
    total_in, total_out = map(int, _TOTALS.search(case.source).groups())
    np.random.seed(1)
    prompt = np.random.randint(1, L + 1, size=n)
    output = np.random.randint(0, O + 1, size=n)
    assert int(prompt.sum()) == total_in and int(output.sum()) == total_out
    rows = _trace(case)
    keep = output > 0
    assert [r["prompt_tokens"] for r in rows] == prompt[keep].tolist()
    assert [r["output_tokens"] for r in rows] == output[keep].tolist()
    assert sum(r["output_tokens"] for r in rows) == total_out
    arrivals = [r["arrival_s"] for r in rows]
    assert arrivals == sorted(arrivals)


def test_online_arrivals_match_the_stated_rate():
    """The online traces are Poisson at the printed --request-rate: mean rate within 10 % over 300-3,200 requests."""
    for c in CASES:
        m = re.search(r"--request-rate (\d+)", c.source)
        rows = _trace(c)
        if m is None:
            assert all(r["arrival_s"] == 0 for r in rows)
            continue
        rate = len(rows) / rows[-1]["arrival_s"]
        assert rate == pytest.approx(int(m.group(1)), rel=0.10)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_case_is_predicted(case):
    res = predict_case(case)
    assert res.status == "ok", res.status
    for key in case.measured:
        assert 0 < res.predicted[key] < float("inf")
