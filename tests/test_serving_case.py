"""Serving validation cases: software defaults, null fields, reported choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from parasim.validation.serving import case_plan, predict_case
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
    from parasim.engines.host import eager_layer_dispatch_s

    assert eager_layer_dispatch_s(1) == pytest.approx(0.26e-3)
    assert eager_layer_dispatch_s(8) == pytest.approx(14 * 0.026e-3)


def test_trtllm_011_build_table_by_architecture():
    """The v0.11 perf-overview builds Llama-2-70B TP8 for 128/2048 with max_num_tokens 16384 and
    max_batch_size 1024; other TP8 runs use 8192 sequences; unknown networks get the defaults."""
    from parasim.engines.trtllm import TRTLLM_MAX_BATCH, TRTLLM_MAX_NUM_TOKENS

    by_id = _cases("dev.yaml")
    plan, _, _ = case_plan(by_id["trtllm011-llama2-70b-h100-sxm-fp16-tp8-128-2048"])
    assert (plan.token_budget, plan.max_batch) == (16384, 1024)
    plan, _, _ = case_plan(by_id["trtllm011-llama2-70b-h100-sxm-fp16-tp8-2048-2048"])
    assert (plan.token_budget, plan.max_batch) == (16384, 8192)
    plan, _, _ = case_plan(by_id["trtllm011-llama3-8b-h100-sxm-fp8-tp1-128-128"])
    assert (plan.token_budget, plan.max_batch) == (8192, 2048)
    assert (TRTLLM_MAX_NUM_TOKENS, TRTLLM_MAX_BATCH) == (8192, 2048)


# ------------------------------------------------------------------ TensorRT-LLM release flows

def _llama31_8b():
    from parasim.specs.catalog import model_from_mapping

    return model_from_mapping({"name": "llama-3.1-8b", "family": "llama", "layers": 32, "hidden": 4096, "heads": 32,
                               "kv_heads": 8, "ffn_hidden": 14336, "vocab": 128256})


def test_trtllm_release_parsing():
    from parasim.engines.software import release

    assert release("tensorrt-llm 0.11") == (0, 11)
    assert release("TensorRT-LLM v1.0 (pytorch backend)") == (1, 0)
    assert release("tensorrt-llm 0.18.2") == (0, 18)
    assert release("tensorrt-llm") is None


def test_trtllm_bench_sizing_rule_by_hand():
    """Llama-3.1-8B FP8 on one H100 (80 GiB), ISL 128 / OSL 2048, worked by hand from
    trtllm-bench's rule: params = 2 x 128256 x 4096 (embedding + untied head) + 32 x (4096 x
    (4096 + 2 x 1024 + 4096) + 3 x 4096 x 14336 + 2 x 4096) + 4096 = 8.030e9 (1 byte each in
    FP8); KV per token = 2 x 32 layers x 8 heads x 128 x 1 byte = 65,536 B; requests =
    (80 GiB - params) x 0.95 / (65,536 x 2176) = 518.9 -> batch 128 x ceil(518.9 / 128) = 640;
    tokens = 518.9 x (1 + 128/2048) = 551 -> the 2048 floor."""
    from parasim.engines.trtllm import trtllm_bench_settings
    from parasim.specs.catalog import get_accelerator

    params = 2 * 128256 * 4096 + 32 * (4096 * (4096 + 2 * 1024 + 4096) + 3 * 4096 * 14336 + 2 * 4096) + 4096
    requests = (80 * 2**30 - params) * 0.95 / (65536 * 2176)
    assert 518 < requests < 520
    bs, tokens = trtllm_bench_settings(_llama31_8b(), get_accelerator("h100-sxm"), tp=1, pp=1, isl=128, osl=2048,
                                       weights="fp8", kv_dtype="fp8")
    assert (bs, tokens) == (640, 2048)


def test_trtllm_bench_sizing_mla_uses_the_tools_head_size():
    """DeepSeek-R1 (MLA) FP8 on 8 x H200 (141 GiB), --tp 8, ISL / OSL 1024 / 1024, FP8 KV: trtllm-bench
    reads num_key_value_heads 128 and, DeepSeek's config.json having no head_dim, a head size of
    hidden / heads = 7168 / 128 = 56 (tensorrt_llm/bench/build/dataclasses.py), so its KV per token is
    2 x 61 x 128 x 56 x 1 B = 874,496 B: requests = (8 x 141 GiB - 671.0e9) x 0.95 / (874,496 x 2048)
    = 286.5 -> batch 128 x ceil(286.5 / 128) = 384 (with the catalog's nominal head_dim 128: 125.4 -> 128)."""
    from parasim.cost.memory import weight_params_per_gpu
    from parasim.engines.trtllm import trtllm_bench_settings
    from parasim.specs.catalog import get_accelerator, get_model

    model = get_model("deepseek-r1")
    assert model.hidden // model.heads == 56 and model.kv_heads == 128 and model.layers == 61
    params = weight_params_per_gpu(model)
    assert params == pytest.approx(671.0e9, rel=1e-3)
    requests = (8 * 141 * 2**30 - params) * 0.95 / (2 * 61 * 128 * 56 * 1 * 2048)
    assert 286 < requests < 287
    bs, tokens = trtllm_bench_settings(model, get_accelerator("h200-sxm"), tp=8, pp=1, isl=1024, osl=1024,
                                       weights="fp8", kv_dtype="fp8")
    assert (bs, tokens) == (384, 2048)


@pytest.mark.parametrize("raw,expected", [(10, 64), (70, 96), (255, 256), (256, 256), (300, 384), (1023, 1024),
                                          (1025, 1280), (4096, 4096)])
def test_trtllm_bench_batch_rounding(raw, expected):
    from parasim.engines.trtllm import _round_batch

    assert _round_batch(raw) == expected


@pytest.mark.parametrize("raw,expected", [(100, 2048), (2100, 2304), (4096, 4096), (5000, 5120), (8192, 8192),
                                          (9000, 9216), (32768, 32768)])
def test_trtllm_bench_token_rounding(raw, expected):
    from parasim.engines.trtllm import _round_tokens

    assert _round_tokens(raw) == expected


def test_trtllm_flows_by_release():
    """v0.11: the page's table, 0.99 of free memory, chunked context. Engine-era trtllm-bench
    from 0.15 (to 0.18): the sizing rule, 0.95, chunked. PyTorch era (>= 0.19, or unnamed): no chunking,
    so the token budget must hold the longest prompt plus a full batch of decodes."""
    from parasim.engines.trtllm import trtllm_setup
    from parasim.specs.catalog import get_accelerator

    m, acc = _llama31_8b(), get_accelerator("h100-sxm")
    kw = dict(tp=1, pp=1, isl=20000.0, max_isl=20000, osl=2000.0, weights="fp8", kv_dtype="fp8")
    s011 = trtllm_setup("tensorrt-llm 0.11", m, acc, **kw)
    assert (s011.max_num_tokens, s011.max_batch, s011.kv_fraction, s011.chunked) == (8192, 2048, 0.99, True)
    assert s011.kv_reservation == "full"
    # v0.10: one build command for every network, MAX_UTILIZATION, 0.9 of free memory
    s010 = trtllm_setup("TensorRT-LLM v0.10.0", m, acc, **kw)
    assert (s010.max_num_tokens, s010.max_batch, s010.kv_fraction, s010.chunked) == (2048, 2048, 0.9, True)
    assert s010.kv_reservation == "incremental" and s010.cpp_runtime
    s015 = trtllm_setup("tensorrt-llm 0.15", m, acc, **kw)
    assert s015.chunked and s015.kv_fraction == 0.95 and s015.max_num_tokens < 20000
    s10 = trtllm_setup("tensorrt-llm 1.0 (pytorch backend)", m, acc, **kw)
    assert not s10.chunked and s10.max_num_tokens == 20000 + s10.max_batch
    unnamed = trtllm_setup("tensorrt-llm", m, acc, **kw)
    assert (unnamed.max_num_tokens, unnamed.max_batch, unnamed.chunked) == (s10.max_num_tokens, s10.max_batch, False)


def test_trtllm_engine_flow_kv_is_the_fraction_of_memory_left_after_runtime_and_decoder_buffers(tmp_path):
    """The published 0.12.0.dev startup log (Llama-2-7B FP8, one H100, max_batch_size 4096):
    "Allocated 1.14 GB GPU memory for runtime buffers" = 2.17 x 4096 x 32000 x 4 B, and a 4.35 GB
    decoder (8.3 x); parasim takes 2.15 + 4.6 (the smaller decoder figure of the two logs). The KV
    cache of a v0.11 case is then, by hand, 0.99 x (HBM - weights - activations without logits -
    1 GB reserve - buffers); the PyTorch flow (1.0) takes no such buffers."""
    from parasim.cost.memory import weight_bytes_per_gpu
    from parasim.cost.memory import activation_workspace_bytes, kv_budget
    from parasim.engines.trtllm import runtime_buffer_bytes
    from parasim.specs.validation_case import parse_case

    unit = 4096 * 32000 * 4.0
    assert 1.14e9 / unit == pytest.approx(2.17, abs=0.01) and 4.35e9 / unit == pytest.approx(8.3, abs=0.05)
    arch = {"family": "llama", "layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 32, "ffn_hidden": 11008,
            "vocab": 32000}
    raw = {"id": "x", "source": "s", "kind": "serving", "software": "tensorrt-llm 0.11", "model": arch,
           "hardware": {"accelerator": "h100-sxm", "gpus": 1}, "plan": {"tp": 1, "weights": "fp16"},
           "workload": {"requests": 100, "prompt_tokens": 128, "output_tokens": 2048, "arrival": "burst"},
           "measured": {"output_tokens_per_s": 1.0}}
    case = parse_case(raw, index=0, base_dir=tmp_path)
    plan, choices, _ = case_plan(case)
    m, acc = case.model, case.cluster.accelerator
    assert runtime_buffer_bytes(m, 4096) == pytest.approx(6.75 * unit)
    w = weight_bytes_per_gpu(m, tp=1, pp=1, weights="fp16")
    act0 = activation_workspace_bytes(m, tp=1, tokens=8192, logit_rows=0, act_bytes=2.0)
    expected_kv = 0.99 * (acc.device_memory_bytes - w - act0 - 1.0e9 - 6.75 * unit)
    kvb = kv_budget(m, acc, tp=1, pp=1, weights="fp16", kv_dtype="fp16", block_size=64,
                    gpu_memory_utilization=plan.gpu_memory_utilization, max_tokens=8192, max_batch=4096)
    assert kvb.kv == pytest.approx(expected_kv, rel=1e-9)
    assert any("runtime and decoder buffers" in c for c in choices)
    raw["software"] = "tensorrt-llm 1.0"
    _, choices10, _ = case_plan(parse_case(raw, index=0, base_dir=tmp_path))
    assert not any("decoder buffers" in c for c in choices10)


def test_trtllm_bench_012_to_014_look_up_the_shipped_table_by_max_sequence_length():
    """trtllm-bench 0.12 - 0.14 keyed its lookup by TP and the dataset's max sequence length:
    Llama-2-70B at TP8 gets the 2176-token entry (max_batch_size 1024) for 2048/128 as well as
    for 128/2048, the "general" entry (8192) for 2048/2048; a network the file lacks (here a
    405B-shaped one) gets trtllm-build's defaults; the KV share is the tool's default 0.90."""
    from parasim.engines.trtllm import trtllm_setup
    from parasim.specs.catalog import get_accelerator, model_from_mapping

    l2_70b = model_from_mapping({"name": "l2-70b", "family": "llama", "layers": 80, "hidden": 8192, "heads": 64,
                                 "kv_heads": 8, "ffn_hidden": 28672, "vocab": 32000})
    acc = get_accelerator("h100-sxm")
    kw = dict(pp=1, weights="fp8", kv_dtype="fp8")
    for isl, osl, expected in ((2048, 128, (16384, 1024)), (128, 2048, (16384, 1024)), (2048, 2048, (16384, 8192))):
        s = trtllm_setup("tensorrt-llm 0.13", l2_70b, acc, tp=8, isl=float(isl), max_isl=isl, osl=float(osl), **kw)
        assert (s.max_num_tokens, s.max_batch) == expected
        assert s.kv_fraction == 0.90 and s.chunked
    s = trtllm_setup("tensorrt-llm 0.12", l2_70b, acc, tp=4, isl=128.0, max_isl=128, osl=4096.0, **kw)
    assert (s.max_num_tokens, s.max_batch) == (8192, 256)
    big = model_from_mapping({"name": "405b", "family": "llama", "layers": 126, "hidden": 16384, "heads": 128,
                              "kv_heads": 8, "ffn_hidden": 53248, "vocab": 128256})
    s = trtllm_setup("tensorrt-llm 0.14", big, acc, tp=8, isl=128.0, max_isl=128, osl=128.0, **kw)
    assert (s.max_num_tokens, s.max_batch) == (8192, 2048) and "defaults" in s.flow
    # from 0.15 the sizing rule replaces the lookup (the batch depends on memory, not the table)
    s = trtllm_setup("tensorrt-llm 0.15", l2_70b, acc, tp=8, isl=2048.0, max_isl=2048, osl=128.0, **kw)
    assert s.kv_fraction == 0.95 and "sizing rule" in s.flow


def test_trtllm_011_table_tells_apart_networks_of_one_shape():
    """Llama-2-7B, Mistral-7B and Mixtral-8x7B share layers/hidden/vocab; the v0.11 table gives
    them different engines (Mixtral TP2: max_num_tokens 3072, max_batch_size 2048)."""
    from parasim.engines.trtllm import trtllm_setup
    from parasim.specs.catalog import get_accelerator, model_from_mapping

    base = {"name": "x", "layers": 32, "hidden": 4096, "heads": 32, "ffn_hidden": 14336, "vocab": 32000}
    mixtral = model_from_mapping({**base, "family": "moe", "kv_heads": 8, "experts": 8, "experts_per_token": 2,
                                  "moe_ffn_hidden": 14336})
    mistral = model_from_mapping({**base, "family": "llama", "kv_heads": 8})
    acc = get_accelerator("h100-sxm")
    kw = dict(pp=1, isl=128.0, max_isl=128, osl=128.0, weights="fp16", kv_dtype="fp16")
    s = trtllm_setup("tensorrt-llm 0.11", mixtral, acc, tp=2, **kw)
    assert (s.max_num_tokens, s.max_batch) == (3072, 2048)
    s = trtllm_setup("tensorrt-llm 0.11", mistral, acc, tp=1, **kw)
    assert (s.max_num_tokens, s.max_batch) == (8192, 4098)


SHIPPED = Path(__file__).resolve().parents[1] / "validation"


def test_trtllm_010_case_books_kv_per_step():
    """A v0.10 case runs MAX_UTILIZATION (KV booked per step, paused requests recompute), with
    the page's 2048-token, 2048-sequence engine; the choice is reported."""
    cases = {c.id: c for c in load_cases(SHIPPED / "trtllm-0.10-perf-overview.yaml")}
    case = cases["trtllm010-llama2-7b-h100-sxm-fp8-tp1-128-2048"]
    plan, choices, prof = case_plan(case)
    assert prof == "tensorrt-llm" and plan.kv_reservation == "incremental"
    assert (plan.token_budget, plan.max_batch, plan.scheduler) == (2048, 2048, "sarathi")
    assert any("MAX_UTILIZATION" in c and "90% of free memory" in c for c in choices)


@pytest.mark.parametrize("stated,expected", [(None, "sarathi"), ("continuous", "sarathi"), ("static", "static"),
                                             ("vllm", "vllm")])
def test_trtllm_case_keeps_a_stated_scheduler(stated, expected):
    """A TensorRT-LLM case that states a scheduler other than the format's default (e.g. the
    static batching of the pre-0.10 pages) runs it; null or `continuous` means the release's flow."""
    case = load_cases(SHIPPED / "trtllm-0.11-perf-overview.yaml")[0]
    case.plan["scheduler"] = stated
    plan, _, _ = case_plan(case)
    assert plan.scheduler == expected


def test_trtllm_09_static_cases_run_one_batch_of_the_published_size():
    """The v0.9 static-batch rows: one burst of exactly `batch` requests, run as one static batch
    (max_batch = batch), measured as the published per-GPU figure x TP."""
    cases = [c for c in load_cases(SHIPPED / "trtllm-0.9-static-batch.yaml") if "-static-" in c.id]
    assert len(cases) == 64
    for c in cases:
        assert c.plan["scheduler"] == "static" and c.plan["max_batch"] == c.workload["requests"]
        per_gpu = float(c.source.split(" out tok/s/GPU")[0].rsplit(", ", 1)[1])
        assert c.measured["output_tokens_per_s"] == pytest.approx(per_gpu * c.plan["tp"])
    case = next(c for c in cases if c.id == "trtllm09-static-llama-70b-h100-sxm-fp8-tp2-bs1024-128-128")
    plan, _, _ = case_plan(case)
    assert (plan.scheduler, plan.max_batch) == ("static", 1024)
    # the batch-1 first-token latency rows: one request with one output token, scored on TTFT
    lat = [c for c in load_cases(SHIPPED / "trtllm-0.9-static-batch.yaml") if "-latency-" in c.id]
    assert len(lat) == 32
    assert all(c.workload["requests"] == 1 and c.workload["output_tokens"] == 1 and set(c.measured) == {"ttft_mean_s"}
               for c in lat)


def test_trtllm_010_file_uses_the_real_llama3_widths():
    """The v0.10 page prints swapped Llama-3 FFN widths in its config files; the file keeps the
    Hugging Face ones (8B: 14336, 70B: 28672), as its header explains."""
    cases = load_cases(SHIPPED / "trtllm-0.10-perf-overview.yaml")
    assert {c.model.ffn_hidden for c in cases if "llama3-8b" in c.id} == {14336}
    assert {c.model.ffn_hidden for c in cases if "llama3-70b" in c.id} == {28672}


@pytest.mark.parametrize("name", ["trtllm-0.9-static-batch.yaml", "trtllm-0.10-perf-overview.yaml",
                                  "trtllm-0.11-perf-overview.yaml",
                                  "trtllm-0.12-perf-overview.yaml", "trtllm-0.13-perf-overview.yaml",
                                  "trtllm-0.14-perf-overview.yaml",
                                  "trtllm-0.15-perf-overview.yaml", "trtllm-0.17-perf-overview.yaml",
                                  "trtllm-1.0-perf-overview.yaml"])
def test_shipped_validation_files_load_and_predict(name):
    """The project's own case files (published tables in the shared format): unique ids, every
    case a TensorRT-LLM serving case, and one case per accelerator predicts within 2x."""
    cases = load_cases(SHIPPED / name)
    assert len({c.id for c in cases}) == len(cases) > 50
    assert all(c.kind == "serving" and "tensorrt" in c.software for c in cases)
    one_per_gpu = {}
    for c in cases:
        if c.workload["output_tokens"] <= 128 and c.workload["prompt_tokens"] <= 2048:
            one_per_gpu.setdefault(c.cluster.accelerator.id, c)
    for c in one_per_gpu.values():
        res = predict_case(c)
        meas = c.measured["output_tokens_per_s"]
        assert res.status == "ok", c.id
        assert 0.5 * meas < res.predicted["output_tokens_per_s"] < 2.0 * meas, c.id


# ------------------------------------------------------------------ vLLM engines by release

@pytest.mark.parametrize("software,source,gpu,expected", [
    ("vLLM 0.6.0", "", "h100-sxm", ("v0", "vllm", 256, None)),
    ("vllm 0.10.1", "benchmark_serving", "h100-sxm", ("v1", "sarathi", 1024, 8192)),
    ("vllm 0.10.1", "vllm bench throughput (offline)", "h100-sxm", ("v1", "sarathi", 1024, 16384)),
    ("vllm 0.10.1", "", "a100-sxm-80gb", ("v1", "sarathi", 256, 2048)),  # A100s excluded since 0.9
    ("vllm 0.8.2", "", "a100-sxm-80gb", ("v1", "sarathi", 1024, 8192)),  # 80 GB >= 70 GiB, no exclusion yet
    ("vllm 0.10.1", "", "l40s", ("v1", "sarathi", 256, 2048)),  # 48 GB < 70 GiB
    ("vllm", "", "h200-sxm", ("v1", "sarathi", 1024, 8192)),  # unnamed release: today's engine
])
def test_vllm_defaults_by_release_gpu_and_use(software, source, gpu, expected):
    """get_batch_defaults: >= 70 GiB GPUs (A100s excepted from 0.9) get 8192 tokens for the API
    server, 16384 offline, 1024 sequences; others 2048 / 8192 and 256. V0 keeps prefill-first."""
    from parasim.engines.vllm import vllm_setup
    from parasim.specs.catalog import get_accelerator

    s = vllm_setup(software, source, get_accelerator(gpu), tp=1)
    assert (s.engine, s.scheduler, s.max_batch, s.token_budget) == expected
    if s.engine == "v0":
        assert s.eager_prefill_layer_s and s.output_delay_s > 0
    else:
        assert s.eager_prefill_layer_s is None and s.output_delay_s == 0


@pytest.mark.parametrize("software,kernel", [("vllm 0.5.4", "flash2"), ("vLLM 0.6.0", "flash2"),
                                             ("vllm 0.7.3", "flash"), ("vllm 0.10.1", "flash"), ("vllm", "flash")])
def test_vllm_prefill_attention_kernel_by_release(software, kernel):
    """FlashAttention 3 reached vLLM in 0.7 (PR #12093); before, FlashAttention-2 everywhere."""
    from parasim.engines.vllm import vllm_setup
    from parasim.specs.catalog import get_accelerator

    assert vllm_setup(software, "", get_accelerator("h100-sxm"), tp=1).attention == kernel


def test_fa2_prefill_attention_is_the_catalog_ratio_slower_on_hopper_only():
    """A long prefill's attention part under flash2 is flash's / attention_fa2_ratio where that
    compute term sets it (H100: FA2 at 0.52 of FA3), times the two kernels' own curve shapes at this
    8k causal prompt (cost.attn_shape), and the same on an A100 (FA2 is its kernel)."""
    from parasim.cost.layer import LayerCost, Sharding
    from parasim.serving.itercost import IterationCost
    from parasim.specs.catalog import get_accelerator, get_model
    from parasim.specs.cluster import ClusterSpec

    m = get_model("llama-3-8b")
    c = 8192
    pairs = c * (c + 1) / 2
    for gpu in ("h100-sxm", "a100-sxm-80gb"):
        acc = get_accelerator(gpu)
        kw = dict(tp=1, pp=1, weights="bf16", kv_dtype="bf16", act_dtype="bf16", overhead_s=0.0)
        fa3 = IterationCost(m, ClusterSpec(accelerator=acc, gpus=1), **kw).breakdown(c, pairs, 0, 0, 0, 1)
        fa2 = IterationCost(m, ClusterSpec(accelerator=acc, gpus=1), attention="flash2", **kw).breakdown(
            c, pairs, 0, 0, 0, 1)
        ko = m.layers * acc.efficiency.kernel_overhead_s
        ratio = acc.efficiency.attention_fa2_ratio
        cl = ClusterSpec(accelerator=acc, gpus=1)
        shape = (LayerCost(m, cl, Sharding(), attention_kernel="flash2").prefill_shape(pairs, c)
                 / LayerCost(m, cl, Sharding(), attention_kernel="flash").prefill_shape(pairs, c))
        assert fa2["attn_prefill"] - ko == pytest.approx((fa3["attn_prefill"] - ko) / ratio * shape, rel=1e-9)
        assert fa2["mlp"] == fa3["mlp"]


def test_vllm_v1_case_plan_uses_chunked_prefill_budget():
    from parasim.specs.validation_case import parse_case

    raw = {"id": "v1-case", "source": "benchmark_serving, request rate inf", "kind": "serving",
           "software": "vllm 0.10.1", "model": {"catalog": "llama-3-8b"},
           "hardware": {"accelerator": "h100-sxm", "gpus": 1, "gpus_per_node": 8},
           "plan": {"tp": 1, "pp": 1, "replicas": 1, "weights": "bf16", "scheduler": "continuous", "max_batch": None},
           "workload": {"requests": 200, "prompt_tokens": 512, "output_tokens": 128, "arrival": "burst"},
           "measured": {"output_tokens_per_s": 1000.0}}
    case = parse_case(raw, index=0, base_dir=Path("."))
    plan, choices, prof = case_plan(case)
    assert prof == "vllm" and plan.scheduler == "sarathi" and plan.token_budget == 8192 and plan.max_batch == 1024
    assert plan.block_size == 16 and plan.eager_prefill_layer_s is None
    assert any("V1 engine" in c for c in choices)
    assert predict_case(case).status == "ok"


@pytest.mark.parametrize("source,prof,basis", [
    ("TPOT from vLLM /metrics histograms, mean per output token", "vllm", "token"),
    ("vLLM benchmarks/benchmark_serving.py, mean TPOT", "vllm", "request"),
    ("a vLLM run, source silent on TPOT", "vllm", "token"),
    ("trtllm-bench latency report", "tensorrt-llm", "request"),
    ("some paper", "default", "request"),
])
def test_tpot_basis_follows_the_source(source, prof, basis):
    """The shared README: vLLM's histogram TPOT is per output token; benchmark clients average
    each request's own TPOT. The source text decides; a silent vLLM source means the histogram."""
    from parasim.validation.serving import _tpot_basis

    assert _tpot_basis(source, prof) == basis


def _v0_case(tmp_path: Path, source: str, prompts: list[int]):
    """A vLLM 0.6 trace case with an explicit architecture (whose context length is the 2048 default)."""
    import json

    from parasim.specs.validation_case import parse_case

    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"arrival_s": 5.0 * i, "prompt_tokens": p, "output_tokens": 16}) + "\n"
                             for i, p in enumerate(prompts)))
    raw = {"id": "v0", "source": source, "kind": "serving", "software": "vllm 0.6.0",
           "model": {"family": "llama", "layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8, "ffn_hidden": 14336,
                     "vocab": 128256},
           "hardware": {"accelerator": "h100-sxm", "gpus": 1, "gpus_per_node": 8},
           "plan": {"tp": 1, "pp": 1, "replicas": 1, "weights": "bf16", "scheduler": None, "max_batch": 256},
           "workload": {"trace": "t.jsonl"}, "measured": {"ttft_mean_s": 0.1}}
    return parse_case(raw, index=0, base_dir=tmp_path)


