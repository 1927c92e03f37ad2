"""MoE training as Megatron-Core runs it (issue #20, item 5): parallel folding (EP x ETP over the
dense layers' TP x CP x DP), routing imbalance and token dropping, the dispatch/combine all-to-all
(NCCL or DeepEP) and its overlap, and the MoE recompute modules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli
from parasim.cost.comm import Group
from parasim.cost.memory import routed_expert_params_per_gpu, weight_params_per_gpu
from parasim.cost.moe_a2a import a2a_time_s, dispatch_bytes, remote_domains_per_token
from parasim.cost.routing import dropped_fraction
from parasim.errors import InputError
from parasim.search.prune import Pruned
from parasim.search.space import default_train_choices, enumerate_train
from parasim.search.train_batch import BatchTarget
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from parasim.training import TrainingPlan, simulate
from parasim.training.step import _costers

QWEN30 = get_model("qwen3-30b-a3b")  # 48 layers, 128 experts (top-8), expert FFN 768
QWEN235 = get_model("qwen3-235b-a22b")
DSV3 = get_model("deepseek-v3")
H100 = get_accelerator("h100-sxm")


def _plan(**kw) -> TrainingPlan:
    base = {"tp": 1, "pp": 1, "dp": 16, "ep": 8, "micro_batch": 1, "global_batch": 32, "seq_len": 4096}
    return TrainingPlan(**{**base, **kw})


# --- parallel folding -----------------------------------------------------------------------------
def test_a_folded_plan_ep32_over_dp16_is_accepted_and_splits_the_experts_ep_times_etp_ways():
    """EP = 32 with DP x CP = 16 (TP 2): Megatron-Core's folding. Each GPU holds the routed experts'
    total over ep*etp; the rest (attention over TP, router, norms) is as for a dense split."""
    cluster = cluster_for(H100, 32)
    for ep, etp in ((32, 1), (16, 2)):
        plan = _plan(tp=2, dp=16, ep=ep, etp=etp, sequence_parallel=True).check(QWEN30, 32)
        routed_total = QWEN30.moe_layers * QWEN30.experts * QWEN30.expert_params
        assert routed_expert_params_per_gpu(QWEN30, tp=2, pp=1, ep=ep, stage=0, etp=etp) == pytest.approx(
            routed_total / (ep * etp))
        res = simulate(QWEN30, cluster, plan)
        held = weight_params_per_gpu(QWEN30, tp=2, pp=1, ep=ep, stage=0, etp=etp)
        assert res.memory["weights_gib"] * 2**30 == pytest.approx(2.0 * held)  # bf16 weights
        assert res.step_time_s > 0


def test_the_expert_optimizer_state_is_sharded_over_the_expert_data_parallel_group():
    """Distributed optimizer: the experts' fp32 state (12 bytes/param) over tp*dp*cp / (ep*etp)."""
    cluster = cluster_for(H100, 64)
    plan = _plan(tp=2, dp=32, ep=16, etp=1, global_batch=64, sequence_parallel=True)
    res = simulate(QWEN30, cluster, plan)
    experts = routed_expert_params_per_gpu(QWEN30, tp=2, pp=1, ep=16, stage=0, etp=1)
    dense = weight_params_per_gpu(QWEN30, tp=2, pp=1, ep=16, stage=0, etp=1) - experts
    expected = 12.0 * (dense / 32 + experts / (2 * 32 // 16))
    assert res.memory["optimizer_gib"] * 2**30 == pytest.approx(expected)


@pytest.mark.parametrize(("kw", "field"), [
    ({"ep": 32}, "ep"),  # 32 does not divide tp*cp*dp = 16
    ({"ep": 8, "etp": 4}, "etp"),  # ep divides 16, ep*etp = 32 does not
    ({"ep": 8, "moe_a2a": "nccl"}, "moe-a2a"),
    ({"ep": 8, "recompute_modules": "moe_act"}, "recompute-modules"),  # needs recompute: selective
    ({"ep": 8, "recompute": "selective", "recompute_modules": "mla_up_proj"}, "recompute-modules"),  # no MLA
    ({"ep": 8, "recompute": "selective", "recompute_modules": "attn"}, "recompute-modules"),
])
def test_impossible_moe_layouts_name_the_field(kw, field):
    with pytest.raises(InputError) as e:
        _plan(dp=16, **kw).check(QWEN30, 16)
    assert e.value.field == field


def test_etp_on_a_dense_model_is_refused():
    with pytest.raises(InputError) as e:
        TrainingPlan(tp=2, dp=4, etp=2, global_batch=4).check(get_model("llama-3-8b"), 8)
    assert e.value.field == "etp"


# --- routing imbalance and dropping -----------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(st.floats(1.0, 6.0), st.floats(0.0, 4.0))
def test_routing_imbalance_never_speeds_a_step_up(skew, more):
    cluster = cluster_for(H100, 16)
    lo = simulate(QWEN30, cluster, _plan(moe_imbalance=skew)).step_time_s
    hi = simulate(QWEN30, cluster, _plan(moe_imbalance=skew + more)).step_time_s
    assert hi >= lo * (1 - 1e-12)


def test_a_skewed_router_slows_the_step_and_a_capacity_factor_caps_it():
    cluster = cluster_for(H100, 16)
    even = simulate(QWEN30, cluster, _plan(ep=16)).step_time_s
    # 8 experts per rank, the busiest at 4x the mean: that rank carries (4 + 7) / 8 of the mean load
    skewed = simulate(QWEN30, cluster, _plan(ep=16, moe_imbalance=4.0)).step_time_s
    capped = simulate(QWEN30, cluster, _plan(ep=16, moe_imbalance=4.0, moe_capacity_factor=1.25)).step_time_s
    assert skewed > even * 1.05
    assert capped < skewed


def test_dropped_fraction_by_hand():
    """Loads spread evenly on [2 - s, s] x mean; pairs above c x mean dropped."""
    assert dropped_fraction(1.5, None) == 0.0
    assert dropped_fraction(1.5, 1.5) == 0.0
    assert dropped_fraction(1.5, 1.25) == pytest.approx(0.25**2 / (2 * 1.0))  # (s-c)^2 / (2 (s - lo))
    assert dropped_fraction(1.5, 0.25) == pytest.approx(0.75)  # c below every load: 1 - c
    assert dropped_fraction(1.0, 0.8) == pytest.approx(0.2)


# --- dispatch and combine ----------------------------------------------------------------------------
def test_all_to_all_bytes_and_time_by_hand_inside_one_node():
    """ep = 8 GPUs of one NVLink node, tp = 1: each GPU sends its t tokens x k experts x hidden x
    2 bytes (x the busiest rank's load) in the dispatch and again in the combine; a ring
    all-to-all of S bytes over n ranks takes (n-1)/n S / bw + (n-1) alpha."""
    cluster = cluster_for(H100, 16)
    plan = _plan()
    layer, _ = _costers(QWEN30, cluster, plan)
    t = 4096.0
    load = layer.expert_load(t)
    size = t * QWEN30.experts_per_token * QWEN30.hidden * 2 * load
    assert dispatch_bytes(t, QWEN30.experts_per_token, QWEN30.hidden, 2.0, load) == size
    eff = H100.efficiency
    bw = H100.link_bw_bytes_per_s * eff.nvlink_busbw
    one = 7 / 8 * size / bw + 7 * eff.nvlink_latency_s
    assert layer.ep_comm_s(t) == pytest.approx(2 * one)


def test_deepep_sends_each_token_once_per_remote_node():
    assert remote_domains_per_token(8, 1) == 0.0
    assert remote_domains_per_token(8, 4) == pytest.approx(3 * (1 - 0.75**8))
    assert remote_domains_per_token(1, 4) == pytest.approx(0.75)  # one expert: remote with p = 3/4
    cluster = cluster_for(H100, 64)
    group = Group.strided(32, 1, cluster)  # four 8-GPU nodes
    nccl = a2a_time_s("alltoall", 4096, 8, 7168, 2.0, group, cluster)
    deepep = a2a_time_s("deepep", 4096, 8, 7168, 2.0, group, cluster)
    assert 0 < deepep < nccl


def test_overlapping_the_expert_all_to_all_never_slows_the_step():
    cluster = cluster_for(H100, 64)
    plan = _plan(tp=1, dp=64, ep=32, global_batch=128)
    plain = simulate(QWEN30, cluster, plan).step_time_s
    hidden = simulate(QWEN30, cluster, plan.with_(moe_a2a_overlap=True)).step_time_s
    assert hidden < plain


# --- recompute modules and MoE memory ------------------------------------------------------------------
def test_moe_recompute_modules_trade_memory_for_time():
    cluster = cluster_for(H100, 16)
    base = simulate(QWEN30, cluster, _plan(recompute="selective"))
    for mods in ("moe_act", "layernorm", "moe_act,layernorm"):
        res = simulate(QWEN30, cluster, _plan(recompute="selective", recompute_modules=f"core_attn,{mods}"))
        assert res.memory["activations_gib"] < base.memory["activations_gib"]
        assert res.step_time_s > base.step_time_s


def test_mla_up_projection_recompute_frees_memory_on_an_mla_model():
    cluster = cluster_for(H100, 256)
    plan = TrainingPlan(tp=1, pp=16, dp=16, ep=16, micro_batch=1, global_batch=256, seq_len=4096,
                        recompute="selective")
    base = simulate(DSV3, cluster, plan)
    up = simulate(DSV3, cluster, plan.with_(recompute_modules="core_attn,mla_up_proj"))
    assert up.memory["activations_gib"] < base.memory["activations_gib"]
    assert up.step_time_s > base.step_time_s


def test_the_moe_layer_keeps_its_permuted_tokens():
    """Activations of an MoE plan exceed what the dense-style terms alone give: the permuted
    tokens (k copies of hidden per token) and router probabilities are held too."""
    from parasim.cost.memory import activation_bytes_per_layer

    plan = _plan()
    res = simulate(QWEN30, cluster_for(H100, 16), plan)
    dense_terms = activation_bytes_per_layer(QWEN30, seq=4096, micro_batch=1)
    extra = 4096 * (QWEN30.experts_per_token * QWEN30.hidden * 2 + QWEN30.experts * 4)
    # 1F1B with pp = 1 holds one micro-batch of every layer at the peak
    assert res.memory["activations_gib"] * 2**30 >= QWEN30.layers * (dense_terms + extra) * (1 - 1e-9)


# --- the planner ------------------------------------------------------------------------------------
def test_plan_train_space_folds_experts_and_counts_every_dropped_layout():
    cluster = cluster_for(H100, 32)
    choices = default_train_choices(QWEN30, cluster, 4096, tp=(1, 2), pp=(1,), cp=(1,), micro_batch=(1,),
                                    zero=(1,), recompute=("full",), schedules=("1f1b",))
    pruned = Pruned()
    plans = list(enumerate_train(QWEN30, cluster, batch=BatchTarget(seq_len=4096, sequences=64),
                                 seq_len=4096, choices=choices, pruned=pruned))
    assert len(plans) + sum(pruned.values()) == choices.size
    folded = [p for p in plans if p["ep"] > p["dp"] * p["cp"]]
    assert folded and {p["etp"] for p in plans} == {1, 2}
    for p in folded:
        TrainingPlan.from_mapping(p, gpus=32).check(QWEN30, 32)


# --- the CLI ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "field"), [
    (["--ep", "32"], "ep"),
    (["--ep", "8", "--etp", "4"], "etp"),
    (["--ep", "8", "--moe-imbalance", "0.5"], "moe-imbalance"),
    (["--ep", "8", "--moe-capacity-factor", "-1"], "moe-capacity-factor"),
    (["--ep", "8", "--moe-a2a", "mpi"], "moe-a2a"),
    (["--ep", "8", "--recompute-modules", "mla_up_proj"], "recompute-modules"),
])
def test_hostile_moe_options_exit_2_naming_the_field(args, field):
    r = run_cli("train", "--model", "qwen3-30b-a3b", "--gpu", "h100-sxm", "--gpus", "16", "--global-batch", "32",
                "--seq-len", "4096", *args)
    assert r.returncode == 2, r.stderr
    assert field in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_folded_layout_runs_from_the_command_line_and_a_config_file(tmp_path):
    args = ["--model", "qwen3-30b-a3b", "--gpu", "h100-sxm", "--gpus", "32", "--tp", "2", "--ep", "32", "--etp", "1",
            "--global-batch", "64", "--seq-len", "4096", "--moe-a2a", "deepep", "--moe-a2a-overlap", "--json"]
    r = run_cli("train", *args)
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout)
    assert out["ep"] == 32 and out["etp"] == 1 and out["dp"] == 16 and out["moe_a2a"] == "deepep"
    # the same options as config keys (flag names with underscores) give the same step
    pairs = args[:-2]  # every option with a value; the last two are the switches
    keys = {k[2:].replace("-", "_"): (int(v) if v.isdigit() else v) for k, v in zip(pairs[::2], pairs[1::2])}
    (tmp_path / "moe.yaml").write_text(json.dumps({**keys, "moe_a2a_overlap": True}))
    from_file = json.loads(run_cli("train", "-c", str(tmp_path / "moe.yaml"), "--json").stdout)
    assert from_file["step_time_s"] == out["step_time_s"] and from_file["plan"] == out["plan"]
