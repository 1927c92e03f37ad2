"""Two serving sources added in session 32 and the two engine rules they needed:

* validation/lmdeploy-0.2-a100-static.yaml: LMDeploy v0.2.0 TurboMind, Llama-2-7B on one A100-80G, the static
  inference table of docs/en/benchmark/a100_fp16.md, run by benchmark/benchmark.sh, whose config.ini sets
  cache_max_entry_count=1000 -- a *block count* in TurboMind (BlockManager: a value < 1 is a share of memory,
  anything else the number of blocks);
* validation/sglang-0.4-deepseek-v3-h200.yaml: SGLang v0.4.1, DeepSeek-V3 on 8 and 16 H200, the tables of
  benchmark/benchmark_dsv3/README.md; in 0.4.0 - 0.4.4 `--enable-dp-attention` alone sets dp_size = tp_size and
  halves chunked_prefill_size (0.4.0 - 0.4.1 also turn the overlap scheduler off), per the released wheels'
  server_args.py.

Expected values are hand formulas from those sources, not the code's constants."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.engines.lmdeploy import lmdeploy_setup
from parasim.engines.sglang import SglangProfile, dp_attention_auto, sglang_setup
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.validation_case import load_cases
from parasim.validation.serving import _MAX_CONCURRENCY, case_plan, predict_case

ROOT = Path(__file__).resolve().parents[1] / "validation"
LMD = load_cases(ROOT / "lmdeploy-0.2-a100-static.yaml")
SGL = load_cases(ROOT / "sglang-0.4-deepseek-v3-h200.yaml")
GIB = 1024 ** 3


# --- LMDeploy: cache_max_entry_count >= 1 is a block count ------------------------------------------------------

def test_turbomind_block_count_sizes_the_cache_in_blocks():
    """1000 blocks of 128 tokens of Llama-2-7B FP16 KV: 2 (K, V) x 32 layers x 4096 x 2 bytes = 512 KiB a token,
    128,000 tokens = 62.5 GiB -- what the page's mem(GB) column (76.55-78.4 with 12.6 GiB of weights) shows."""
    m, acc = get_model("llama-2-7b"), get_accelerator("a100-sxm-80gb")
    s = lmdeploy_setup("lmdeploy 0.2.0 (TurboMind)", "config.ini cache_max_entry_count=1000 max_batch_size=256",
                       m, acc, tp=1, pp=1, weights="fp16")
    assert s.kv_bytes == pytest.approx(1000 * 128 * 2 * 32 * 4096 * 2)
    assert s.kv_bytes / GIB == pytest.approx(62.5)
    assert s.max_batch == 256 and s.block_size == 128


def test_turbomind_block_count_from_a_flag_and_int8_cache():
    """The same rule for the server flag; quant_policy 8 halves the bytes per token."""
    m, acc = get_model("llama-2-7b"), get_accelerator("a100-sxm-80gb")
    s = lmdeploy_setup("lmdeploy 0.6.0", "--cache-max-entry-count 2000 --quant-policy 8", m, acc, tp=2, pp=1,
                       weights="fp16")
    # 0.6: 64-token blocks; TP 2 halves the KV heads per GPU; int8 = 1 byte
    assert s.kv_bytes == pytest.approx(2000 * 64 * 2 * 32 * (4096 // 2) * 1)


def test_a_share_below_one_is_still_a_share():
    m, acc = get_model("llama-2-7b"), get_accelerator("a100-sxm-80gb")
    s = lmdeploy_setup("lmdeploy 0.2.0", "config.ini cache_max_entry_count=0.5", m, acc, tp=1, pp=1,
                       weights="fp16")
    assert s.kv_bytes == pytest.approx(0.5 * acc.device_memory_bytes)  # 0.2.0 - 0.2.1: of the total memory


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0.01, max_value=1e5, allow_nan=False, allow_infinity=False))
def test_any_stated_cache_setting_gives_a_finite_pool(value):
    m, acc = get_model("llama-2-7b"), get_accelerator("a100-sxm-80gb")
    s = lmdeploy_setup("lmdeploy 0.2.0", f"cache_max_entry_count={value:.4f}", m, acc, tp=1, pp=1, weights="fp16")
    assert math.isfinite(s.kv_bytes) and s.kv_bytes >= 0


def test_lmdeploy_file_is_the_whole_table():
    """20 rows: batch 1/16/32/64 x the five default length pairs, one A100, 3 rounds per thread (benchmark.sh)."""
    assert len(LMD) == 20 and len({c.id for c in LMD}) == 20
    grid = set()
    for c in LMD:
        b = int(_MAX_CONCURRENCY.search(c.source).group(1))
        grid.add((b, c.workload["prompt_tokens"], c.workload["output_tokens"]))
        assert c.workload["requests"] == 3 * b
        assert c.cluster.gpus == 1 and c.plan["tp"] == 1 and c.model.name == "llama-2-7b"
        # every measured number is the one quoted in the source
        assert f"throughput(out tok/s) {c.measured['output_tokens_per_s']:g}" in c.source
        assert f"FTL(ave)(s) {c.measured['ttft_mean_s']:g}" in c.source
        assert re.search(r"github\.com/InternLM/lmdeploy/blob/f148d471f", c.source)
    assert grid == {(b, p, o) for b in (1, 16, 32, 64)
                    for p, o in ((1, 128), (128, 128), (128, 2048), (2048, 128), (2048, 2048))}