def test_vllm_v0_budget_is_max_model_len(tmp_path):
    """V0 batches max(max_model_len, 2048) tokens and never chunks a prompt, so a prompt longer than
    the budget would never run. The source's --max-model-len wins; without it the run evidently
    admitted its longest request, so max_model_len is at least that (here 3000 + 16)."""
    case = _v0_case(tmp_path, "vLLM /metrics", [500, 3000, 1200])
    plan, choices, _ = case_plan(case)
    assert plan.scheduler == "vllm" and plan.token_budget == 3016
    assert any("at least the longest request" in c for c in choices)
    res = predict_case(case)
    assert res.status == "ok" and not any("dropped" in c for c in res.choices)
    # every request completed: the mean TTFT is at least the mean of each prompt's own prefill
    assert res.predicted["ttft_mean_s"] > 0

    case = _v0_case(tmp_path, "vLLM /metrics, --max-model-len 24272", [500, 3000])
    plan, choices, _ = case_plan(case)
    assert plan.token_budget == 24272 and any("--max-model-len in the source" in c for c in choices)

    case = _v0_case(tmp_path, "vLLM /metrics", [100, 200])  # short requests: the 2048-token floor
    assert case_plan(case)[0].token_budget == 2048


def test_vllm_engine_limits_stated_in_the_source_win(tmp_path):
    """A source that names --max-num-batched-tokens / --max-num-seqs ran with them, whatever the
    release's default (V1 offline on an 80 GB GPU: 16384 tokens, 1024 sequences); a plan's own
    max_batch still wins over the source text."""
    from parasim.specs.validation_case import parse_case

    raw = {"id": "v1", "source": "vllm bench throughput --max-num-batched-tokens 131072 --max-num-seqs 512",
           "kind": "serving", "software": "vllm 0.10.0",
           "model": {"family": "llama", "layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8, "ffn_hidden": 14336,
                     "vocab": 128256},
           "hardware": {"accelerator": "h100-sxm", "gpus": 1},
           "plan": {"tp": 1, "weights": "bf16", "max_batch": None},
           "workload": {"requests": 64, "prompt_tokens": 128, "output_tokens": 16, "arrival": "burst"},
           "measured": {"output_tokens_per_s": 1.0}}
    plan, choices, _ = case_plan(parse_case(raw, index=0, base_dir=tmp_path))
    assert (plan.token_budget, plan.max_batch) == (131072, 512)
    assert any("max_num_batched_tokens 131072 (from the source)" in c for c in choices)
    raw["source"] = "vllm bench throughput"
    plan, _, _ = case_plan(parse_case(raw, index=0, base_dir=tmp_path))
    assert (plan.token_budget, plan.max_batch) == (16384, 1024)
    raw["source"] = "--max-num-seqs 512"
    raw["plan"]["max_batch"] = 64
    assert case_plan(parse_case(raw, index=0, base_dir=tmp_path))[0].max_batch == 64


