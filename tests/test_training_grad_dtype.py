"""The weight-gradient accumulation epilogue and bf16 gradient buffers, against hand formulas."""


def test_wgrad_accum_scales_with_grad_dtype():
    from parasim.training import TrainingPlan, simulate
    from parasim.specs.catalog import get_model

    m = get_model("llama-3-8b")
    from parasim.cli.train_cmd import build

    _, cluster, _, _ = build({"model": "llama-3-8b", "gpu": "h100-sxm", "gpus": 8})
    base = dict(tp=1, pp=1, dp=8, micro_batch=1, global_batch=64, seq_len=4096)
    r32 = simulate(m, cluster, TrainingPlan(**base))
    r16 = simulate(m, cluster, TrainingPlan(**base, grad_dtype="bf16"))
    ko = cluster.accelerator.efficiency.kernel_overhead_s  # one kernel launch each
    a, b = r32.details["layer_fwd_wgrad_accum"] - ko, r16.details["layer_fwd_wgrad_accum"] - ko
    assert abs(a - 2 * b) < 1e-12
    # read + write of the fp32 buffer: 8 bytes per local matmul weight at streaming bandwidth
    acc = cluster.accelerator
    params = m.attn_params + m.dense_mlp_params
    assert abs(a - params * 8 / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory)) < 1e-12
    assert r16.memory["gradients_gib"] == r32.memory["gradients_gib"] / 2
