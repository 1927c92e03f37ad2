"""The memory-bound kernels of a training step, each checked against a hand count of the bytes the
reference code moves (reads + writes per element), and the orderings the kernel modes must keep."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.layer import EdgeCost, LayerCost, Sharding
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan, simulate

H100 = get_accelerator("h100-sxm")
LLAMA = get_model("llama-3-8b")


def _bw(acc) -> float:
    return acc.hbm_bw_bytes_per_s * acc.efficiency.memory


def test_eager_adam_step_is_the_foreach_traffic_over_the_local_shard():
    """torch.optim.AdamW(foreach) on an FSDP fp32 shard, op by op (reads + writes, 4 bytes each):
    p.mul_(1 - lr*wd) 2, m.lerp_(g) 3, v.mul_ 2, v.addcmul_(g, g) 4, sqrt 2, div 2, add eps 2,
    p.addcdiv_(m, denom) 4; clipping: norm of g 1, g.mul_ 2."""
    accesses = 2 + 3 + 2 + 4 + 2 + 2 + 2 + 4 + 1 + 2
    cluster = ClusterSpec(accelerator=H100, gpus=8)
    plan = TrainingPlan(dp=8, micro_batch=1, global_batch=8, seq_len=2048, zero=3, kernels="eager")
    res = simulate(LLAMA, cluster, plan)
    local = LLAMA.params_total / 8  # zero 3: every parameter (embedding and norms too) sharded over 8
    kernel_s = res.breakdown["optimizer"] - local * accesses * 4 / _bw(H100)
    assert 0 <= kernel_s < 1e-3  # the rest is launches, a few microseconds each
    fused = simulate(LLAMA, cluster, plan.with_(kernels="fused")).breakdown["optimizer"]
    # Megatron's fused Adam: grad 4, master r+w 8, moments r+w 16, bf16 weight 2, norm pass 4
    assert fused == pytest.approx(local * (4 + 8 + 16 + 2 + 4) / _bw(H100), rel=0.01)


def test_eager_cross_entropy_is_the_fp32_logits_traffic():
    """F.cross_entropy(logits.float()): forward upcast (2 + 4 bytes) and a two-pass log-softmax
    (4 + 4 + 4); backward zero-filled nll gradient (4), log-softmax backward (4 + 4 + 4) and the
    downcast (4 + 2)."""
    tokens = 8192
    layer = LayerCost(LLAMA, ClusterSpec(accelerator=H100, gpus=1), Sharding(), kernels="eager")
    fwd, bwd = EdgeCost(layer).cross_entropy_s(tokens)
    logits = tokens * LLAMA.vocab
    launch = H100.efficiency.kernel_overhead_s
    assert fwd == pytest.approx(logits * (2 + 4 + 12) / _bw(H100) + 2 * launch)
    assert bwd == pytest.approx(logits * (4 + 12 + 6) / _bw(H100) + 3 * launch)


def test_compiled_loss_reads_the_logits_instead_of_writing_fp32_copies():
    layer = LayerCost(LLAMA, ClusterSpec(accelerator=H100, gpus=1), Sharding(), kernels="compiled")
    fwd, bwd = EdgeCost(layer).cross_entropy_s(4096)
    eager = EdgeCost(LayerCost(LLAMA, ClusterSpec(accelerator=H100, gpus=1), Sharding(), kernels="eager"))
    assert fwd + bwd < sum(eager.cross_entropy_s(4096)) / 3


def test_eager_rmsnorm_moves_nine_times_a_fused_norm():
    """RMSNorm as torchtitan writes it: upcast 2+4, pow 4+4, mean 4, mul 4+4, downcast 4+2,
    weight 2+2 = 36 bytes per element against a fused kernel's read + write (2 + 2)."""
    cluster = ClusterSpec(accelerator=H100, gpus=1)
    t = 16384
    eager = LayerCost(LLAMA, cluster, Sharding(), kernels="eager").nongemm_s(t)["norms"]
    fused = LayerCost(LLAMA, cluster, Sharding(), kernels="fused").nongemm_s(t)["norms"]
    launch = H100.efficiency.kernel_overhead_s
    assert eager - 16 * launch == pytest.approx(9 * (fused - 2 * launch))


