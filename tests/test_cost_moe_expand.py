"""The routing and row-expansion passes of a grouped-GEMM (CUTLASS) MoE runner, and their absence elsewhere.

TensorRT-LLM's CUTLASS MoE runner copies each token's hidden row into the k row slots of its
experts before GEMM1 (`expandInputRowsKernel`), one read and k writes per hidden element, in the
order its three routing kernels computed (top-k softmax of the logits, the sort of the pairs by
expert, each expert's first row). vLLM's and SGLang's Triton fused-MoE kernel gathers its rows
inside the GEMM, so the `triton` family has no expand kernel (its own routing kernels are not
charged); training's folded layout charges its own permutation (`moe_permute`).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.cost.layer import LayerCost, Sharding, op_time_s
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec


def layer(model: str, gemm: str, tp: int = 2, weights: str = "bf16", gpu: str = "h100-sxm") -> LayerCost:
    """A serving layer: 16-bit activations whatever the weights (ServingPlan.act_dtype)."""
    return LayerCost(get_model(model), ClusterSpec(accelerator=get_accelerator(gpu), gpus=tp), Sharding(tp=tp),
                     weight_dtype=weights, act_dtype="bf16", kv_dtype="bf16", moe_gemm=gemm)


def named(ops, name):
    found = [o for o in ops if o.name == name]
    return found[0] if found else None


def test_expand_bytes_by_hand_mixtral():
    # Mixtral-8x7B: hidden 4096, top-2; 1,000 tokens in BF16: 1,000 x (1 read + 2 writes) x 4096 x 2 B
    op = named(layer("mixtral-8x7b", "cutlass").token_ops(1000.0), "moe_expand")
    assert op is not None and op.kind == "memory"
    assert op.bytes == pytest.approx(1000 * 3 * 4096 * 2)
    # its time is the memory roofline of those bytes plus one kernel
    acc = get_accelerator("h100-sxm")
    assert op_time_s(op, acc) == pytest.approx(
        op.bytes / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory) + acc.efficiency.kernel_overhead_s)


def test_copies_are_written_in_the_expert_gemm_input_format():
    """Qwen3-30B-A3B (hidden 2048, top-8), 64 tokens: the 16-bit rows are read once and their 8
    copies written as the expert GEMM consumes them."""
    def expand_bytes(weights, gpu):
        return named(layer("qwen3-30b-a3b", "cutlass", tp=1, weights=weights, gpu=gpu).token_ops(64.0),
                     "moe_expand").bytes
    assert expand_bytes("bf16", "h100-sxm") == pytest.approx(64 * (2 + 8 * 2) * 2048)
    assert expand_bytes("fp8", "h100-sxm") == pytest.approx(64 * (2 + 8 * 1) * 2048)    # W8A8: FP8 copies
    assert expand_bytes("fp4", "b200") == pytest.approx(64 * (2 + 8 * 0.5) * 2048)     # W4A4 on Blackwell
    assert expand_bytes("fp4", "h100-sxm") == pytest.approx(64 * (2 + 8 * 2) * 2048)   # no FP4 unit: 16-bit


def test_routing_kernels_by_hand_mixtral():
    """1,000 Mixtral tokens (8 experts, top-2): fp32 logits read, 4 x 8 B per token, and 32 B per
    routed pair (12 written by the top-k, 16 read and written by the sort, 4 read for the offsets);
    three launches, so on an H100 it is three kernel overheads and a few hundred kB."""
    op = named(layer("mixtral-8x7b", "cutlass").token_ops(1000.0), "moe_topk_sort")
    assert op is not None and op.kind == "memory" and op.kernels == 3
    assert op.bytes == pytest.approx(1000 * (4 * 8 + 32 * 2))
    acc = get_accelerator("h100-sxm")
    assert op_time_s(op, acc) == pytest.approx(
        op.bytes / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory) + 3 * acc.efficiency.kernel_overhead_s)


def test_triton_family_and_dense_models_have_no_expand_pass():
    for name in ("moe_expand", "moe_topk_sort"):
        assert named(layer("mixtral-8x7b", "triton").token_ops(1000.0), name) is None
        assert named(layer("llama-3-8b", "cutlass", tp=1).token_ops(1000.0), name) is None


def test_training_folded_layout_keeps_its_own_permutation_only():
    m = get_model("mixtral-8x7b")
    folded = LayerCost(m, ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=8), Sharding(tp=1, ep=8, etp=1),
                       weight_dtype="bf16", act_dtype="bf16", kv_dtype="bf16")
    ops = folded.token_ops(4096.0)
    assert named(ops, "moe_expand") is None and named(ops, "moe_topk_sort") is None
    assert named(ops, "moe_permute") is not None


@settings(max_examples=40, deadline=None)
@given(hst.integers(1, 16384))
def test_cutlass_layer_costs_exactly_the_runner_passes_more_than_triton_outside_the_gemms(tokens):
    """The two families differ outside the expert GEMMs by the routing and expand kernels alone."""
    cut = {o.name: o for o in layer("mixtral-8x7b", "cutlass").token_ops(float(tokens))}
    tri = {o.name: o for o in layer("mixtral-8x7b", "triton").token_ops(float(tokens))}
    assert set(cut) - set(tri) == {"moe_expand", "moe_topk_sort"} and set(tri) <= set(cut)
    for name in tri:
        if not name.startswith("experts"):
            assert cut[name] == tri[name]