def test_vllm_kv_cache_defaults_to_the_model_dtype_whatever_the_weights(tmp_path):
    """vLLM's --kv-cache-dtype auto keeps the cache in the model's dtype: an FP8-weight case with
    no kv_cache runs a bf16 cache (twice the bytes per token of fp8), unless the source asks for
    --kv-cache-dtype fp8; a case's own kv_cache wins. TensorRT-LLM cases keep the format's default
    (the perf pages' FP8 configs quantize the cache too)."""
    from parasim.specs.validation_case import parse_case

    raw = {"id": "v1", "source": "vllm bench throughput --input-len 1024 --output-len 2048",
           "kind": "serving", "software": "vllm 0.10.2",
           "model": {"family": "llama", "layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8, "ffn_hidden": 14336,
                     "vocab": 128256},
           "hardware": {"accelerator": "h100-sxm", "gpus": 1},
           "plan": {"tp": 1, "weights": "fp8", "kv_cache": None},
           "workload": {"requests": 64, "prompt_tokens": 128, "output_tokens": 16, "arrival": "burst"},
           "measured": {"output_tokens_per_s": 1.0}}
    plan, choices, _ = case_plan(parse_case(raw, index=0, base_dir=tmp_path))
    assert plan.kv == "bf16" and any("--kv-cache-dtype auto" in c for c in choices)
    raw["source"] += " --kv-cache-dtype fp8_e4m3"
    assert case_plan(parse_case(raw, index=0, base_dir=tmp_path))[0].kv == "fp8"
    raw["source"] = "vllm bench throughput"
    raw["plan"]["kv_cache"] = "fp8"
    assert case_plan(parse_case(raw, index=0, base_dir=tmp_path))[0].kv == "fp8"
    raw["plan"]["kv_cache"], raw["plan"]["weights"] = None, "fp16"
    assert case_plan(parse_case(raw, index=0, base_dir=tmp_path))[0].kv == "fp16"
    raw["software"], raw["plan"]["weights"] = "tensorrt-llm 0.17", "fp8"
    assert case_plan(parse_case(raw, index=0, base_dir=tmp_path))[0].kv == "fp8"


