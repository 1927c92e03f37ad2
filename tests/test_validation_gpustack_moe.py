"""The GPUStack Performance Lab MoE serving files (docs/serving.md, "New public sources, 2026-12-07 (IV)"):
each row as its page prints it, and each row runs.

Every case's source repeats the serve command and the whole `vllm bench serve` printout. These tests derive
the case back from that text (request count, token totals, duration, parallelism, engine release), so a
mistyped row or a plan that does not match its command shows up here; the simulator's answers are checked
against conservation laws, not against its own numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from tests.conftest import check_fixed_length_row, check_printed_totals, printed_number

SHIPPED = Path(__file__).resolve().parents[1] / "validation"
FILES = ("gpustack-vllm-moe.yaml", "gpustack-sglang-moe.yaml")
CASES = [c for f in FILES for c in load_cases(SHIPPED / f)]
#: the files' inclusion rule (their headers): blocks that generated less than this share of
#: requests x output length (early EOS: the client sets no --ignore-eos) are left out
MIN_GENERATED_SHARE = 0.97



def test_both_files_hold_the_rows_their_headers_describe():
    """27 vLLM rows and 7 SGLang rows, unique ids, each file's rows naming its engine."""
    vllm = load_cases(SHIPPED / FILES[0])
    sglang = load_cases(SHIPPED / FILES[1])
    assert (len(vllm), len(sglang)) == (27, 7)
    assert len({c.id for c in CASES}) == len(CASES)
    assert all(c.software.startswith("vllm ") for c in vllm)
    assert all(c.software.startswith("sglang ") for c in sglang)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rows_match_the_printed_totals(case):
    check_printed_totals(case, MIN_GENERATED_SHARE)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_is_the_serve_command(case):
    """The GPU count and TP degree are the serve command's (-tp / --tp / --tp-size; none: one GPU); the
    client sent every request at once (no --request-rate, no --max-concurrency), so arrival is a burst; the
    software release is the page's "Engine Version" line quoted in the source."""
    src = case.source
    cmd = re.search(r'serving script": (.*?); "', src).group(1)
    m = re.search(r"(?:-tp|--tp|--tp-size)\s+(\d+)", cmd)
    tp = int(m.group(1)) if m else 1
    assert case.plan["tp"] == tp
    assert case.cluster.gpus == tp
    assert case.workload["arrival"] == "burst"
    assert not re.search(r"--request-rate|--max-concurrency", src)
    release = case.software.split()[1]
    assert re.search(r"(?:vLLM|SGLang): v" + re.escape(release) + ";", src)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rows_run_and_conserve_tokens(case):
    """Every row predicts, and its tokens add up (conftest.check_fixed_length_row)."""
    check_fixed_length_row(case)
