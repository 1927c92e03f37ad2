"""`recompute: dots`: every weight matmul's output and the attention output saved, the elementwise ops
recomputed in the backward (JAX's checkpoint_dots_with_no_batch_dims; MaxText's remat policies minimal /
minimal_flash, Paxml's SAVE_DOT_WITH_NO_BATCH_DIM). Values derived by hand from that definition."""

from __future__ import annotations

import pytest

from parasim.cost.memory import activation_bytes_per_layer
from parasim.cost.sac import dots_saved_bytes_per_token
from parasim.errors import InputError
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from parasim.training import TrainingPlan, simulate

LLAMA2_7B = get_model("llama-2-7b")
H100 = get_accelerator("h100-sxm")


def test_saved_bytes_by_hand():
    # block input, Q, K, V, output projection, gate, up, down, attention output (16-bit) + fp32 LSE per head
    h, f, heads = 4096, 11008, 32
    elements = h + 3 * h + h + 2 * f + h + h
    assert dots_saved_bytes_per_token(LLAMA2_7B) == elements * 2 + 4 * heads == 101_504
    # TP 2 without SP: column-parallel outputs, the attention output and the LSE split; input, row outputs not
    tp2 = (h + 3 * h / 2 + h + 2 * f / 2 + h + h / 2) * 2 + 4 * heads / 2
    assert dots_saved_bytes_per_token(LLAMA2_7B, tp=2) == pytest.approx(tp2)


def test_memory_between_none_and_full():
    kw = dict(seq=4096, micro_batch=4)
    dots = activation_bytes_per_layer(LLAMA2_7B, recompute="dots", **kw)
    assert dots == 4096 * 4 * 101_504
    assert activation_bytes_per_layer(LLAMA2_7B, recompute="full", **kw) < dots
    assert dots < activation_bytes_per_layer(LLAMA2_7B, recompute="none", **kw)


def _run(recompute: str):
    plan = TrainingPlan(dp=8, zero=3, micro_batch=4, global_batch=32, seq_len=4096, recompute=recompute)
    return simulate(LLAMA2_7B, cluster_for(H100, 8), plan.check(LLAMA2_7B, 8))


def test_backward_repeats_the_elementwise_forward_only():
    none, dots = _run("none"), _run("dots")
    extra = dots.details["layer_bwd_s"] - none.details["layer_bwd_s"]
    assert extra == pytest.approx(dots.details["layer_fwd_elementwise"], rel=1e-9)
    assert dots.details["layer_fwd_s"] == none.details["layer_fwd_s"]
    # no matmul or attention FLOPs repeated: hardware FLOPs are the model FLOPs
    assert dots.hardware_flops_per_token == dots.model_flops_per_token == none.hardware_flops_per_token
    assert dots.memory["activations_gib"] < none.memory["activations_gib"]


def test_unknown_mode_lists_dots():
    with pytest.raises(InputError) as e:
        TrainingPlan(recompute="dot").check(LLAMA2_7B)
    assert e.value.field == "recompute" and "dots" in e.value.message