def test_shipped_vllm_v1_file():
    """validation/vllm-v1-published.yaml: vLLM V1 (0.9.1 - 0.11.1) offline throughput and batch
    latency on 8 x MI300X. The stated engine limits reach the plan, and a small-batch latency case
    (one request, 128 in / 2048 out) predicts within 2x of the measurement."""
    cases = {c.id: c for c in load_cases(SHIPPED / "vllm-v1-published.yaml")}
    assert len(cases) >= 60 and all(c.kind == "serving" and "vllm" in c.software for c in cases.values())
    thr = cases["vllm-0.10.0-readme-mi300x-llama31-70b-fp8-tp8-128-2048"]
    plan, _, prof = case_plan(thr)
    assert prof == "vllm" and plan.token_budget == 131072 and plan.gpu_memory_utilization == pytest.approx(0.9)
    lat = cases["vllm-0.10.0-readme-mi300x-llama31-70b-fp8-tp8-latency-bs1-128-2048"]
    res = predict_case(lat)
    meas = lat.measured["e2e_mean_s"]
    assert res.status == "ok" and 0.5 * meas < res.predicted["e2e_mean_s"] < 2.0 * meas


def test_shipped_vllm_v1_h100_threads_file():
    """validation/vllm-v1-h100-threads.yaml: vLLM V1 runs on H100 quoted from vLLM GitHub threads.
    The FP8-weight cases name no --kv-cache-dtype, so they run a bf16 cache, and the bf16 Qwen3-8B
    throughput on v0.10.2 predicts within 2x of the measurement."""
    cases = {c.id: c for c in load_cases(SHIPPED / "vllm-v1-h100-threads.yaml")}
    assert len(cases) >= 5 and all(c.kind == "serving" and "vllm" in c.software for c in cases.values())
    fp8 = cases["vllmv1-gh25915-qwen3-8b-fp8-v0102"]
    assert case_plan(fp8)[0].kv == "bf16"
    bf16 = cases["vllmv1-gh25915-qwen3-8b-bf16-v0102"]
    res = predict_case(bf16)
    meas = bf16.measured["output_tokens_per_s"]
    assert res.status == "ok" and 0.5 * meas < res.predicted["output_tokens_per_s"] < 2.0 * meas


