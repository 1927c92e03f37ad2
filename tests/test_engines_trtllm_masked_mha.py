"""A GQA model's decode attention by a per-query-head kernel (`decode_attention: per_query_head`).

TensorRT-LLM up to v0.10 had XQA decode kernels (one pass over a KV head for its whole query group)
only for groups of 8 and 16; any other group ran masked MHA, one thread block per query head, so
each KV head is read once per query head. Checked by hand arithmetic (the KV bytes of the decode
part grow by exactly the group size, an MHA model is unchanged), through the engine profile (which
runs get it) and the CLI; the published effect is TensorRT-LLM's XQA blog, which measures XQA at
2.4x masked MHA's throughput on Llama-70B FP8 (8-bit KV) on one H200 at 128/2048."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.engines.apply import engine_defaults
from parasim.errors import InputError
from parasim.serving import ServingPlan, generate, simulate
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

from tests.conftest import check_serve_key_slows_decode

H100 = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=1)


def _pair(model: str) -> tuple[IterationCost, IterationCost]:
    m = get_model(model)
    return tuple(IterationCost.for_plan(m, H100, ServingPlan(weights="fp8", kv_dtype="fp8", decode_attention=d))
                 for d in ("grouped", "per_query_head"))


@settings(max_examples=100, deadline=None)
@given(n=hst.integers(min_value=1, max_value=2048), ctx_per_seq=hst.integers(min_value=64, max_value=8192))
def test_decode_reads_grow_by_the_query_group(n, ctx_per_seq):
    """Llama-3-8B (32 query heads, 8 KV heads): on a memory-bound decode the per-query-head kernel
    reads the cache 4 times, i.e. 3 x (2 x KV heads x head dim x 1 byte) per context token per layer
    more, at the catalog's streaming bandwidth; nothing else in the breakdown moves."""
    grouped, per_head = _pair("llama-3-8b")
    m, acc = get_model("llama-3-8b"), H100.accelerator
    ctx = float(n * ctx_per_seq)
    a = grouped.breakdown(n, 0.0, 0.0, n, ctx, n)
    b = per_head.breakdown(n, 0.0, 0.0, n, ctx, n)
    kv_bytes = 2 * m.kv_heads * m.head_dim * 1  # one token's K and V of one layer, 8-bit
    extra = (m.heads // m.kv_heads - 1) * ctx * kv_bytes * m.layers / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory)
    assert b["attn_decode"] - a["attn_decode"] == pytest.approx(extra, rel=1e-9)
    assert {k: v for k, v in a.items() if k not in ("attn_decode", "total")} == \
        {k: v for k, v in b.items() if k not in ("attn_decode", "total")}
    assert per_head.time_s(n, 0.0, 0.0, n, ctx, n) == pytest.approx(b["total"], rel=1e-12)
    assert per_head.decode_step_s(n)(ctx) == per_head.time_s(n, 0.0, 0.0, n, ctx, n)


def test_mha_and_prefill_are_unchanged():
    """Llama-2-7B is MHA (a group of 1): both kernels read each KV head once; a prefill-only
    iteration has no decode attention."""
    grouped, per_head = _pair("llama-2-7b")
    assert per_head.time_s(300, 0.0, 0.0, 300, 300 * 900.0, 300) == grouped.time_s(300, 0.0, 0.0, 300, 300 * 900.0, 300)
    g8, p8 = _pair("llama-3-8b")
    assert p8.time_s(512, 512 * 513 / 2.0, 0.0, 0, 0.0, 1) == g8.time_s(512, 512 * 513 / 2.0, 0.0, 0, 0.0, 1)


def _wl():
    return generate(requests=32, burst=True, prompt_tokens=128, output_tokens=128)


@pytest.mark.parametrize("software,gpu,model,kv,tp,expect", [
    ("tensorrt-llm==0.10", "h100-sxm", "llama-3-8b", "fp8", 1, True),
    ("tensorrt-llm==0.9", "h200-sxm", "mistral-7b", "fp8", 1, True),
    ("tensorrt-llm==0.10", "h200-sxm", "mixtral-8x7b", "fp8", 2, True),  # 16 query / 4 KV heads per GPU
    ("tensorrt-llm==0.11", "h100-sxm", "llama-3-8b", "fp8", 1, False),  # JIT XQA compiles a group of 4
    ("tensorrt-llm==0.10", "h100-sxm", "llama-3-8b", "fp16", 1, False),  # 16-bit KV: no measured A/B
    ("tensorrt-llm==0.10", "a100-sxm-80gb", "llama-3-8b", "fp8", 1, False),  # not Hopper
    ("tensorrt-llm==0.10", "h100-sxm", "llama-2-70b", "fp8", 1, False),  # group 8: precompiled XQA
    ("tensorrt-llm==0.10", "h100-sxm", "llama-2-7b", "fp8", 1, False),  # MHA
    ("vllm==0.4.0", "h100-sxm", "llama-3-8b", "fp8", 1, False),
])
def test_which_runs_take_the_kernel(software, gpu, model, kv, tp, expect):
    _, fields, choices = engine_defaults(software, get_model(model), get_accelerator(gpu),
                                         {"tp": tp, "weights": "fp8", "kv_dtype": kv}, _wl())
    assert (fields.get("decode_attention") == "per_query_head") is expect
    assert any(c.field == "decode_attention" for c in choices) is expect


def _blog_row(decode_attention: str) -> float:
    """XQA blog's setup: Llama-70B, FP8 weights and KV, one H200, 128/2048, a static batch (the
    largest that fits its whole KV: 160)."""
    plan = ServingPlan(tp=1, weights="fp8", kv_dtype="fp8", scheduler="static", max_batch=160, block_size=64,
                       kv_reservation="full", gpu_memory_utilization=0.95, iteration_overhead_s=3e-4,
                       decode_attention=decode_attention)
    wl = generate(requests=160, burst=True, prompt_tokens=128, output_tokens=2048)
    cluster = ClusterSpec(accelerator=get_accelerator("h200-sxm"), gpus=1)
    return simulate(get_model("llama-2-70b"), cluster, plan, wl).summary["output_tokens_per_s"]


def test_xqa_blog_direction_and_size():
    """TensorRT-LLM's XQA blog: 2,941 against 1,227 tokens/s/GPU (2.4x) with and without XQA. At the
    same batch parasim gives the grouped kernel 1.5-3x the per-query-head one (1.8x)."""
    ratio = _blog_row("grouped") / _blog_row("per_query_head")
    assert 1.5 < ratio < 3.0


def test_plan_field_is_checked_and_left_out_by_default():
    with pytest.raises(InputError) as e:
        ServingPlan(decode_attention="per-head")
    assert e.value.field == "decode_attention"
    assert "decode_attention" not in ServingPlan().to_mapping()
    assert ServingPlan(decode_attention="per_query_head").to_mapping()["decode_attention"] == "per_query_head"


def test_cli_config_key(tmp_path):
    """The config key reaches the plan and slows decode; a bad value is one line, exit 2."""
    check_serve_key_slows_decode(tmp_path, "model: llama-3-8b\ngpu: h100-sxm\nweights: fp8\nkv_dtype: fp8\nrequests: 64\n"
                                 "burst: true\nprompt_tokens: 128\noutput_tokens: 512\n", "decode_attention",
                                 "per_query_head", "sideways")


def test_compiled_loop_leaves_it_to_the_python_engine(monkeypatch):
    """The compiled loop reads one KV coefficient for prefill and decode, so a per-query-head plan
    runs the Python engine under `auto` (same result as `0`, at any size), and `1` (forced) refuses
    it in one line naming the reason."""
    from tests.test_serving_fastloop import python_engine_only

    python_engine_only(ServingPlan(scheduler="sarathi", decode_attention="per_query_head"), monkeypatch,
                       "per-query-head")


def test_latent_attention_refuses_it(tmp_path):
    """MLA decode reads one shared latent cache: a per-query-head read cannot apply, so it is refused
    (exit 2 naming the field), never accepted and ignored."""
    cfg = tmp_path / "mla.yaml"
    cfg.write_text("model: deepseek-v3\ngpu: h200-sxm\ntp: 8\nweights: fp8\nrequests: 8\nburst: true\n"
                   "prompt_tokens: 128\noutput_tokens: 16\ndecode_attention: per_query_head\n")
    out = subprocess.run([sys.executable, "-m", "parasim", "serve", "-c", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 2 and "decode_attention" in out.stderr and "Traceback" not in out.stderr


def test_a_stated_value_is_not_reported_as_the_engines_choice():
    """`decode_attention: grouped` given with a release that would pick masked MHA: the plan keeps the
    user's value and the engine's choices do not claim the other one."""
    model, acc = get_model("llama-3-8b"), get_accelerator("h100-sxm")
    _, fields, choices = engine_defaults("tensorrt-llm==0.10", model, acc,
                                         {"weights": "fp8", "kv_dtype": "fp8", "decode_attention": "grouped"}, _wl())
    assert "decode_attention" not in fields
    assert not any(c.field == "decode_attention" for c in choices)
    _, fields, choices = engine_defaults("tensorrt-llm==0.10", model, acc, {"weights": "fp8", "kv_dtype": "fp8"}, _wl())
    assert fields["decode_attention"] == "per_query_head"
