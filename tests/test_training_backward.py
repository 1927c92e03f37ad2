"""#17 item 2 (training): one backward model, split into input-gradient and weight-gradient work."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.attn_shape import FA3
from parasim.cost.layer import LayerCost, Sharding
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan
from parasim.training import step as step_mod

LLAMA = get_model("llama-3-8b")  # dense, no biases: 32 heads x 128, 8 KV heads, FFN 14336, gated
H100 = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=8)


def _layer() -> LayerCost:
    return LayerCost(LLAMA, H100, Sharding())


def test_dense_gemm_backward_is_twice_the_forward_flops_split_one_to_one():
    """Y = X W (t x k by k x n) costs 2tkn; dX = dY W^T and dW = X^T dY cost 2tkn each."""
    t = 4096
    layer = _layer()
    h, ffn, hd = 4096, 14336, 128
    # by hand: q (h x h), k and v (h x 8*128 each), o (h x h); gate, up, down (h x ffn each)
    weights = h * h + 2 * h * 8 * hd + h * h + 3 * h * ffn
    gemm_flops = sum(o["flops"] for o in layer.operators(t) if o["kind"] == "gemm")
    assert gemm_flops == pytest.approx(2 * t * weights, rel=1e-12)

    f = layer.forward(t, prefill_pairs=t * (t + 1) / 2)
    b = layer.backward(f)
    fwd_gemms_s = f["attn_gemms"] + f["mlp"]
    # each backward GEMM has its forward GEMM's FLOPs and shape class: the same time, once each
    assert b["dgrad_gemms"] == b["wgrad_gemms"] == pytest.approx(fwd_gemms_s)
    assert b["weight_grad"] == pytest.approx(fwd_gemms_s)
    assert b["input_grad"] == pytest.approx(fwd_gemms_s + b["attention"] + b["elementwise"])
    assert b["compute"] == pytest.approx(b["input_grad"] + b["weight_grad"], rel=1e-12)


def test_flash_backward_is_five_matmuls_at_a_slower_rate():
    """Forward: QK^T and PV, 2 matmuls of 2*pairs*heads*hd FLOPs; backward: recomputed QK^T, dV,
    dP, dQ, dK (5), at 0.8 of the forward's rate (FA2/FA3 papers)."""
    t = 32768
    layer = _layer()
    acc = H100.accelerator
    pairs = t * (t + 1) / 2
    bwd_flops = 5 * 2 * pairs * 32 * 128
    b = layer.backward(layer.forward(t, prefill_pairs=pairs))
    assert b["attention"] == pytest.approx(bwd_flops / (acc.peak("bf16") * acc.efficiency.attention * 0.8), rel=1e-3)


def test_training_step_uses_the_same_backward(monkeypatch):
    calls = []
    real = LayerCost.backward

    def spy(self, fwd, **kw):
        out = real(self, fwd, **kw)
        calls.append(out)
        return out

    monkeypatch.setattr(LayerCost, "backward", spy)
    plan = TrainingPlan(tp=1, dp=8, micro_batch=1, global_batch=8, seq_len=4096, recompute="none", precision="bf16")
    lt = step_mod.simulate_step(LLAMA, H100, plan).layer
    assert len(calls) == 1
    b = calls[0]
    assert lt.bwd_compute == b["compute"] + lt.parts["wgrad_accum"]
    assert lt.bwd_weight_compute == b["weight_grad"] + lt.parts["wgrad_accum"]
    # the flash backward follows the forward attention the step used, with FlashAttention-3's
    # backward row costs in place of the forward's (cost.attn_shape) at this 4k causal sequence
    s, law = 4096, FA3
    fwd = (s / 2 + law.fwd_causal) / (s / 2 + 0.5) * law.ref_seq / (law.ref_seq + law.fwd_full)
    bwd = (s / 2 + law.bwd_causal) / (s / 2 + 0.5) * law.ref_seq / (law.ref_seq + law.bwd_full)
    # (the forward's 4 us launch overhead rides along in the ratio: a 2e-5 share of 0.7 ms)
    assert b["attention"] == pytest.approx(2.5 / 0.8 * lt.parts["attention"] * bwd / fwd, rel=1e-4)


@settings(max_examples=25, deadline=None)
@given(tokens=st.integers(1, 1 << 16), frac=st.floats(0.0, 1.0), moe=st.booleans(),
       fused=st.booleans())
def test_backward_parts_add_up(tokens, frac, moe, fused):
    model = get_model("mixtral-8x7b") if moe else LLAMA
    layer = LayerCost(model, H100, Sharding())
    f = layer.forward(tokens, prefill_pairs=frac * tokens * (tokens + 1) / 2)
    b = layer.backward(f, fused_attention=fused)
    assert all(v >= 0 for v in b.values())
    assert b["weight_grad"] == b["wgrad_gemms"]
    assert b["input_grad"] + b["weight_grad"] == pytest.approx(b["compute"], rel=1e-12)
    assert b["total"] == pytest.approx(b["compute"] + b["comm"], rel=1e-12)
    assert b["weight_grad"] <= b["compute"]
