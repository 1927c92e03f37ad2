"""Precision is the user's choice: what runs for a weight format on a GPU, the model's own
precision as the default, and flags that would otherwise be silently ignored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.cost.dtypes import WEIGHT_PRECISIONS
from parasim.cost.layer import LayerCost, Sharding, op_time_s
from parasim.cost.quant import weight_path
from parasim.errors import InputError
from parasim.serving.itercost import IterationCost
from parasim.serving.plan import ServingPlan
from parasim.serving.simulate import simulate
from parasim.serving.workload import Workload, generate
from parasim.specs.catalog import accelerators, get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from tests.conftest import make_model, run_cli

A100 = get_accelerator("a100-sxm-80gb")
H100 = get_accelerator("h100-sxm")


def cluster(acc, gpus: int = 1) -> ClusterSpec:
    return ClusterSpec(accelerator=acc, gpus=gpus)


# --- how a format runs ------------------------------------------------------------------------------
def test_fp8_on_ampere_is_weight_only_and_on_hopper_w8a8():
    a, h = weight_path("fp8", A100), weight_path("fp8", H100)
    assert (a.mode, a.gemm_dtype) == ("weight-only", "bf16") and "Marlin" in a.how
    assert (h.mode, h.gemm_dtype) == ("native", "fp8")
    # FP4 on Hopper and INT4 anywhere are W4A16 (vLLM's NVFP4 Marlin / AWQ-GPTQ Marlin), 16-bit math
    assert weight_path("fp4", H100).gemm_dtype == "bf16" and weight_path("int4", H100).weight_only
    assert weight_path("fp4", get_accelerator("b200")).mode == "native"


@pytest.mark.parametrize("weights, gpu, can", [("fp8", "v100-sxm-32gb", ("h100-sxm", "a100-sxm-80gb")),
                                               ("fp4", "mi300x", ("b200", "mi355x", "h100-sxm")),
                                               ("fp8", "mi250x", ("mi300x",))])
def test_a_format_no_engine_runs_is_an_error_naming_the_parts_that_can(weights, gpu, can):
    with pytest.raises(InputError) as e:
        weight_path(weights, get_accelerator(gpu))
    assert e.value.field == "weights" and gpu in e.value.message
    assert all(c in e.value.message for c in can)


@settings(max_examples=60, deadline=None)
@given(weights=hst.sampled_from(WEIGHT_PRECISIONS), gpu=hst.sampled_from(sorted(accelerators())))
def test_every_format_runs_on_a_unit_the_part_has_or_names_a_part_that_runs_it(weights, gpu):
    acc = get_accelerator(gpu)
    try:
        path = weight_path(weights, acc)
    except InputError as e:
        named = [g for g in accelerators() if g != gpu and f" {g}" in e.message]
        assert named, e.message
        for g in named:
            weight_path(weights, get_accelerator(g))  # each part the message names can run it
        return
    assert acc.has_unit(path.gemm_dtype)
    assert path.weight_only == (path.gemm_dtype != weights and weights not in ("bf16", "fp16"))


# --- the cost path models what runs --------------------------------------------------------------------
def _gemm_s(weights: str, acc, tokens: int) -> float:
    layer = LayerCost(get_model("llama-3-8b"), cluster(acc), Sharding(), weight_dtype=weights)
    return sum(op_time_s(o, acc) for o in layer.token_ops(tokens) if o.kind == "gemm")


def test_weight_only_reads_low_bit_weights_but_computes_at_16_bit():
    # one decoding token of Llama-3-8B on an A100: a weight-only GEMM is a streaming read of its 8-bit
    # weights (Marlin's 16-row tiles keep the 16-bit math far below that), so the layer's four GEMMs
    # take their bytes over the achievable bandwidth plus one launch each
    shapes = [(4096, 4096 + 2 * 1024), (4096, 4096), (4096, 2 * 14336), (14336, 4096)]  # (k, n)
    nbytes = sum(k * n * 1 + (k + n) * 2 for k, n in shapes)
    e = A100.efficiency
    hand = nbytes / (A100.hbm_bw_bytes_per_s * e.memory) + len(shapes) * e.kernel_overhead_s
    assert _gemm_s("fp8", A100, 1) == pytest.approx(hand, rel=0.01)
    # a large prefill batch is compute-bound: weight-only math is the 16-bit unit's, so FP4 weights on
    # an H100 (no FP4 unit; W4A16 Marlin) take the bf16 time, not the FP8 unit's half of it
    assert _gemm_s("fp4", H100, 16384) == pytest.approx(_gemm_s("bf16", H100, 16384), rel=0.02)
    assert _gemm_s("fp8", H100, 16384) < 0.7 * _gemm_s("bf16", H100, 16384)  # W8A8 uses the FP8 unit


def test_weight_only_quantizes_no_activations():
    m = make_model()
    kw = dict(tp=1, pp=1, kv_dtype="bf16", act_dtype="bf16", overhead_s=0.0, act_quant="dynamic")
    assert IterationCost(m, cluster(A100), weights="fp8", **kw).breakdown(512)["act_quant"] == 0.0
    assert IterationCost(m, cluster(H100), weights="fp8", **kw).breakdown(512)["act_quant"] > 0.0


# --- the model's own precision ----------------------------------------------------------------------------
def test_catalog_models_carry_their_checkpoint_precision():
    ds, l2 = get_model("deepseek-r1"), get_model("llama-2-7b")
    assert (ds.native_weights, ds.serving_dtype) == ("fp8", "bf16")
    assert (l2.native_weights, l2.serving_dtype) == ("fp16", "fp16")
    assert get_model("qwen3-8b").precision_origin().endswith("bf16 assumed")
    with pytest.raises(InputError, match="model.dtype"):
        make_model(dtype="int8")


def test_plan_defaults_are_the_models_own_and_an_fp8_kv_cache_is_asked_for():
    ds = get_model("deepseek-v3")
    assert ServingPlan().resolved(ds).weights == "fp8"
    assert ServingPlan(weights="fp8").resolved(get_model("llama-3-8b")).kv == "bf16"
    assert ServingPlan(weights="fp8", kv_dtype="fp8").resolved(ds).kv == "fp8"


def _serve(*args: str):
    return run_cli("serve", "--model", "llama-3-8b", "--rate", "5", "--requests", "40", "--json", *args)


def test_serve_says_fp8_on_an_a100_runs_weight_only():
    r = _serve("--gpu", "a100-sxm-80gb", "--weights", "fp8")
    assert r.returncode == 0, r.stderr
    inputs = json.loads(r.stdout)["inputs"]
    assert inputs["precision"]["gemm"] == "weight-only" and inputs["precision"]["kv_cache"] == "bf16"
    assert any("weight-only W8A16" in n and "Marlin" in n for n in inputs["notes"])


def test_serve_refuses_fp4_on_an_mi300x_naming_the_parts_that_can():
    r = _serve("--gpu", "mi300x", "--weights", "fp4")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "weights" in r.stderr and "b200" in r.stderr and "mi355x" in r.stderr


# --- the planner searches the model's own precision unless told --------------------------------------------
def _plan(**kw):
    from parasim.search.plan_serve import ServeSearch, run_search

    base = dict(model="llama-3-8b", gpu=("h100-sxm",), max_gpus=1, slo_ttft=5.0, slo_tpot=0.5, rate=2.0,
                prompt_tokens=256, output_tokens=32, requests=40, screen_requests=20, refine=2,
                schedulers=("sarathi",), token_budgets=(512,), max_batches=(64,), workers=1)
    return run_search(ServeSearch(**(base | kw)))


def test_plan_serve_searches_only_the_models_own_precision_by_default():
    out = _plan()
    assert out["precisions"]["searched"] == ["bf16/bf16"] and "own precision" in out["precisions"]["why"]
    assert {(r["weights"], r["kv_dtype"]) for r in out["ranked"]} == {("bf16", "bf16")}
    assert (out["baseline"]["weights"], out["baseline"]["kv_dtype"]) == ("bf16", "bf16")


def test_plan_serve_precisions_drop_a_format_per_gpu_or_refuse_it_for_all():
    out = _plan(gpu=("a100-sxm-80gb", "v100-sxm-32gb"), precisions=(("fp8", None),))
    assert out["precisions"]["searched"] == ["fp8/bf16"]  # fp8 weights, the model's KV dtype
    assert out["precisions"]["per_gpu"]["a100-sxm-80gb"]["fp8"] == "weight-only"
    assert out["precisions"]["per_gpu"]["v100-sxm-32gb"]["fp8"].startswith("cannot run")
    assert out["pruned"]["precision_unsupported"] > 0
    assert {r["gpu"] for r in out["ranked"]} <= {"a100-sxm-80gb"}
    with pytest.raises(InputError, match="precisions.*a100-sxm-80gb"):
        _plan(gpu=("v100-sxm-32gb",), precisions=(("fp8", "fp8"),))


# --- flags that would change nothing ---------------------------------------------------------------------------
def test_batchllm_shares_prefixes_without_being_asked():
    n = 40
    wl = Workload.from_columns(np.arange(n) * 0.01, np.full(n, 600), np.full(n, 8), np.arange(n) % 2,
                               np.full(n, 512))
    res = simulate(make_model(), cluster(H100), ServingPlan(scheduler="batchllm"), wl)
    assert res.inputs["plan"]["prefix_cache"] is True and res.summary["prefix_cache_hits"] > 0
    assert any("prefix cache on" in n for n in res.inputs["notes"])
    with pytest.raises(InputError, match="prefix_cache"):
        ServingPlan(scheduler="batchllm", prefix_cache=False)


@pytest.mark.parametrize("kw, field", [({"prefill_tp": 2}, "prefill_tp"), ({"decode_gpus": 1}, "decode_gpus"),
                                       ({"cuda_graph_max_batch": 64}, "cuda_graph_max_batch"),
                                       ({"act_quant": "dynamic", "weights": "bf16"}, "act_quant")])
def test_flags_that_would_be_ignored_are_input_errors(kw, field):
    with pytest.raises(InputError) as e:
        ServingPlan(**kw)
    assert e.value.field == field


def test_act_quant_on_a_model_served_in_16_bit_is_refused_after_the_default_is_filled_in():
    with pytest.raises(InputError, match="act_quant"):
        simulate(make_model(), cluster(H100), ServingPlan(act_quant="static"), generate(requests=3, rate=1.0))
