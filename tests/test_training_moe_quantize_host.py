"""The grouped MLP's per-expert FP8 quantize launches (cost/moe_host.py, QUANTIZE_KERNELS_PER_EXPERT).

Transformer Engine's GroupedLinear quantizes its input (forward) and its output gradient
(backward) with one `split_quantize` call per GEMM; under MXFP8 and current scaling that call
loops over the experts, under delayed scaling one fused kernel covers them all. Checked by hand
against the published launch figure and the kernel counts read from Transformer Engine's source,
by the directions that follow (more experts, more kernels per split, never faster), and on the
validation rows that state the recipe."""

from __future__ import annotations

from pathlib import Path

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.moe_host import moe_layer_host, scope_set
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.specs.validation_case import load_cases
from parasim.training import TrainingPlan, simulate
from tests.conftest import run_cli

#: NVIDIA, "Getting Started with CUDA Graphs" (Gray, 2019): 3.8 us per short kernel launched back
#: to back without a sync.
_LAUNCH_US = 3.8
#: Kernels per split, Transformer Engine 5671fd36 `pytorch/csrc/quantizer.cpp`: MXFP8Quantizer
#: nvte_quantize_v2; Float8CurrentScalingQuantizer amax, scale from amax, quantize.
_KERNELS = {"mxfp8": 1, "tensorwise": 3}
#: split_quantize calls per expert: fc1 and fc2 inputs forward, their output gradients backward.
_CALLS_FWD = _CALLS_BWD = 2

QWEN = get_model("qwen3-30b-a3b")
B200 = ClusterSpec(accelerator=get_accelerator("b200"), gpus=8)
SHIPPED = Path(__file__).resolve().parents[1] / "validation"


@pytest.mark.parametrize("recipe", ["mxfp8", "tensorwise"])
@pytest.mark.parametrize("experts", [1, 16, 32])
def test_each_expert_adds_its_quantize_launches_by_hand(recipe, experts):
    """16 local experts under MXFP8: 16 x 2 x 3.8 us = 121.6 us more host work per pass than
    delayed scaling's fused call; current scaling three times that. Every one of them is issued
    before its expert's GEMM, so it falls in the stretch up to the last expert GEMM too."""
    base = moe_layer_host(experts, fp8=True, scopes=frozenset())
    other = moe_layer_host(experts, fp8=True, scopes=frozenset(), fp8_recipe=recipe)
    fwd_us = experts * _CALLS_FWD * _KERNELS[recipe] * _LAUNCH_US
    bwd_us = experts * _CALLS_BWD * _KERNELS[recipe] * _LAUNCH_US
    assert (other.fwd_s - base.fwd_s) * 1e6 == pytest.approx(fwd_us, rel=1e-9)
    assert (other.bwd_s - base.bwd_s) * 1e6 == pytest.approx(bwd_us, rel=1e-9)
    assert (other.fwd_experts_s - base.fwd_experts_s) * 1e6 == pytest.approx(fwd_us, rel=1e-9)
    assert (other.bwd_experts_s - base.bwd_experts_s) * 1e6 == pytest.approx(bwd_us, rel=1e-9)
    assert other.sync == base.sync


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 512), st.sampled_from(["", "attn", "moe_router,moe_preprocess", "attn,moe_router,moe_preprocess"]),
       st.sampled_from(["x86", "grace"]))
def test_recipes_order_the_host_work_and_bf16_ignores_them(experts, scope, cpu):
    """Delayed <= MXFP8 <= current scaling in every pass; outside FP8 the recipe is no setting at
    all; a full-iteration graph leaves nothing; the extra work is linear in the local experts."""
    scopes = scope_set(scope)
    runs = [moe_layer_host(experts, fp8=True, scopes=scopes, host_cpu=cpu, fp8_recipe=r)
            for r in ("delayed", "mxfp8", "tensorwise")]
    for field in ("fwd_s", "bwd_s", "fwd_experts_s", "bwd_experts_s"):
        values = [getattr(r, field) for r in runs]
        assert values == sorted(values)
    bf16 = {moe_layer_host(experts, fp8=False, scopes=scopes, host_cpu=cpu, fp8_recipe=r)
            for r in ("delayed", "mxfp8", "tensorwise")}
    assert len(bf16) == 1
    full = moe_layer_host(experts, fp8=True, scopes=scope_set("full_iteration"), host_cpu=cpu, fp8_recipe="tensorwise")
    assert full.fwd_s == full.bwd_s == 0.0
    one = moe_layer_host(experts, fp8=True, scopes=scopes, host_cpu=cpu, fp8_recipe="mxfp8").fwd_s - runs[0].fwd_s
    two = (moe_layer_host(2 * experts, fp8=True, scopes=scopes, host_cpu=cpu, fp8_recipe="mxfp8").fwd_s
           - moe_layer_host(2 * experts, fp8=True, scopes=scopes, host_cpu=cpu).fwd_s)
    assert two == pytest.approx(2 * one, rel=1e-9)