def test_lmdeploy_case_takes_the_stated_pool():
    plan, choices, prof = case_plan(LMD[-1])
    assert prof == "lmdeploy" and plan.max_batch == 256
    assert any("1000 128-token blocks" in str(c) for c in choices)


# --- SGLang 0.4.0 - 0.4.4: --enable-dp-attention alone means dp = tp ---------------------------------------------

@pytest.mark.parametrize("software, text, auto", [
    ("sglang 0.4.0", "--tp 8 --enable-dp-attention", True),
    ("sglang 0.4.1", "--tp 8 --enable-dp-attention", True),
    ("sglang 0.4.4", "--tp 8 --enable-dp-attention", True),
    ("sglang 0.4.4.post1", "--tp 8 --enable-dp-attention", False),  # PR #4390: --dp must be given
    ("sglang 0.4.5", "--tp 8 --enable-dp-attention", False),
    ("sglang 0.5.3", "--tp 8 --enable-dp-attention", False),
    ("sglang 0.3.6", "--tp 8 --enable-dp-attention", False),
    ("sglang 0.4.1", "--tp 8", False),
    ("sglang 0.4.1", "--tp 8 --enable-dp-attention --dp 4", False),  # stated: the explicit rule reads it
])
def test_dp_attention_auto_by_release(software, text, auto):
    assert dp_attention_auto(software, text + " " + software) is auto


def test_attention_dp_ranks():
    assert SglangProfile.attention_dp("--tp 8 --enable-dp-attention sglang 0.4.1", 8, "sglang 0.4.1") == (8, 8)
    assert SglangProfile.attention_dp("--tp 8 --enable-dp-attention sglang 0.5.3", 8, "sglang 0.5.3") is None
    assert SglangProfile.attention_dp("--tp 8 --enable-dp-attention --dp 2", 8, "sglang 0.5.3") == (2, 8)


@pytest.mark.parametrize("software, chunk, overlap", [
    ("sglang 0.4.1", 8192 // 2, False),  # 0.4.1: chunk halved, disable_overlap_schedule = True
    ("sglang 0.4.3", 8192 // 2, True),   # 0.4.2 - 0.4.4: chunk halved, overlap kept
])
def test_dp_attention_halves_the_chunk(software, chunk, overlap):
    m, acc = get_model("deepseek-v3"), get_accelerator("h200-sxm")
    s = sglang_setup(software, "--tp 8 --enable-dp-attention", m, acc, tp=8, pp=1, weights="fp8",
                     kv_dtype="bf16", ep=8)
    assert s.chunked_prefill_size == chunk and s.schedule_ahead is overlap
    # without DP attention the 0.4 default on a GPU of >= 25,000 MiB stands
    s0 = sglang_setup(software, "--tp 8", m, acc, tp=8, pp=1, weights="fp8", kv_dtype="bf16")
    assert s0.chunked_prefill_size == 8192 and s0.schedule_ahead is True


def test_sglang_file_is_the_whole_readme():
    """16 rows: 2 node counts x 2 launches x RPS 1/2/4/8 with 300 prompts per RPS unit, 1,024 in and out."""
    assert len(SGL) == 16 and len({c.id for c in SGL}) == 16
    for c in SGL:
        rate = c.workload["arrival"]["poisson_rate"]
        assert c.workload["requests"] == 300 * rate
        assert (c.workload["prompt_tokens"], c.workload["output_tokens"]) == (1024, 1024)
        assert c.cluster.gpus in (8, 16) and c.plan["tp"] == c.cluster.gpus
        assert c.plan["kv_cache"] == ("fp8" if "fp8_e5m2" in c.source else None)
        # the medians are the README's milliseconds, to the last digit
        for key, col in (("ttft_median_s", "Median TTFT"), ("tpot_median_s", "Median TPOT"),
                         ("e2e_median_s", "Median E2E Latency")):
            ms = re.search(rf"{col} \(ms\) ([0-9,.]+)", c.source).group(1)
            assert c.measured[key] == pytest.approx(float(ms.replace(",", "")) / 1000, abs=5e-9)
        assert f"Output token throughput (tok/s) {c.measured['output_tokens_per_s']:.2f}" in c.source


def test_sglang_single_node_cases_run_dp_attention():
    for c in SGL:
        plan, choices, _ = case_plan(c)
        if c.cluster.gpus == 8:
            assert (plan.tp, plan.replicas, plan.ep) == (1, 8, 8)
            assert plan.token_budget == 4096
        else:
            assert plan.tp == 16 and plan.replicas == 1


@pytest.mark.parametrize("case", [LMD[0], LMD[-1], SGL[0], SGL[-1]], ids=lambda c: c.id)
def test_cases_predict(case):
    res = predict_case(case)
    assert res.status == "ok"
    assert all(0 < res.predicted[k] < float("inf") for k in case.measured)