def test_shipped_apex_trace_file():
    """validation/apex-vllm-0.6-traces.yaml: vLLM 0.6.0 replays of the APEX traces, one case per
    replica; every trace ships with the project, and the lmsys_05 case of each model and layout
    completes all its requests and predicts TTFT and TPOT within 2x of the measurement."""
    cases = load_cases(SHIPPED / "apex-vllm-0.6-traces.yaml")
    assert len({c.id for c in cases}) == len(cases) > 60
    assert all(c.kind == "serving" and c.software == "vllm 0.6.0" for c in cases)
    assert all((SHIPPED / c.workload["trace"]).exists() for c in cases)
    first = {}
    for c in cases:
        if "lmsys_05" in c.id:
            first.setdefault((c.model.layers, c.plan["tp"]), c)
    assert len(first) == 6  # Llama-3.1-70B and Mistral-Large-2407 at TP 8, 4 and 2
    for c in first.values():
        res = predict_case(c)
        assert res.status == "ok" and not any("dropped" in x for x in res.choices), c.id
        for k in ("ttft_mean_s", "tpot_mean_s"):
            assert 0.5 * c.measured[k] < res.predicted[k] < 2.0 * c.measured[k], (c.id, k)


def test_vllm_v0_fp8_quantizes_activations_in_separate_kernels(tmp_path):
    """vLLM 0.6 FP8: `--quantization fp8` on a 16-bit checkpoint means dynamic per-tensor scales
    (three kernels per linear input); a pre-quantized checkpoint carries static scales (one). The
    eager prefill floor counts those launches too (4 linears a layer)."""
    from parasim.engines.host import EAGER_KERNEL_DISPATCH_S, eager_layer_dispatch_s

    case = _v0_case(tmp_path, "vLLM /metrics; --quantization fp8 --kv-cache-dtype fp8", [500])
    case.plan["weights"] = "fp8"
    plan, choices, _ = case_plan(case)
    assert plan.act_quant == "dynamic" and any("dynamic scale" in c for c in choices)
    assert plan.eager_prefill_layer_s == pytest.approx(eager_layer_dispatch_s(1) + 12 * EAGER_KERNEL_DISPATCH_S)
    case = _v0_case(tmp_path, "vLLM /metrics; an FP8 checkpoint", [500])
    case.plan["weights"] = "fp8"
    assert case_plan(case)[0].act_quant == "static"
    assert case_plan(_v0_case(tmp_path, "vLLM /metrics", [500]))[0].act_quant == "fused"  # bf16 weights


