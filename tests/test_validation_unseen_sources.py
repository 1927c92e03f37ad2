"""The serving case files added from new public sources on 2026-12-07 (docs/serving.md, "New public sources,
2026-12-07 (II)"): each row as its source prints it, and each row runs.

The printouts carry more than the measured values a case keeps (request count, token totals, duration). These
tests derive the case's workload back from those totals, so a mistyped row shows up here, and they check the
simulator's answer on these cases against conservation laws (fixed lengths, Little's law under the client's
concurrency cap) rather than against its own numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from parasim.validation.serving import predict_case
from tests.conftest import check_fixed_length_row

SHIPPED = Path(__file__).resolve().parents[1] / "validation"
CASES = load_cases(SHIPPED / "sglang-gpt-oss-h100.yaml") + load_cases(SHIPPED / "vllm-recipes-deepseek-v32-h20.yaml")


def _printed(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in the source"
    return float(m.group(1))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rows_match_the_printed_totals(case):
    """Requests x fixed lengths are the printed token totals; the measured values are the printed ones
    (TTFT printed in ms); printed output tokens / duration is the printed throughput to its rounding."""
    n = _printed(r"Successful requests (\d+)", case.source)
    wl = case.workload
    assert wl["requests"] == n
    assert wl["prompt_tokens"] * n == _printed(r"Total input tokens (\d+)", case.source)
    generated = _printed(r"Total generated tokens (\d+)", case.source)
    assert wl["output_tokens"] * n == generated
    tput = _printed(r"Output token throughput ([\d.]+)", case.source)
    assert case.measured["output_tokens_per_s"] == tput
    duration_s = _printed(r"Benchmark duration ([\d.]+) s", case.source)
    assert generated / duration_s == pytest.approx(tput, rel=2e-3)
    assert case.measured["ttft_mean_s"] == pytest.approx(_printed(r"Mean TTFT ([\d.]+) ms", case.source) / 1e3)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rows_run_and_conserve_tokens(case):
    """Every row predicts, and its tokens add up (conftest.check_fixed_length_row)."""
    check_fixed_length_row(case)


def test_client_concurrency_cap_bounds_requests_in_flight():
    """The sglang rows ran with --max-concurrency C: by Little's law the mean number of requests in flight,
    request rate x mean E2E, cannot exceed C (the printed 'Concurrency' is just under it)."""
    for case in CASES[:2]:
        cap = _printed(r"--max-concurrency (\d+)", case.source)
        assert _printed(r"Concurrency ([\d.]+)", case.source) <= cap
        p = predict_case(case).predicted
        assert p["requests_per_s"] * p["e2e_mean_s"] <= cap * (1 + 1e-6)
