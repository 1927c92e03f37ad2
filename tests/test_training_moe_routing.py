"""Which GPUs a token's experts sit on, and what DeepEP sends for it (issue #18): DeepEP moves a
token once per destination GPU (its `is_token_in_rank` layout), not once per expert there; NeMo
AutoModel's benchmark gate (`fake_balanced_gate`) gives each token k consecutive expert ids
(`moe_routing: contiguous`); and the AutoModel recipes' full activation checkpointing with bf16
parameters, under which the published runs fit in 80 GB."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli
from parasim.cost.comm import Group
from parasim.cost.moe_a2a import a2a_time_s, remote_domains_per_token, units_per_token
from parasim.cost.routing import expert_load_factor
from parasim.errors import InputError
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from parasim.training import TrainingPlan, simulate

QWEN30 = get_model("qwen3-30b-a3b")  # 128 experts, top-8
DSV3 = get_model("deepseek-v3")  # 256 experts, top-8
LLAMA8 = get_model("llama3-8b")
H100 = get_accelerator("h100-sxm")


def test_a_contiguous_run_of_k_ids_covers_the_gpus_holding_it():
    # Qwen3-30B-A3B on EP 8: 16 experts per GPU; runs start at multiples of 8, so never straddle
    assert units_per_token(8, 8, 128, "contiguous") == 1.0
    # DeepSeek-V3 on EP 64: 4 experts per GPU, a run of 8 aligned on 4 covers exactly 2 GPUs;
    # 8 nodes of 32 experts: a run starting at a multiple of 8 stays in one node
    assert units_per_token(8, 64, 256, "contiguous") == 2.0
    assert units_per_token(8, 8, 256, "contiguous") == 1.0
    # k = 6 over 4 units of 16: starts at even ids; a run straddles when start mod 16 is 12 or 14,
    # 2 of the 8 even residues: 1 + 2/8
    assert units_per_token(6, 4, 64, "contiguous") == pytest.approx(1.25)


def test_random_experts_reach_n_times_one_minus_the_miss_chance_gpus():
    assert units_per_token(8, 8) == pytest.approx(8 * (1 - (7 / 8) ** 8))
    assert units_per_token(1, 8) == pytest.approx(1.0)
    assert units_per_token(8, 1) == 1.0
    # the remote domains are the distinct domains that are not the sender's own (m - 1)/m of them
    assert units_per_token(8, 4) * 3 / 4 == pytest.approx(remote_domains_per_token(8, 4))


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 16), units_exp=st.integers(0, 6), per=st.integers(1, 32),
       layout=st.sampled_from(["random", "contiguous"]))
def test_a_token_reaches_at_least_one_and_at_most_min_k_units(k, units_exp, per, layout):
    units = 2 ** units_exp
    experts = units * per
    if k > experts:
        return
    u = units_per_token(k, units, experts, layout)
    assert 1.0 - 1e-12 <= u <= min(k, units) + 1e-12


def test_deepep_inside_one_node_moves_one_copy_per_destination_gpu():
    """8 GPUs of one node: each way, the bytes are tokens x E[distinct GPUs] x 7/8 (the copies not
    landing on the sender) x hidden x 2, over the NVLink bandwidth, plus one latency."""
    cluster = cluster_for(H100, 8)
    group = Group.strided(8, 1, cluster)
    tokens, k, hidden = 16384, 8, 2048
    eff = H100.efficiency
    bw = H100.scale_up_bw_bytes_per_s(8) * eff.nvlink_busbw
    for layout, ranks in (("random", 8 * (1 - (7 / 8) ** 8)), ("contiguous", 1.0)):
        one = tokens * ranks * 7 / 8 * hidden * 2 / bw + eff.nvlink_latency_s
        got = a2a_time_s("deepep", tokens, k, hidden, 2.0, group, cluster, experts=128, layout=layout)
        assert got == pytest.approx(2 * one)
    # NCCL's all-to-all sends every token-expert pair: the layout does not change its bytes
    nccl = {lay: a2a_time_s("alltoall", tokens, k, hidden, 2.0, group, cluster, experts=128, layout=lay)
            for lay in ("random", "contiguous")}
    assert nccl["random"] == nccl["contiguous"] > a2a_time_s("deepep", tokens, k, hidden, 2.0, group, cluster)


def test_a_contiguous_gate_balances_exactly_and_random_routing_does_not():
    assert expert_load_factor(4096, 8, 128, 8, layout="contiguous") == 1.0
    assert expert_load_factor(4096, 8, 128, 8) > 1.0
    assert expert_load_factor(4096, 8, 128, 8, skew=3.0, layout="contiguous") > 1.0  # a stated skew still counts


def _automodel_qwen(**kw) -> TrainingPlan:
    """NeMo AutoModel's Qwen3-30B-A3B H100 benchmark (v0.2.0 configs): FSDP2 over 8, EP 8, MBS 4."""
    base = dict(tp=1, pp=1, dp=8, ep=8, micro_batch=4, global_batch=512, seq_len=4096, zero=3,
                recompute="full", param_state="bf16_params", moe_a2a="deepep", moe_routing="contiguous")
    return TrainingPlan(**{**base, **kw})