def test_the_named_parts_add_up_to_the_layer_elementwise():
    cluster = ClusterSpec(accelerator=H100, gpus=8)
    plan = TrainingPlan(dp=8, micro_batch=2, global_batch=16, seq_len=4096, zero=3, kernels="eager")
    d = simulate(LLAMA, cluster, plan).details
    named = sum(v for k, v in d.items() if k.startswith("layer_fwd_elementwise_"))
    assert named == pytest.approx(d["layer_fwd_elementwise"])
    assert {"layer_fwd_elementwise_norms", "layer_fwd_elementwise_rotary", "layer_fwd_elementwise_activation",
            "layer_fwd_elementwise_residual", "layer_fwd_elementwise_repeat_kv"} <= set(d)


@given(mb=st.integers(1, 4), seq=st.sampled_from([1024, 2048, 8192]), zero=st.sampled_from([1, 3]),
       model=st.sampled_from(["llama-3-8b", "gpt-3-175b", "mixtral-8x7b"]))
@settings(max_examples=15, deadline=None)
def test_eager_is_never_faster_than_fused_and_breakdown_still_sums(mb, seq, zero, model):
    spec = get_model(model)
    tp = 8 if spec.params_total > 50e9 else 1
    cluster = ClusterSpec(accelerator=H100, gpus=16)
    plan = TrainingPlan(tp=tp, dp=16 // tp, micro_batch=mb, global_batch=mb * 16 // tp * 2, seq_len=seq, zero=zero,
                        sequence_parallel=tp > 1, recompute="full")
    steps = {}
    for mode in ("fused", "compiled", "eager"):
        res = simulate(spec, cluster, plan.with_(kernels=mode))
        bd = res.breakdown
        assert bd["compute"] + bd["exposed_comm"] + bd["bubble"] + bd["optimizer"] + bd["straggler"] + bd.get("moe_host", 0.0) == pytest.approx(res.step_time_s)
        steps[mode] = res.step_time_s
    assert steps["eager"] >= steps["compiled"] - 1e-12
    assert steps["eager"] >= steps["fused"] - 1e-12


@given(scale=st.floats(1.0, 4.0))
@settings(max_examples=10, deadline=None)
def test_more_memory_bandwidth_is_never_slower(scale):
    faster = H100.with_(hbm_bw_bytes_per_s=H100.hbm_bw_bytes_per_s * scale)
    plan = TrainingPlan(dp=8, micro_batch=1, global_batch=16, seq_len=2048, zero=3, kernels="eager")
    base = simulate(LLAMA, ClusterSpec(accelerator=H100, gpus=8), plan).step_time_s
    assert simulate(LLAMA, ClusterSpec(accelerator=faster, gpus=8), plan).step_time_s <= base + 1e-12


def test_torchtitan_op_checkpointing_recomputes_wk_wo_w3():
    """Per-op SAC recomputes the 2nd, 4th and 6th matmul of the block (wq wk wv wo w1 w3 w2): the
    hardware FLOPs add their forward, 2 x (h*kv + q*h + h*ffn) per layer per token."""
    from parasim.cost.flops import training_hardware_flops_per_token, training_model_flops_per_token

    m = LLAMA
    extra = 2 * m.layers * (4096 * 1024 + 4096 * 4096 + 4096 * 14336)
    assert training_hardware_flops_per_token(m, 4096.5, "selective_op") == pytest.approx(
        training_model_flops_per_token(m, 4096.5) + extra)


def test_op_checkpointing_costs_between_none_and_full():
    cluster = ClusterSpec(accelerator=H100, gpus=8)
    plan = TrainingPlan(dp=8, micro_batch=2, global_batch=16, seq_len=8192, zero=3)
    steps = {rc: simulate(LLAMA, cluster, plan.with_(recompute=rc)).step_time_s for rc in ("none", "selective_op", "full")}
    assert steps["none"] < steps["selective_op"] < steps["full"]
