"""Serving validation cases: software defaults, null fields, reported choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from parasim.serving.case import case_plan, predict_case
from parasim.specs.validation_case import load_cases

SHARED = Path(__file__).resolve().parents[2] / "shared" / "validation"


def _cases(name: str):
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return {c.id: c for c in load_cases(path) if c.kind == "serving"}


def test_trtllm_case_defaults_and_prediction():
    cases = _cases("dev.yaml")
    case = next(c for c in cases.values() if "tensorrt" in c.software and c.workload.get("output_tokens") == 128
                and c.workload.get("prompt_tokens") == 128)
    plan, choices, prof = case_plan(case)
    assert prof == "tensorrt-llm" and plan.kv_reservation == "full" and plan.token_budget == 8192
    assert plan.eager_prefill_layer_s is None  # the C++ runtime has no eager Python prefill
    assert any("99% of free memory" in c for c in choices)  # v0.11 perf-overview: kv_cache_free_gpu_mem_fraction 0.99
    res = predict_case(case)
    assert res.status == "ok" and res.choices
    meas = case.measured["output_tokens_per_s"]
    assert 0.5 * meas < res.predicted["output_tokens_per_s"] < 2.0 * meas


def test_vllm_trace_case_uses_source_memory_utilization_and_per_token_tpot():
    cases = _cases("dev-traces.yaml")
    case = next(iter(cases.values()))
    plan, choices, prof = case_plan(case)
    assert prof == "vllm" and plan.scheduler == "vllm" and plan.max_batch == 256 and plan.block_size == 16
    assert plan.gpu_memory_utilization == pytest.approx(0.97)
    assert plan.eager_prefill_layer_s and plan.eager_prefill_layer_s > 0  # prefill runs without CUDA graphs
    res = predict_case(case)
    assert res.status == "ok"
    assert {"ttft_mean_s", "tpot_mean_s", "e2e_mean_s"} <= set(res.predicted)
    assert any("per output token" in c for c in res.choices)


def test_vllm_eager_dispatch_per_layer_from_the_launch_count():
    """26 us per eager launch (8.4 ms eager Llama-3.1-8B step over 32 layers x 10 kernels); TP adds
    two all-reduces of two launches each (copy into the registered buffer + kernel)."""
    from parasim.serving.plan import eager_layer_dispatch_s

    assert eager_layer_dispatch_s(1) == pytest.approx(0.26e-3)
    assert eager_layer_dispatch_s(8) == pytest.approx(14 * 0.026e-3)


def test_trtllm_011_build_table_by_architecture():
    """The v0.11 perf-overview builds Llama-2-70B TP8 for 128/2048 with max_num_tokens 16384 and
    max_batch_size 1024; other TP8 runs use 8192 sequences; unknown networks get the defaults."""
    from parasim.serving.case import TRTLLM_MAX_BATCH, TRTLLM_MAX_NUM_TOKENS

    by_id = _cases("dev.yaml")
    plan, _, _ = case_plan(by_id["trtllm011-llama2-70b-h100-sxm-fp16-tp8-128-2048"])
    assert (plan.token_budget, plan.max_batch) == (16384, 1024)
    plan, _, _ = case_plan(by_id["trtllm011-llama2-70b-h100-sxm-fp16-tp8-2048-2048"])
    assert (plan.token_budget, plan.max_batch) == (16384, 8192)
    plan, _, _ = case_plan(by_id["trtllm011-llama3-8b-h100-sxm-fp8-tp1-128-128"])
    assert (plan.token_budget, plan.max_batch) == (8192, 2048)
    assert (TRTLLM_MAX_NUM_TOKENS, TRTLLM_MAX_BATCH) == (8192, 2048)
