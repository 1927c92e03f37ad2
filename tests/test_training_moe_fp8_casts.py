"""Transformer Engine's FP8 casts around an MoE layer's experts (issue #18): TEGroupedMLP's
GroupedLinear quantizes the permuted rows it receives, one row per routed token-expert pair, so
the casts of the experts' GEMM inputs (forward) and output gradients (backward) grow with top-k
and the expert width, not with the model's dense FFN width. Checked against element counts
written out by hand from the tensor shapes, and dense layers against the shapes of a dense MLP."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.roofline import memory_time_s
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan, simulate
from parasim.training.step import _costers, _fp8_casts_s

QWEN30 = get_model("qwen3-30b-a3b")  # hidden 2048, 32 x 128 query heads, 4 KV heads, 128 experts top-8 of 768
LLAMA8 = get_model("llama3-8b")
B200 = get_accelerator("b200")
# bytes per cast element: read the 16-bit value (2), write it in FP8 (1) and its transposed copy for
# the backward's other GEMM (1)
CAST_BYTES = 2 + 1 + 1


def _plan(**kw) -> TrainingPlan:
    """EP 8 over 8 B200s, one 4,096-token sequence per micro-batch; the contiguous gate gives every
    expert exactly its share (no sampling noise on the busiest rank: load factor 1)."""
    base = dict(dp=8, ep=8, micro_batch=1, global_batch=64, seq_len=4096, precision="fp8",
                moe_routing="contiguous")
    base.update(kw)
    return TrainingPlan(**base)


def _casts(model, plan, *, moe: bool, gpus: int = 8):
    cluster = ClusterSpec(accelerator=B200, gpus=gpus)
    layer, _ = _costers(model, cluster, plan)
    return _fp8_casts_s(model, plan, layer, B200, plan.micro_batch * plan.seq_len, moe=moe)


def test_the_experts_casts_count_one_row_per_routed_pair():
    t, h, q, k, w = 4096, 2048, 32 * 128, 8, 768
    qkv_out = q + 2 * 4 * 128
    # forward: QKV input (h), output projection input (q); the experts' first GEMM input (h) and
    # second GEMM input (w) on t * k permuted rows
    fwd = t * (h + q) + t * k * (h + w)
    # backward: QKV and output-projection output gradients; the second GEMM's output gradient (h)
    # and the first's (gate and up: 2 w) on the same rows
    bwd = t * (qkv_out + h) + t * k * (h + 2 * w)
    got = _casts(QWEN30, _plan(), moe=True)
    assert got[0] == pytest.approx(memory_time_s(fwd * CAST_BYTES, B200, kernels=4), rel=1e-12)
    assert got[1] == pytest.approx(memory_time_s(bwd * CAST_BYTES, B200, kernels=4), rel=1e-12)


def test_a_dense_layer_casts_the_dense_mlp():
    t, h, q, f = 4096, 4096, 4096, 14336
    qkv_out = q + 2 * 8 * 128
    fwd = t * (h + q) + t * (h + f)
    bwd = t * (qkv_out + h) + t * (h + 2 * f)
    got = _casts(LLAMA8, TrainingPlan(dp=8, micro_batch=1, global_batch=8, seq_len=4096, precision="fp8"), moe=False)
    assert got[0] == pytest.approx(memory_time_s(fwd * CAST_BYTES, B200, kernels=4), rel=1e-12)
    assert got[1] == pytest.approx(memory_time_s(bwd * CAST_BYTES, B200, kernels=4), rel=1e-12)


def test_sixteen_bit_runs_cast_nothing():
    assert _casts(QWEN30, _plan(precision="bf16"), moe=True) == (0.0, 0.0)


def test_the_step_reports_the_expert_casts():
    res = simulate(QWEN30, ClusterSpec(accelerator=B200, gpus=8), _plan())
    assert res.details["layer_fwd_elementwise_fp8_casts"] == pytest.approx(_casts(QWEN30, _plan(), moe=True)[0],
                                                                           rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 7))
def test_more_experts_per_token_cast_more(k):
    """Each further expert per token adds one permuted row per token to both grouped GEMMs."""
    few = _casts(replace(QWEN30, experts_per_token=k), _plan(), moe=True)
    more = _casts(replace(QWEN30, experts_per_token=k + 1), _plan(), moe=True)
    assert more[0] > few[0] and more[1] > few[1]
    t, h, w = 4096, 2048, 768
    step = t * (h + w) * CAST_BYTES / (B200.hbm_bw_bytes_per_s * B200.efficiency.memory)  # one row per token
    assert more[0] - few[0] == pytest.approx(step, rel=1e-6)


def test_a_shared_expert_casts_as_a_dense_mlp_of_its_width():
    """A shared expert sees every token (no routing): its first GEMM's input and its second's, and
    their output gradients, one row per token."""
    t, h, w = 4096, 2048, 768
    base = _casts(QWEN30, _plan(), moe=True)
    shared = _casts(replace(QWEN30, shared_experts=1), _plan(), moe=True)
    per_byte = 1 / (B200.hbm_bw_bytes_per_s * B200.efficiency.memory)
    assert shared[0] - base[0] == pytest.approx(t * (h + w) * CAST_BYTES * per_byte, rel=1e-9)
    assert shared[1] - base[1] == pytest.approx(t * (h + 2 * w) * CAST_BYTES * per_byte, rel=1e-9)
