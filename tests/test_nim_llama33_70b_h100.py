"""validation/nim-llama33-70b-h100.yaml: NVIDIA's NIM benchmarking page, Llama-3.3-70B-Instruct NIM 1.8.0 on
2 x H100 (FP8, TP2), 5000-token prompts and 500-token outputs at client concurrency 1-250 (AIPerf, closed loop).
The file's checks hold it to what the published table itself implies, and every case must produce a prediction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from parasim.validation.serving import _MAX_CONCURRENCY, predict_case

FILE = Path(__file__).resolve().parents[1] / "validation" / "nim-llama33-70b-h100.yaml"
CONCURRENCY = [1, 5, 25, 50, 100, 150, 200, 250]
CASES = load_cases(FILE)


def _concurrency(case) -> int:
    return int(_MAX_CONCURRENCY.search(case.source).group(1))


def test_the_file_is_the_whole_table():
    """8 rows, one per published concurrency, all the same deployment and request shape."""
    assert len(CASES) == 8 and len({c.id for c in CASES}) == 8
    assert [_concurrency(c) for c in CASES] == CONCURRENCY
    assert all(c.kind == "serving" and c.cluster.accelerator.id == "h100-sxm" and c.cluster.gpus == 2
               and c.plan["tp"] == 2 and c.plan["weights"] == "fp8" and c.model.name == "llama-3.1-70b"
               and c.workload["prompt_tokens"] == 5000 and c.workload["output_tokens"] == 500 for c in CASES)
    assert all(set(c.measured) == {"ttft_mean_s", "tpot_mean_s", "output_tokens_per_s"} for c in CASES)


def test_published_rows_obey_littles_law():
    """Closed loop: output throughput = concurrency x 500 tokens / mean request latency, and the latency is
    TTFT + 499 inter-token gaps. The published columns satisfy it within 1 % on every row (0.0-0.5 %), so the metric
    mapping (TTFT mean, ITL = per-request TPOT mean, output tokens/s) is the one AIPerf reports."""
    for c in CASES:
        m = c.measured
        e2e_s = m["ttft_mean_s"] + 499 * m["tpot_mean_s"]
        assert _concurrency(c) * 500 / e2e_s == pytest.approx(m["output_tokens_per_s"], rel=0.01), c.id


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_case_is_predicted(case):
    """Each row runs to a prediction of all three published metrics (finite, positive)."""
    res = predict_case(case)
    assert res.status == "ok", res.status
    for key in ("ttft_mean_s", "tpot_mean_s", "output_tokens_per_s"):
        assert res.predicted[key] > 0 and res.predicted[key] < float("inf")


def test_throughput_rises_with_concurrency_then_saturates():
    """In the source, throughput grows with concurrency and is flat (within 1 %) from 100 on; the
    prediction must not fall as the client concurrency grows either (more work in flight never lowers it
    by more than scheduling noise)."""
    meas = [c.measured["output_tokens_per_s"] for c in CASES]
    assert meas[:5] == sorted(meas[:5]) and max(meas[4:]) / min(meas[4:]) < 1.01
    pred = [predict_case(c).predicted["output_tokens_per_s"] for c in CASES]
    assert all(b >= 0.97 * a for a, b in zip(pred, pred[1:]))


def test_source_names_the_url():
    assert all(re.search(r"https://docs\.nvidia\.com/nim/benchmarking/llm/1\.0\.0/performance", c.source)
               for c in CASES)
