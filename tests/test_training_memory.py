"""Memory at the schedule's peak against Megatron's theoretical-memory formulas."""

from __future__ import annotations

import pytest

from parasim.cost.memory import embedding_activation_bytes, logits_activation_bytes
from parasim.specs.catalog import get_accelerator
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec
from parasim.training import TrainingPlan, simulate

GPT = ModelSpec(name="gpt-test", family="gpt", layers=24, hidden=4096, heads=32, kv_heads=32, head_dim=128,
                ffn_hidden=16384, vocab=51200, biases=True, dropout=True, gated_mlp=False)


def _result(pp=4, v=1, tp=4, dp=2, m=16, zero=1, schedule="1f1b", recompute="selective"):
    cluster = ClusterSpec(accelerator=get_accelerator("a100-sxm-80gb"), gpus=tp * pp * dp)
    plan = TrainingPlan(tp=tp, pp=pp, dp=dp, virtual_stages=v, sequence_parallel=True, micro_batch=1,
                        global_batch=m * dp, seq_len=2048, recompute=recompute, zero=zero,
                        schedule=schedule if v == 1 else "interleaved")
    return simulate(GPT, cluster, plan), plan


def _megatron_layer_activations(plan: TrainingPlan) -> float:
    """Megatron theoretical memory, first stage: s*b*h*(18 + 4*ffn/h) / t per layer, p micro-batches in
    flight of L/p layers, interleaved penalty 1 + (p-1)/(p*v)."""
    s, b, h = plan.seq_len, plan.micro_batch, GPT.hidden
    per_layer = s * b * h * (18 + 4 * GPT.ffn_hidden / h) / plan.tp
    total = per_layer * GPT.layers  # (L/p layers) x (p in flight)
    if plan.virtual_stages > 1:
        total *= 1 + (plan.pp - 1) / (plan.pp * plan.virtual_stages)
    return total


@pytest.mark.parametrize("pp,v", [(4, 1), (4, 2), (2, 3), (1, 1)])
def test_activations_match_megatron_formula(pp, v):
    res, plan = _result(pp=pp, v=v, m=8)
    assert res.memory["rank"] == 0
    sp = True
    emb = embedding_activation_bytes(GPT, seq=plan.seq_len, micro_batch=1, tp=plan.tp, sp=sp)
    inflight = res.memory["inflight_microbatches"]
    layers_only = res.memory["activations_gib"] * 2**30 - emb * min(inflight, pp)
    if pp == 1:
        layers_only -= logits_activation_bytes(GPT, seq=plan.seq_len, micro_batch=1, tp=plan.tp)
    assert layers_only == pytest.approx(_megatron_layer_activations(plan), rel=0.05)


@pytest.mark.parametrize("zero,bytes_per_param", [(0, lambda dp: 18.0), (1, lambda dp: 6 + 12 / dp)])
def test_model_state_matches_megatron_bytes_per_param(zero, bytes_per_param):
    from parasim.cost.memory import weight_params_per_gpu

    res, plan = _result(zero=zero, dp=4)
    params = weight_params_per_gpu(GPT, tp=plan.tp, pp=plan.pp, stage=0)
    state = (res.memory["weights_gib"] + res.memory["gradients_gib"] + res.memory["optimizer_gib"]) * 2**30
    assert state == pytest.approx(params * bytes_per_param(plan.dp), rel=0.05)


def test_gpipe_holds_m_microbatches_1f1b_at_most_p():
    g, _ = _result(pp=4, m=16, schedule="gpipe")
    o, _ = _result(pp=4, m=16, schedule="1f1b")
    assert g.memory["inflight_microbatches"] == pytest.approx(16, rel=0.02)
    assert o.memory["inflight_microbatches"] <= 4 + 1e-9
    assert g.peak_memory_bytes > o.peak_memory_bytes


def test_a_plan_that_does_not_fit_is_reported_with_its_breakdown():
    res, _ = _result(pp=1, tp=1, dp=8, m=2, zero=0, recompute="none")
    assert res.fits is False
    assert res.memory["total_gib"] > res.memory["capacity_gib"]
    assert res.step_time_s > 0