def test_vllm_disable_custom_all_reduce_in_the_source(tmp_path):
    """`--disable-custom-all-reduce` in a vLLM case's source routes TP all-reduces through NCCL and
    counts one eager launch per all-reduce instead of two (no copy into the registered buffer)."""
    from parasim.engines.host import EAGER_KERNEL_DISPATCH_S, eager_layer_dispatch_s

    case = _v0_case(tmp_path, "vLLM /metrics; --tensor-parallel-size 2 --disable-custom-all-reduce", [500])
    case.plan["tp"] = 2
    plan, choices, _ = case_plan(case)
    assert plan.custom_allreduce is False and any("NCCL" in c for c in choices)
    assert plan.eager_prefill_layer_s == pytest.approx(eager_layer_dispatch_s(2) - 2 * EAGER_KERNEL_DISPATCH_S)
    case = _v0_case(tmp_path, "vLLM /metrics; --tensor-parallel-size 2", [500])
    case.plan["tp"] = 2
    assert case_plan(case)[0].custom_allreduce is True


def _sglang_case(tmp_path: Path, software: str, source: str = "sglang.bench_serving", *, gpu: str = "h100-sxm",
                 tp: int = 1, model: str = "llama-3.1-8b"):
    from parasim.specs.validation_case import parse_case

    raw = {"id": "sg", "source": source, "kind": "serving", "software": software, "model": {"catalog": model},
           "hardware": {"accelerator": gpu, "gpus": tp, "gpus_per_node": 8},
           "plan": {"tp": tp, "weights": "bf16", "kv_cache": None, "scheduler": None, "max_batch": None},
           "workload": {"requests": 50, "prompt_tokens": 1000, "output_tokens": 200, "arrival": "burst"},
           "measured": {"output_tokens_per_s": 1000.0, "tpot_mean_s": 0.02}}
    return parse_case(raw, index=0, base_dir=tmp_path)


