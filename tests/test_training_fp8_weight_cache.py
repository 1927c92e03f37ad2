"""Transformer Engine's FP8 weight cache, refreshed once per step on each model chunk's first
forward (Megatron-Core `forward_step` sets `is_first_microbatch`; the later micro-batches reuse the
cached FP8 weights).

The bytes per weight are counted by hand from what is read and written; the pipeline's growth
follows from the fill chain: the first micro-batch's forward visits every virtual stage in turn, so
a cost on each stage's first forward adds pp x v of it to the step, whatever the micro-batch count.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.specs.catalog import get_accelerator
from parasim.training import TrainingPlan
from parasim.training.schedules import for_virtual_stages, get_schedule
from parasim.training.step import fp8_weight_cache_bytes, fp8_weight_cache_s, run_pipeline
from parasim.specs.model import ModelSpec


def _plan(**kw) -> TrainingPlan:
    base = {"tp": 1, "pp": 1, "dp": 1, "micro_batch": 1, "global_batch": 1, "seq_len": 2048,
            "precision": "fp8", "kernels": "fused"}
    base.update(kw)
    return TrainingPlan.from_mapping(base, gpus=base["tp"] * base["pp"] * base["dp"])


@pytest.mark.parametrize(("generation", "recipe", "gathered", "expected"), [
    # from the 16-bit parameter: read 2 B, write each FP8 copy (1 B, MXFP8 + 1/32 B of E8M0 scale)
    ("hopper", "delayed", False, 2 + 1 + 1),          # row-wise and transposed copies (TN-only GEMMs)
    ("blackwell", "delayed", False, 2 + 1),           # one copy serves both GEMMs
    ("blackwell", "mxfp8", False, 2 + 2 * (1 + 1 / 32)),
    # FP8 parameters: read the gathered copy, write the others
    ("hopper", "delayed", True, 1 + 1),
    ("blackwell", "tensorwise", True, 0.0),
    ("blackwell", "mxfp8", True, 2 * (1 + 1 / 32)),
])
def test_bytes_per_weight(generation, recipe, gathered, expected):
    plan = _plan(fp8_recipe=recipe, fp8_param_gather=gathered)
    assert fp8_weight_cache_bytes(plan, generation) == pytest.approx(expected)


@pytest.mark.parametrize("plan", [_plan(precision="bf16"), _plan(kernels="eager")])
def test_nothing_outside_transformer_engine_fp8(plan):
    assert fp8_weight_cache_bytes(plan, "hopper") == 0.0


def test_seconds_of_a_gpt3_chunk_on_h100():
    """GPT-3 175B at TP 4: 12 h^2 / 4 weights a layer, 4 B each on Hopper, at the part's memory rate."""
    model = ModelSpec(name="gpt3-175b", family="gpt", layers=96, hidden=12288, heads=96, kv_heads=96, head_dim=128,
                      ffn_hidden=49152, vocab=51200, gated_mlp=False)
    acc = get_accelerator("h100-sxm")
    plan = _plan(tp=4)
    weights = 12 * 12288 ** 2 / 4
    rate = acc.hbm_bw_bytes_per_s * acc.efficiency.memory
    expected = weights * 4 / rate + 4 * acc.efficiency.kernel_overhead_s
    assert fp8_weight_cache_s(model, plan, acc, 1) == pytest.approx(expected, rel=1e-9)
    assert fp8_weight_cache_s(model, plan, acc, 0) == 0.0


def _step(name: str, pp: int, m: int, v: int, delta: float) -> float:
    sched = get_schedule(name)
    ops = [sched.ops(r, pp, m, v) for r in range(pp)]
    fwd = [[(1.0 / v, 0.0)] * v for _ in range(pp)]
    bwd = [[(2.0 / v, 0.0)] * v for _ in range(pp)]
    return max(run_pipeline(ops, pp, v, m, fwd, bwd, 0.0, first_fwd=[[delta] * v for _ in range(pp)]).end_s)


@given(pp=st.integers(1, 8), m=st.integers(1, 24))
@settings(max_examples=40, deadline=None)
def test_1f1b_pays_each_ranks_first_forward_once_per_step(pp, m):
    delta = 0.01
    assert _step("1f1b", pp, m, 1, delta) - _step("1f1b", pp, m, 1, 0.0) == pytest.approx(pp * delta, abs=1e-9)


@pytest.mark.parametrize(("pp", "v", "groups"), [(2, 2, 1), (2, 3, 4), (4, 2, 2), (4, 4, 1), (8, 3, 2)])
def test_interleaved_pays_every_virtual_stage_on_the_fill_chain(pp, v, groups):
    """The first micro-batch's forward visits the pp x v virtual stages one after another with no
    slack, so each stage's first-forward cost adds once: pp x v x delta, for m = pp and m = 4 pp alike."""
    delta = 0.01
    name = for_virtual_stages("1f1b", v)
    m = groups * pp
    assert _step(name, pp, m, v, delta) - _step(name, pp, m, v, 0.0) == pytest.approx(pp * v * delta, abs=1e-9)