def test_the_automodel_qwen3_recipe_fits_in_80gb_as_it_ran_and_megatron_state_without_recompute_does_not():
    cluster = cluster_for(H100, 8)
    assert simulate(QWEN30, cluster, _automodel_qwen()).fits  # the published run ran on 80 GB H100s
    # the case file's old reading (no recompute, Megatron's 18 B/param) called it out of memory
    assert not simulate(QWEN30, cluster, _automodel_qwen(recompute="none", param_state="megatron")).fits


def test_contiguous_routing_makes_the_deepep_step_faster_and_nccl_no_slower():
    cluster = cluster_for(H100, 8)
    rand = simulate(QWEN30, cluster, _automodel_qwen(moe_routing="random")).step_time_s
    cont = simulate(QWEN30, cluster, _automodel_qwen()).step_time_s
    assert cont < rand
    nccl_r = simulate(QWEN30, cluster, _automodel_qwen(moe_a2a="alltoall", moe_routing="random")).step_time_s
    nccl_c = simulate(QWEN30, cluster, _automodel_qwen(moe_a2a="alltoall")).step_time_s
    assert nccl_c <= nccl_r  # only the sampling noise of the busiest rank goes


def test_moe_routing_is_refused_when_unknown_or_on_a_dense_model():
    with pytest.raises(InputError, match="moe-routing"):
        TrainingPlan(dp=8, global_batch=8, moe_routing="sorted").check(QWEN30)
    with pytest.raises(InputError, match="dense"):
        TrainingPlan(dp=8, global_batch=8, moe_routing="contiguous").check(LLAMA8)


def test_cli_moe_routing_bad_value_and_dense_model_exit_2_naming_the_option():
    bad = run_cli("train", "--model", "qwen3-30b-a3b", "--gpu", "h100-sxm", "--gpus", "8", "--ep", "8",
                  "--moe-routing", "sorted")
    assert bad.returncode == 2 and "moe-routing" in bad.stderr and "Traceback" not in bad.stderr
    dense = run_cli("train", "--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--moe-routing", "contiguous")
    assert dense.returncode == 2 and "moe-routing" in dense.stderr and "Traceback" not in dense.stderr


def test_cli_contiguous_routing_runs_and_reports_its_choice():
    out = run_cli("train", "--model", "qwen3-30b-a3b", "--gpu", "h100-sxm", "--gpus", "8", "--ep", "8",
                  "--zero", "3", "--recompute", "full", "--param-state", "bf16_params", "--moe-a2a", "deepep",
                  "--moe-routing", "contiguous", "--micro-batch", "4", "--global-batch", "64", "--seq-len", "4096",
                  "--json")
    assert out.returncode == 0, out.stderr
    assert '"moe_routing": "contiguous"' in out.stdout
