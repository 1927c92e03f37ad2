"""GPT-OSS in Megatron-Core training: the GLU clamp runs as kernels of its own before
the fused activation (megatron/core/fusions/fused_bias_geglu.py, `weighted_bias_quick_geglu_impl`
with `clamp_value`), and the experts' output bias is added outside the grouped GEMM
(megatron/core/transformer/moe/experts.py, `TEGroupedMLP._apply_bias`), both at core_v0.15.0 and
core_v0.16.0; and Megatron-Bridge runs its YaRN rotary unfused. Their traffic is counted by hand
here op by op."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.layer import LayerCost, Sharding
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from parasim.training import TrainingPlan, simulate

OSS = get_model("gpt-oss-120b")  # 128 experts, top-4, expert FFN 2880
QWEN30 = get_model("qwen3-30b-a3b")
GB200 = get_accelerator("gb200")


def _training_layer(model, kernels: str = "fused") -> LayerCost:
    # etp set = training's folded Megatron-Core layout (every GPU routes its own tokens)
    return LayerCost(model, cluster_for(GB200, 8), Sharding(ep=8, etp=1, moe_token_sets=8), kernels=kernels)


@settings(max_examples=20, deadline=None)
@given(tokens=st.sampled_from([1024, 4096, 16384]))
def test_clamp_is_two_half_width_clamps_and_a_concatenation(tokens):
    """Per routed token-expert pair and expert-FFN element: x_glu.clamp reads 1 and writes 1,
    x_linear.clamp reads 1 and writes 1, torch.cat reads both halves (2) and writes them (2): 8
    bf16 accesses, 3 kernels."""
    elem = _training_layer(OSS).nongemm_s(tokens, moe=True)
    pairs_elems = tokens * OSS.experts_per_token * OSS.moe_ffn_hidden
    bw = GB200.hbm_bw_bytes_per_s * GB200.efficiency.memory
    expected = pairs_elems * (1 + 1 + 1 + 1 + 2 + 2) * 2 / bw + 3 * GB200.efficiency.kernel_overhead_s
    assert elem["activation_clamp"] == pytest.approx(expected)
    # the clamp moves 8/3 of the fused activation's own traffic (read gate and up, write 1)
    assert elem["activation_clamp"] > 2 * elem["activation"]


def test_no_clamp_without_a_clamped_glu_in_serving_or_outside_megatron_core():
    assert "activation_clamp" not in _training_layer(QWEN30).nongemm_s(4096, moe=True)
    # serving engines fuse the clamp into their activation kernel (serving layout: etp None)
    serving = LayerCost(OSS, cluster_for(GB200, 8), Sharding(ep=8), kernels="fused")
    assert "activation_clamp" not in serving.nongemm_s(4096, moe=True)
    assert "activation_clamp" not in _training_layer(OSS, kernels="eager").nongemm_s(4096, moe=True)


def test_moe_act_recompute_runs_the_clamp_again():
    """Megatron-Core's `moe_act` checkpoint wraps `bias_act_func`, clamp included: recomputing it
    adds the forward's activation and clamp time to the backward, once per MoE layer and micro-batch."""
    cluster = cluster_for(GB200, 64)
    base = dict(tp=1, pp=1, dp=64, ep=64, micro_batch=1, global_batch=64, seq_len=4096)
    plain = simulate(OSS, cluster, TrainingPlan(recompute="selective", recompute_modules="core_attn", **base))
    act = simulate(OSS, cluster, TrainingPlan(recompute="selective", recompute_modules="core_attn,moe_act", **base))
    d = plain.details
    per_layer = d["layer_fwd_elementwise_activation"] + d["layer_fwd_elementwise_activation_clamp"]
    assert act.details["layer_bwd_s"] - plain.details["layer_bwd_s"] == pytest.approx(per_layer, rel=1e-6)


@pytest.mark.parametrize("ep", [8, 64])
def test_expert_output_bias_is_added_per_local_expert_then_concatenated(ep):
    """Megatron-Core's `_apply_bias` after the bias-less second grouped GEMM, per routed pair and
    hidden element, all in the activations' 16 bits: `b * p` writes 1, `t + b * p` reads 2 and
    writes 1, for each local expert (2 kernels each), then `torch.cat` reads 1 and writes 1 (1
    kernel)."""
    tokens = 4096
    layer = LayerCost(OSS, cluster_for(GB200, ep), Sharding(ep=ep, etp=1, moe_token_sets=ep), kernels="fused")
    elem = layer.nongemm_s(tokens, moe=True)
    bw = GB200.hbm_bw_bytes_per_s * GB200.efficiency.memory
    local = OSS.experts // ep
    expected = (tokens * OSS.experts_per_token * OSS.hidden * (1 + 3 + 2) * 2 / bw
                + (2 * local + 1) * GB200.efficiency.kernel_overhead_s)
    assert elem["expert_bias"] == pytest.approx(expected)


def test_no_expert_bias_op_for_bias_free_experts_or_serving():
    assert "expert_bias" not in _training_layer(QWEN30).nongemm_s(4096, moe=True)
    serving = LayerCost(OSS, cluster_for(GB200, 8), Sharding(ep=8), kernels="fused")
    assert "expert_bias" not in serving.nongemm_s(4096, moe=True)


def test_yarn_rotary_runs_megatron_cores_unfused_ops_in_training():
    """Megatron-Bridge builds GPT-OSS's YaRN as position_embedding_type "yarn" and switches rope
    fusion off for it, so per query/key element Megatron-Core's `_apply_rotary_pos_emb_bshd` runs
    t*cos (2), -x2 (1), cat (2), *sin (2), add (3), cat with the empty pass-through (2): 12
    accesses in 6 kernels, against the fused kernel's read and write (2, 1 kernel)."""
    tokens = 4096
    train = _training_layer(OSS).nongemm_s(tokens, moe=True)["rotary"]
    serving = LayerCost(OSS, cluster_for(GB200, 8), Sharding(ep=8), kernels="fused").nongemm_s(tokens, moe=True)["rotary"]
    qk = tokens * (OSS.heads + OSS.kv_heads) * OSS.head_dim
    bw = GB200.hbm_bw_bytes_per_s * GB200.efficiency.memory
    launch = GB200.efficiency.kernel_overhead_s
    assert train == pytest.approx(qk * (2 + 1 + 2 + 2 + 3 + 2) * 2 / bw + 6 * launch)
    assert serving == pytest.approx(qk * 2 * 2 / bw + launch)
    # a model Megatron-Bridge builds as "rope" keeps the fused kernel in training
    qwen = _training_layer(QWEN30).nongemm_s(tokens, moe=True)["rotary"]
    assert qwen == pytest.approx(tokens * (QWEN30.heads + QWEN30.kv_heads) * QWEN30.head_dim * 2 * 2 / bw + launch)
