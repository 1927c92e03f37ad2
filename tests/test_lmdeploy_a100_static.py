"""validation/lmdeploy-0.1-a100-static.yaml: LMDeploy's own static-inference table for Llama-2-70B on 4 x A100-80G
(TurboMind, v0.1.0a1, FP16, TP4; closed loop of `batch` threads x 6 rounds). The checks hold the file to what the
table and the script that produced it say, and every case must produce a prediction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from parasim.validation.serving import _MAX_CONCURRENCY, predict_case

FILE = Path(__file__).resolve().parents[1] / "validation" / "lmdeploy-0.1-a100-static.yaml"
CASES = load_cases(FILE)
#: profile_generation.py's defaults at commit ebe90bc: --concurrency, and the (prompt, completion) pairs
BATCHES = (1, 16, 32, 64)
LENGTHS = ((1, 128), (128, 128), (128, 2048), (2048, 128), (2048, 2048))


def test_the_file_is_the_whole_table():
    """20 rows: every default batch x every default length pair, one TP4 A100 replica, 6 rounds per thread."""
    assert len(CASES) == 20 and len({c.id for c in CASES}) == 20
    grid = {(int(_MAX_CONCURRENCY.search(c.source).group(1)), c.workload["prompt_tokens"], c.workload["output_tokens"])
            for c in CASES}
    assert grid == {(b, p, o) for b in BATCHES for p, o in LENGTHS}
    for c in CASES:
        b = int(_MAX_CONCURRENCY.search(c.source).group(1))
        assert c.workload["requests"] == 6 * b
        assert c.cluster.accelerator.id == "a100-sxm-80gb" and c.cluster.gpus == 4 and c.plan["tp"] == 4
        assert c.model.name == "llama-2-70b" and c.plan["weights"] == "fp16"
        assert set(c.measured) == {"output_tokens_per_s", "ttft_mean_s"}


def test_published_long_prompt_bursts_queue_behind_each_other():
    """In the table the mean first-token latency of 2048-token prompts grows about linearly with the number of
    threads (each round's prompts are prefilled together): batch 16 / 32 / 64 give 5.8 / 11.8 / 17.4-21.3 s,
    i.e. at least 2.5x the batch-16 value at batch 64 -- what a prefill-bound burst implies."""
    ttft = {(int(_MAX_CONCURRENCY.search(c.source).group(1)), c.workload["prompt_tokens"], c.workload["output_tokens"]):
            c.measured["ttft_mean_s"] for c in CASES}
    for out in (128, 2048):
        assert ttft[32, 2048, out] > 1.8 * ttft[16, 2048, out]
        assert ttft[64, 2048, out] > 2.5 * ttft[16, 2048, out]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_case_is_predicted(case):
    res = predict_case(case)
    assert res.status == "ok", res.status
    for key in ("output_tokens_per_s", "ttft_mean_s"):
        assert 0 < res.predicted[key] < float("inf")


def test_source_names_the_pinned_page():
    assert all(re.search(r"github\.com/InternLM/lmdeploy/blob/ebe90bc9[0-9a-f]*/docs/en/benchmark/a100_fp16\.md",
                         c.source) for c in CASES)
