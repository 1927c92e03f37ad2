"""Data-parallel attention with the routed experts spread over the ranks (ServingPlan.ep)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.cost.memory import weight_bytes_per_gpu, weight_params_per_gpu
from parasim.errors import InputError
from parasim.serving import ServingPlan, Workload, simulate
from parasim.validation.serving import case_plan, predict_case
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.specs.validation_case import load_cases, parse_case

DSV3 = get_model("deepseek-v3")


def _cluster(gpus: int = 8) -> ClusterSpec:
    return ClusterSpec(accelerator=get_accelerator("h200-sxm"), gpus=gpus, gpus_per_node=8)


def test_expert_parallel_weights_by_hand():
    """One GPU of an ep=8 group holds everything but the routed experts, and 1/8 of those:
    the routed experts are moe_layers x experts x 3 matrices x hidden x moe_ffn_hidden."""
    m = DSV3
    routed = m.moe_layers * m.experts * m.mlp_matrices * m.hidden * m.moe_ffn_hidden
    full = weight_params_per_gpu(m, tp=1, ep=1)
    assert weight_params_per_gpu(m, tp=1, ep=8) == pytest.approx(full - routed * 7 / 8)
    assert weight_bytes_per_gpu(m, tp=1, weights="bf16", ep=8) == pytest.approx(2 * (full - routed * 7 / 8))


def test_deepseek_fits_eight_h200s_only_with_experts_spread():
    """671B FP8 weights do not fit one 141 GB GPU; spread over 8 ranks they do, and every
    request completes."""
    wl = Workload.from_columns([0.0] * 32, [500] * 32, [20] * 32)
    alone = simulate(DSV3, _cluster(), ServingPlan(tp=1, replicas=8, weights="fp8"), wl)
    spread = simulate(DSV3, _cluster(), ServingPlan(tp=1, replicas=8, ep=8, weights="fp8"), wl)
    assert not alone.feasible
    assert spread.feasible and spread.summary["completed"] == 32


def test_expert_parallel_step_pays_the_all_to_all_and_sees_every_rank_tokens():
    cl = _cluster()
    kw = dict(tp=1, pp=1, weights="fp8", kv_dtype="bf16", act_dtype="bf16", overhead_s=0.0)
    ep8 = IterationCost(DSV3, cl, ep=8, **kw)
    b = ep8.breakdown(64, decode_seqs=64, decode_ctx=64 * 1000.0, logits=64)
    assert b["ep_comm"] > 0
    assert ep8.layer.s.moe_token_sets == 8 and ep8.layer.local_experts == DSV3.experts // 8


@pytest.mark.parametrize("kw, field", [(dict(tp=2, replicas=8, ep=8), "ep"), (dict(tp=1, replicas=6, ep=4), "ep"),
                                      (dict(tp=1, replicas=8, ep=0), "ep")])
def test_bad_expert_parallel_layouts_name_the_field(kw, field):
    with pytest.raises(InputError) as e:
        ServingPlan(**kw)
    assert e.value.field == field


def _sglang_case(source: str, model: str = "deepseek-v3", software: str = "sglang 0.4.3"):
    raw = {"id": "dp", "source": source, "kind": "serving", "software": software, "model": {"catalog": model},
           "hardware": {"accelerator": "h200-sxm", "gpus": 8, "gpus_per_node": 8},
           "plan": {"tp": 8, "pp": 1, "replicas": 1, "weights": "fp8", "scheduler": "continuous"},
           "workload": {"requests": 64, "prompt_tokens": 500, "output_tokens": 50, "arrival": "burst"},
           "measured": {"output_tokens_per_s": 1000.0}}
    return parse_case(raw, index=0, base_dir=Path("."))


def test_sglang_dp_attention_source_runs_eight_one_gpu_ranks():
    case = _sglang_case("sglang.launch_server --tp 8 --dp 8 --enable-dp-attention; bench_serving")
    plan, choices, _ = case_plan(case)
    assert (plan.tp, plan.replicas, plan.ep) == (1, 8, 8)
    assert any("data-parallel attention over 8 ranks" in c for c in choices)
    res = predict_case(case)
    assert res.status == "ok" and not any("not modelled: data-parallel" in c for c in res.choices)
    # without --dp: 0.4.0 - 0.4.4 take dp_size = tp_size from the flag alone (released wheels' server_args.py);
    # later releases need --dp (PR #4390), so there the source stays TP 8 and says DP attention is not modelled
    auto = _sglang_case("sglang.launch_server --tp 8 --enable-dp-attention")
    plan, _, _ = case_plan(auto)
    assert (plan.tp, plan.replicas, plan.ep) == (1, 8, 8)
    plain = _sglang_case("sglang.launch_server --tp 8 --enable-dp-attention", software="sglang 0.5.3")
    plan, _, _ = case_plan(plain)
    assert (plan.tp, plan.replicas, plan.ep) == (8, 1, 1)
    assert any("not modelled: data-parallel" in c for c in predict_case(plain).choices)


def test_dp_attention_flags_leave_a_dense_model_alone():
    case = _sglang_case("--tp 8 --dp 8 --enable-dp-attention", model="llama-3.1-70b")
    plan, _, _ = case_plan(case)
    assert (plan.tp, plan.replicas, plan.ep) == (8, 1, 1)


def test_mla_kv_pool_grows_with_dp_attention():
    """MLA keeps one latent per token on every TP rank, so TP 8 holds the same tokens per GPU as
    one GPU would; eight DP ranks hold eight pools of their own, more tokens in all."""
    tp8, _, _ = case_plan(_sglang_case("--tp 8"))
    dp8, _, _ = case_plan(_sglang_case("--tp 8 --dp 8 --enable-dp-attention"))
    from parasim.serving.simulate import kv_fit

    wl = Workload.from_columns([0.0], [100], [10])
    t8 = kv_fit(DSV3, _cluster(), tp8, wl).pools[0]
    d8 = kv_fit(DSV3, _cluster(), dp8, wl).pools[0]
    assert d8.blocks * d8.replicas > t8.blocks * t8.replicas


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hst.lists(hst.tuples(hst.floats(0, 5), hst.integers(1, 3000), hst.integers(1, 300)), min_size=1, max_size=40),
       hst.sampled_from(["sarathi", "vllm", "sglang"]))
def test_expert_parallel_runs_conserve_tokens(reqs, sched):
    """Every request completes with all its output tokens, and KV use stays within capacity."""
    arr, p, o = zip(*reqs)
    wl = Workload.from_columns(sorted(arr), list(p), list(o))
    res = simulate(DSV3, _cluster(), ServingPlan(tp=1, replicas=8, ep=8, weights="fp8", scheduler=sched), wl)
    s = res.summary
    assert s["completed"] == len(reqs) and s["output_tokens"] == sum(o)
    assert s["output_tokens_emitted"] >= sum(o) and s["kv_utilization_peak"] <= 1.0


def _trtllm_case(source: str, model: str = "deepseek-r1"):
    raw = {"id": "t", "source": source, "kind": "serving", "software": "tensorrt-llm (pytorch backend)",
           "model": {"catalog": model}, "hardware": {"accelerator": "h200-sxm", "gpus": 8, "gpus_per_node": 8},
           "plan": {"tp": 8, "pp": 1, "replicas": 1, "weights": "fp8", "scheduler": "continuous"},
           "workload": {"requests": 64, "prompt_tokens": 512, "output_tokens": 32, "arrival": "burst"},
           "measured": {"output_tokens_per_s": 1000.0}}
    return parse_case(raw, index=0, base_dir=Path("."))


def test_trtllm_attention_dp_and_stated_bench_flags():
    """`enable_attention_dp: true` under --tp 8: eight one-GPU ranks; trtllm-bench's
    --max_batch_size (per rank), --max_num_tokens and --kv_cache_free_gpu_mem_fraction stated in
    the source replace the sizing rule's values."""
    case = _trtllm_case("extra-llm-api-config.yml: enable_attention_dp: true; trtllm-bench throughput --tp 8 --ep 8 "
                        "--max_batch_size 128 --max_num_tokens 1151 --kv_cache_free_gpu_mem_fraction 0.8")
    plan, choices, _ = case_plan(case)
    assert (plan.tp, plan.replicas, plan.ep, plan.max_batch, plan.token_budget) == (1, 8, 8, 128, 1151)
    assert any("replace these: max_batch_size 128, max_num_tokens 1151, kv_cache_free_gpu_mem_fraction 0.8" in c
               for c in choices)
    off, _, _ = case_plan(_trtllm_case("enable_attention_dp: false; --tp 8"))
    assert (off.tp, off.replicas, off.ep) == (8, 1, 1)


def test_shipped_deepseek_attention_dp_file():
    cases = {c.id: c for c in load_cases(Path(__file__).resolve().parents[1] / "validation" / "trtllm-deepseek-r1-adp.yaml")}
    assert len(cases) == 3
    plan, _, _ = case_plan(cases["trtllm-dsr1-h200-fp8-adp8-max-throughput"])
    assert (plan.replicas, plan.ep, plan.max_batch, plan.token_budget, plan.kv) == (8, 8, 128, 1151, "bf16")
    res = predict_case(cases["trtllm-dsr1-h200-fp8-adp8-max-throughput"])
    assert res.status == "ok" and any("at most 1024 requests out" in c for c in res.choices)