def test_a_host_bound_step_slows_by_the_launches_and_the_gpu_work_does_not_change():
    """All 128 experts of Qwen3-30B-A3B on each of 8 B200s at one 4,096-token sequence: the host is
    behind the GPU, so the extra launches show in the step; the GPU's own work is the same."""
    plan = dict(dp=8, ep=1, micro_batch=1, global_batch=64, seq_len=4096, precision="fp8")
    delayed = simulate(QWEN, B200, TrainingPlan(**plan))
    mx = simulate(QWEN, B200, TrainingPlan(**plan, fp8_recipe="mxfp8"))
    assert mx.breakdown["moe_host"] > delayed.breakdown["moe_host"]
    assert mx.step_time_s > delayed.step_time_s
    # the GPU's work differs only by the once-a-step FP8 weight-cache refresh (MXFP8 writes a
    # row- and a column-wise copy, per-tensor scaling on Blackwell one: training/step.py
    # fp8_weight_cache_bytes); one rank, one chunk: paid once
    cache = mx.details["fp8_weight_cache_s"] - delayed.details["fp8_weight_cache_s"]
    assert cache > 0
    assert mx.breakdown["compute"] - delayed.breakdown["compute"] == pytest.approx(cache, rel=1e-9)
    # 128 experts x (2 + 2) launches x 3.8 us x 48 layers x 8 micro-batches: all exposed here
    extra_s = 128 * (_CALLS_FWD + _CALLS_BWD) * _LAUNCH_US * 1e-6 * QWEN.layers * (64 // 8)
    assert mx.breakdown["moe_host"] - delayed.breakdown["moe_host"] == pytest.approx(extra_s, rel=1e-6)


def test_a_dense_model_keeps_its_step_under_every_recipe():
    """No per-expert launches in a dense model: the per-tensor recipes give the same step; MXFP8's
    compute differs only by its once-a-step weight-cache refresh (two scaled copies instead of one)."""
    llama = get_model("llama-3-8b")
    cluster = ClusterSpec(accelerator=get_accelerator("b200"), gpus=8)
    runs = {r: simulate(llama, cluster, TrainingPlan(dp=8, micro_batch=1, global_batch=8, seq_len=2048,
                                                     precision="fp8", fp8_recipe=r))
            for r in ("delayed", "tensorwise", "mxfp8")}
    assert runs["delayed"].step_time_s == runs["tensorwise"].step_time_s
    cache = runs["mxfp8"].details["fp8_weight_cache_s"] - runs["delayed"].details["fp8_weight_cache_s"]
    assert runs["mxfp8"].breakdown["compute"] - runs["delayed"].breakdown["compute"] == pytest.approx(cache, rel=1e-9)


def test_the_h100_megatron_bridge_moe_rows_state_current_scaling():
    """Every Megatron-Bridge H100 FP8 row ran an fp8_cs preset (FP8-CS, *_H100_FP8_CS_*): current
    scaling, `tensorwise`; its source says where that is read."""
    rows = [c for c in load_cases(SHIPPED / "moe-training-published.yaml")
            if c.id.startswith("mbridge-") and "-h100-" in c.id and c.plan.get("precision") == "fp8"]
    assert len(rows) == 5
    for c in rows:
        assert c.plan.get("fp8_recipe") == "tensorwise", c.id
        assert "bf16_with_fp8_current_scaling_mixed" in c.source


def test_the_cli_recipe_moves_a_host_bound_moe_step_and_refuses_it_outside_fp8():
    args = ["train", "--model", "qwen3-30b-a3b", "--gpu", "b200", "--gpus", "8", "--dp", "8", "--ep", "8",
            "--micro-batch", "1", "--global-batch", "64", "--seq-len", "4096", "--json"]
    steps = {}
    for recipe in ("delayed", "mxfp8", "tensorwise"):
        r = run_cli(*args, "--precision", "fp8", "--fp8-recipe", recipe)
        assert r.returncode == 0, r.stderr
        steps[recipe] = json.loads(r.stdout)["step_time_s"]
    assert steps["delayed"] < steps["mxfp8"] < steps["tensorwise"]
    bad = run_cli(*args, "--precision", "bf16", "--fp8-recipe", "mxfp8")
    assert bad.returncode == 2
    assert "fp8-recipe" in bad.stderr + bad.stdout