def test_sglang_case_sizes_its_kv_pool_by_mem_fraction_static_by_hand(tmp_path):
    """SGLang 0.3 on one H100: mem_fraction_static 0.88 of the memory free before the weights load
    (HBM less the CUDA context) holds weights + KV; Llama-3.1-8B's bf16 KV is 32 layers x 8 heads x
    128 x 2 x 2 B = 128 KiB per token; one token per page; max_running_requests = min(tokens // 2,
    clamp(tokens / 131072 x 512, 2048, 4096)) = 2048; prefill first with 8192-token chunks."""
    from parasim.cost.memory import weight_bytes_per_gpu
    from parasim.cost.memory import RUNTIME_RESERVED_BYTES
    from parasim.serving.simulate import kv_fit
    from parasim.serving.workload import generate
    from parasim.specs.catalog import get_accelerator, get_model

    case = _sglang_case(tmp_path, "sglang 0.3.0")
    plan, choices, prof = case_plan(case)
    m, acc = get_model("llama-3.1-8b"), get_accelerator("h100-sxm")
    kv = 0.88 * (acc.device_memory_bytes - RUNTIME_RESERVED_BYTES) - weight_bytes_per_gpu(m, tp=1, pp=1, weights="bf16")
    tokens = int(kv // (32 * 8 * 128 * 2 * 2))
    assert prof == "sglang" and plan.scheduler == "sglang" and plan.token_budget == 8192
    assert plan.block_size == 1 and plan.kv_reservation == "estimated" and plan.kv == "bf16"
    assert plan.max_batch == 2048
    sim_tokens = kv_fit(m, case.cluster, plan, generate(requests=1, burst=True, prompt_tokens=10,
                                                          output_tokens=10)).kv["kv_tokens"]
    assert abs(sim_tokens - tokens) <= 1
    assert any("mem_fraction_static 0.88" in c for c in choices)
    res = predict_case(case)
    assert res.status == "ok" and res.predicted["output_tokens_per_s"] > 0
    assert any("per request" in c for c in res.choices)  # bench_serving: each request's own TPOT


@pytest.mark.parametrize("software, gpu, tp, mfs, chunk", [
    ("sglang 0.3.2", "h100-sxm", 8, 0.83, 8192),
    ("sglang 0.4.1", "h100-sxm", 8, 0.81, 8192),
    ("sglang 0.4.1", "l4", 1, 0.88, 2048),           # 24 GiB < 25,000 MiB
    ("sglang 0.5.2", "h100-sxm", 1, round((80 - 10) / 80, 3), 8192),   # reserve 9.5 + 1/2 GiB
    ("sglang 0.5.2", "h200-sxm", 8, round((141 - 16) / 141, 3), 8192),  # reserve 12 + 8/2 GiB
    ("sglang 0.5.2", "b200", 1, round((180 - 32) / 180, 3), 16384),     # reserve 32 GiB
    ("sglang", "l4", 1, round((24 - 2.9) / 24, 3), 2048),                # unnamed: the current rule
])
def test_sglang_defaults_by_release_and_gpu(software, gpu, tp, mfs, chunk):
    from parasim.engines.sglang import default_chunk, default_mem_fraction
    from parasim.engines.software import release
    from parasim.specs.catalog import get_accelerator

    acc = get_accelerator(gpu)
    assert default_mem_fraction(release(software), acc, tp=tp, pp=1) == pytest.approx(mfs)
    assert default_chunk(release(software), acc) == chunk


def test_sglang_flags_stated_in_the_source_win(tmp_path):
    case = _sglang_case(tmp_path, "sglang 0.4.0",
                        "bench_serving; server --mem-frac 0.7 --chunked-prefill-size 4096 "
                        "--max-running-requests 64 --kv-cache-dtype fp8_e5m2")
    plan, choices, _ = case_plan(case)
    assert plan.token_budget == 4096 and plan.max_batch == 64 and plan.kv == "fp8"
    assert any("mem_fraction_static 0.7 " in c for c in choices)


@pytest.mark.parametrize("software, scheduler, profile", [("DeepSpeed-MII 0.2 (FastGen)", "splitfuse", "deepspeed-mii"),
                                                          ("mlc-llm 0.1", "sarathi", "default"),
                                                          ("lmdeploy 0.6", "sarathi", "lmdeploy"),
                                                          ("tgi 2.0", "vllm", "tgi")])
def test_other_engines_get_their_batching_rule(tmp_path, software, scheduler, profile):
    case = _sglang_case(tmp_path, software, "a benchmark")
    plan, choices, prof = case_plan(case)
    assert prof == profile and plan.scheduler == scheduler


def test_a_source_naming_max_concurrency_runs_a_closed_loop_client(tmp_path):
    """bench_serving --max-concurrency 4 over a burst: the prediction is the closed-loop run (at most
    four out), which has a far shorter TTFT than all 50 requests queued at once."""
    open_loop = predict_case(_sglang_case(tmp_path, "sglang 0.4.3", "sglang.bench_serving --request-rate inf"))
    closed = predict_case(_sglang_case(tmp_path, "sglang 0.4.3",
                                       "sglang.bench_serving --request-rate inf --max-concurrency 4"))
    assert any("at most 4 requests out" in c for c in closed.choices)
    assert not any("closed-loop" in c for c in open_loop.choices)
    assert closed.predicted["output_tokens_per_s"] < open_loop.predicted["output_tokens_per_s"]
    assert closed.predicted["ttft_mean_s"] < 0.25 * open_loop.predicted["ttft_mean_s"]


def test_shipped_sglang_file():
    """validation/sglang-published.yaml: fixed lengths (the H20 run's printed totals are exactly
    prompts x lengths), the 0.4-series defaults, and the H20 run's client concurrency from its source."""
    cases = {c.id: c for c in load_cases(SHIPPED / "sglang-published.yaml")}
    assert len(cases) == 4
    h20 = cases["sglang-issue6681-qwen25-32b-h20-tp2-1024-128-rate128-conc512"]
    w = h20.workload
    assert w["requests"] * w["prompt_tokens"] == 1048576 and w["requests"] * w["output_tokens"] == 131072
    for c in cases.values():
        plan, choices, prof = case_plan(c)
        assert prof == "sglang" and plan.scheduler == "sglang"
        assert any("SGLang 0.4 defaults" in ch for ch in choices)
        res = predict_case(c)
        assert res.status == "ok" and res.predicted["output_tokens_per_s"] > 0
    assert any("at most 512 requests out" in ch for ch in predict_case(h20).choices)


@pytest.mark.parametrize("text, n", [
    ("vllm bench serve --max-concurrency 64", 64), ("printed: Max reqeuest concurrency: 512", 512),
    ("trtllm-bench throughput --concurrency 128", 128), ("genai-perf --concurrency=32", 32),
    ("Max request concurrency: not set; Concurrency: 507.99", None), ("Concurrency 12", None),
])
def test_client_concurrency_read_from_the_source(text, n):
    """The limit a benchmark client was given, not the average concurrency it printed."""
    from parasim.validation.serving import _MAX_CONCURRENCY

    m = _MAX_CONCURRENCY.search(text)
    assert (int(m.group(1)) if m else None) == n


@pytest.mark.parametrize("source, scheduler, budget", [
    ("vLLM /metrics; server --enable-chunked-prefill", "sarathi", 512),
    ("vLLM /metrics; server --enable-chunked-prefill --max-num-batched-tokens 2048", "sarathi", 2048),
    ("vLLM /metrics; server --enable-chunked-prefill=False", "vllm", 3016),
    ("vLLM /metrics", "vllm", 3016),
])
def test_vllm_v0_chunked_prefill_in_the_source(tmp_path, source, scheduler, budget):
    """V0 with --enable-chunked-prefill schedules decodes first, then prompt chunks, in 512 tokens
    (its documented default) unless the source gives --max-num-batched-tokens; otherwise the budget
    is max_model_len (here the longest request, 3000 + 16)."""
    plan, choices, _ = case_plan(_v0_case(tmp_path, source, [500, 3000, 1200]))
    assert (plan.scheduler, plan.token_budget) == (scheduler, budget)
    assert plan.eager_prefill_layer_s  # prefill (and mixed) iterations still run eagerly
    res = predict_case(_v0_case(tmp_path, source, [500, 3000, 1200]))
    assert res.status == "ok" and not any("dropped" in c for c in res.choices)


def test_features_the_simulator_does_not_model_are_said(tmp_path):
    res = predict_case(_sglang_case(tmp_path, "sglang 0.4.5", "server --enable-dp-attention --dp-size 8 "
                                    "--speculative-algorithm EAGLE; bench_serving"))
    said = [c for c in res.choices if c.startswith("not modelled")]
    assert len(said) == 2 and any("data-parallel attention" in c for c in said)
    assert not any(c.startswith("not modelled") for c in predict_case(_sglang_case(tmp_path, "sglang 0.4.5")).choices)


def test_shipped_oracle_mi300x_405b_latency_file():
    """validation/oracle-mi300x-405b-latency.yaml: Llama 3.1 405B FP8 on 8 x MI300X, benchmark_latency
    128/128 at batch 1-256 (Oracle blog, October 2024). A larger batch of the same lengths cannot
    finish sooner, in the source or in the prediction; the prefill of every batch fits V0's token
    budget (the catalog model's 131,072-token context), and batch 1 predicts within 2x."""
    cases = load_cases(SHIPPED / "oracle-mi300x-405b-latency.yaml")
    assert len(cases) == 9 and all(c.kind == "serving" and c.plan["tp"] == 8 for c in cases)
    batches = [c.workload["requests"] for c in cases]
    assert batches == sorted(batches)
    meas = [c.measured["e2e_mean_s"] for c in cases]
    assert meas == sorted(meas)
    results = [predict_case(c) for c in cases]
    assert all(r.status == "ok" for r in results)
    pred = [r.predicted["e2e_mean_s"] for r in results]
    assert pred == sorted(pred)
    assert any("max_num_batched_tokens 131072" in x for x in results[-1].choices)
    assert 0.5 * meas[0] < pred[0] < 2.0 * meas[0]
