"""validation/trtllm-1.2-perf-overview.yaml (docs/serving.md, "TensorRT-LLM's rewritten perf-overview"):
each row as the page states its setup, and each row's plan honours what the page states.

The page gives per ISL/OSL the request count of the dataset, per column a GPU, a layout ("TPn" or
"DEPn" = attention DP over n ranks with the experts spread over them) and a precision, and per model
the llm_options.yml. These tests check the case file against those statements (typed here from the
page, not from the file) and that the plan a case runs is the layout the column names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from parasim.validation.serving import case_plan, predict_case

SHIPPED = Path(__file__).resolve().parents[1] / "validation"
CASES = load_cases(SHIPPED / "trtllm-1.2-perf-overview.yaml")

#: the page's "Number of Requests" table (Reproducing Benchmarked Results, Preparing a Dataset)
PAGE_REQUESTS = {(1024, 1024): 3000, (8192, 1024): 1500, (1024, 8192): 1500, (32768, 1024): 1000,
                 (1024, 32768): 1000}
#: GPU column -> catalog part, as the page's Hardware list names them
PAGE_GPUS = {"B200": "b200", "GB200": "gb200", "H200": "h200-sxm", "H100": "h100-sxm"}


def _column(case) -> tuple[str, str, int, str]:
    m = re.search(r"column (\w+) (TP|DEP)(\d+) \((FP4|FP8)\)", case.source)
    assert m, case.source
    return m.group(1), m.group(2), int(m.group(3)), m.group(4)


def test_file_size_and_ids():
    assert len(CASES) == 85
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rows_follow_the_page_setup(case):
    """Request count from the page's table for the row's ISL/OSL; the GPU and count the column names
    (a TPn or DEPn column runs on n GPUs); FP4 columns on Blackwell, FP8 on Hopper; per-GPU metric."""
    wl = case.workload
    isl, osl = wl["prompt_tokens"], wl["output_tokens"]
    assert f"row {isl}/{osl}" in case.source
    assert wl["requests"] == PAGE_REQUESTS[(isl, osl)]
    assert f"{wl['requests']} requests" in case.source
    assert wl["arrival"] == "burst"
    gpu, layout, n, prec = _column(case)
    hw = case.cluster
    assert hw.accelerator.id == PAGE_GPUS[gpu]
    assert hw.gpus == n == case.plan["tp"]
    assert (prec == "FP4") == (gpu in ("B200", "GB200"))
    if "GPT-OSS" not in case.source:  # GPT-OSS runs openai's MXFP4 release checkpoint on every GPU
        assert case.plan["weights"] == prec.lower()
    assert set(case.measured) == {"output_tokens_per_s_per_gpu"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_dep_columns_run_attention_dp_and_tp_columns_do_not(case):
    """A DEPn column (enable_attention_dp with --tp n --ep n) is n one-GPU ranks with ep = n; a TPn
    column of a dense model, or at n = 1, stays tensor parallel."""
    _, layout, n, _ = _column(case)
    plan, _, engine = case_plan(case)
    assert engine == "tensorrt-llm"
    if layout == "DEP":
        assert "--ep" in case.source and "enable_attention_dp: true" in case.source
        assert (plan.tp, plan.ep, plan.replicas) == (1, n, n)
    else:
        assert (plan.tp, plan.ep, plan.replicas) == (n, 1, 1)


def test_gpt_oss_kv_cache_follows_the_stated_hopper_exception():
    """GPT-OSS's options: kv_cache_config dtype fp8, "Hopper: use auto" (the model's bfloat16)."""
    oss = [c for c in CASES if "GPT-OSS" in c.source]
    assert len(oss) == 36
    for c in oss:
        gpu = _column(c)[0]
        assert c.plan["kv_cache"] == ("bf16" if gpu in ("H100", "H200") else "fp8")


@pytest.mark.parametrize("cid", ["trtllm12-llama33-70b-h100-sxm-tp2-8192-1024",
                                 "trtllm12-qwen3-235b-h100-sxm-dep8-1024-8192"])
def test_per_gpu_prediction_is_the_total_over_the_gpus(cid):
    """The page's metric is per GPU: the prediction scored is the whole run's output rate over its GPUs,
    and the output rate is the request rate x the fixed output length."""
    case = next(c for c in CASES if c.id == cid)
    r = predict_case(case)
    assert r.status == "ok", r.reason
    p = r.predicted
    assert p["output_tokens_per_s_per_gpu"] * case.cluster.gpus == pytest.approx(p["output_tokens_per_s"], rel=1e-12)
    assert p["output_tokens_per_s"] == pytest.approx(p["requests_per_s"] * case.workload["output_tokens"], rel=1e-9)
