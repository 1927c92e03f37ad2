"""TGI and LMDeploy cases: the engine defaults each release published, checked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from parasim.cost.memory import activation_workspace_bytes, kv_budget, weight_bytes_per_gpu
from parasim.validation.serving import _workload, case_plan, predict_case
from parasim.serving.itercost import IterationCost
from parasim.engines.lmdeploy import lmdeploy_setup
from parasim.engines.lookup import profile_for
from parasim.engines.tgi import tgi_launcher_flops, tgi_prefill_tokens, tgi_setup
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.specs.validation_case import parse_case
from tests.conftest import DOCUMENTED_RUNTIME_RESERVE_BYTES


@pytest.mark.parametrize("text, prof", [
    ("text-generation-inference 2.0.4", "tgi"), ("TGI 3.0.1", "tgi"), ("huggingface/text_generation_inference", "tgi"),
    ("lmdeploy 0.6.2", "lmdeploy"), ("LMDeploy TurboMind", "lmdeploy"), ("vllm 0.6.0", "vllm"),
    ("antigravity", "default"),
])
def test_software_names_pick_the_engine(text, prof):
    assert profile_for(text).name == prof


def test_tgi_launcher_flops_by_hand():
    """Llama-3.1-8B: per layer 2 x 128 x 4096 x (3 x 32 + 2 x 8) + 6 x 4096 x 14336 = 469,762,048;
    x 32 layers."""
    assert tgi_launcher_flops(get_model("llama-3.1-8b")) == 32 * 469_762_048


@pytest.mark.parametrize("software, model, gpu, gpus, expected", [
    ("tgi 1.4.5", "llama-3.1-8b", "h100-sxm", 1, 4096),                 # fixed
    ("tgi 2.0.4", "llama-3-8b", "a100-sxm-80gb", 1, 4096 - 1 + 50),     # min(8192, 4096) - 1 + 50
    ("tgi 2.3.0", "llama-2-7b", "h100-sxm", 1, 4096 - 1 + 50),
    ("tgi 3.0.1", "llama-3.1-8b", "h100-sxm", 1, 59870),                # 900e12 / 15,032,385,536
    ("tgi 3.0.1", "llama-3-8b", "h100-sxm", 1, 8192),                   # capped at max_position_embeddings
    ("tgi 3.0.1", "llama-3.1-8b", "a100-sxm-80gb", 1, 4096),            # "NVIDIA A100-SXM4-80GB" is not in its table
    ("tgi", "llama-3.1-70b", "h100-sxm", 8, 8 * 900_000_000_000_000 // tgi_launcher_flops(get_model("llama-3.1-70b"))),
])
def test_tgi_max_batch_prefill_tokens_by_release(software, model, gpu, gpus, expected):
    from parasim.engines.software import release

    got = tgi_prefill_tokens(release(software), get_model(model), get_accelerator(gpu), gpus=gpus)
    assert got == expected


@pytest.mark.parametrize("software, room, block, sched, graphs", [
    ("tgi 1.4.5", 1.0, 16, "vllm", 128), ("tgi 2.0.4", 0.95, 16, "vllm", 32), ("tgi 2.4.1", 0.95, 1, "vllm", 32),
    ("tgi 3.1.0", 0.95, 1, "sarathi", 32),
])
def test_tgi_kv_pool_is_the_free_memory_after_weights_and_warmup(software, room, block, sched, graphs):
    """KV = room x (HBM - weights - a warmup forward at the prefill budget - the CUDA context)."""
    m, acc = get_model("llama-3-8b"), get_accelerator("a100-sxm-80gb")
    s = tgi_setup(software, m, acc, tp=1, pp=1, weights="bf16", max_batch=None)
    act = activation_workspace_bytes(m, tp=1, tokens=s.prefill_tokens, logit_rows=1, act_bytes=2.0)
    w = weight_bytes_per_gpu(m, tp=1, pp=1, weights="bf16")
    assert s.kv_bytes == pytest.approx(room * (acc.device_memory_bytes - w - act - DOCUMENTED_RUNTIME_RESERVE_BYTES))
    assert (s.block_size, s.scheduler, s.cuda_graph_max_batch) == (block, sched, graphs)


def _case(software: str, source: str = "", gpu: str = "h100-sxm", model: str = "llama-3.1-8b", **plan):
    raw = {"id": "x", "source": source, "kind": "serving", "software": software, "model": {"catalog": model},
           "hardware": {"accelerator": gpu, "gpus": 1, "gpus_per_node": 8},
           "plan": {"tp": 1, "pp": 1, "replicas": 1, "weights": "bf16", "scheduler": "continuous", **plan},
           "workload": {"requests": 64, "prompt_tokens": 512, "output_tokens": 64, "arrival": "burst"},
           "measured": {"output_tokens_per_s": 1000.0}}
    return parse_case(raw, index=0, base_dir=Path("."))


@pytest.mark.parametrize("software, source", [("tgi 2.2.0", ""), ("lmdeploy 0.6.2", ""),
                                              ("lmdeploy 0.4.2", "--backend pytorch")])
def test_engine_kv_pool_reaches_the_simulator_unchanged(software, source):
    """The engine sizes its KV pool its own way; the plan's gpu_memory_utilization hands the
    simulator exactly that pool, and the case predicts."""
    case = _case(software, source)
    plan, choices, prof = case_plan(case)
    acc = case.cluster.accelerator
    setup = (tgi_setup(software, case.model, acc, tp=1, pp=1, weights="bf16", max_batch=None) if prof == "tgi" else
             lmdeploy_setup(software, source, case.model, acc, tp=1, pp=1, weights="bf16"))
    b = kv_budget(case.model, acc, tp=1, pp=1, weights="bf16", kv_dtype=plan.kv, block_size=plan.block_size,
                  gpu_memory_utilization=plan.gpu_memory_utilization, max_tokens=plan.token_budget,
                  max_batch=plan.max_batch)
    assert b.kv == pytest.approx(setup.kv_bytes, rel=1e-9)
    assert plan.kv_reservation == ("full" if prof == "tgi" else "incremental")
    res = predict_case(case)
    assert res.status == "ok" and res.predicted["output_tokens_per_s"] > 0


@pytest.mark.parametrize("software, gpu, batch, block, sched, budget, total_share", [
    ("lmdeploy 0.2.1", "a100-sxm-80gb", 128, 128, "continuous", None, True),
    ("lmdeploy 0.2.6", "a100-sxm-80gb", 128, 128, "sarathi", 8192 + 128, False),
    ("lmdeploy 0.4.2", "h100-sxm", 128, 64, "sarathi", 8192 + 128, False),
    ("lmdeploy 0.6.0", "a100-sxm-80gb", 256, 64, "sarathi", 8192 + 256, False),
    ("lmdeploy 0.7.0", "h100-sxm", 512, 64, "sarathi", 8192 + 512, False),
    ("lmdeploy 0.7.0", "h200-sxm", 128, 64, "sarathi", 8192 + 128, False),  # not in get_max_batch_size's names
])
def test_lmdeploy_turbomind_defaults_by_release(software, gpu, batch, block, sched, budget, total_share):
    m, acc = get_model("llama-3.1-8b"), get_accelerator(gpu)
    s = lmdeploy_setup(software, "", m, acc, tp=1, pp=1, weights="bf16")
    assert (s.engine, s.max_batch, s.block_size, s.scheduler) == ("turbomind", batch, block, sched)
    if budget is not None:
        assert s.token_budget == budget
    w = weight_bytes_per_gpu(m, tp=1, pp=1, weights="bf16")
    expected = 0.5 * acc.device_memory_bytes if total_share else 0.8 * (acc.device_memory_bytes - DOCUMENTED_RUNTIME_RESERVE_BYTES - w)
    assert s.kv_bytes == pytest.approx(expected)


def test_lmdeploy_source_flags_win():
    m, acc = get_model("llama-3.1-8b"), get_accelerator("h100-sxm")
    s = lmdeploy_setup("lmdeploy 0.6.2", "lmdeploy serve api_server --backend pytorch --quant-policy 8 "
                       "--cache-max-entry-count 0.5 --max-batch-size 64", m, acc, tp=1, pp=1, weights="bf16")
    assert (s.engine, s.scheduler, s.token_budget, s.max_batch, s.kv_dtype) == ("pytorch", "vllm", 4096, 64, "int8")
    w = weight_bytes_per_gpu(m, tp=1, pp=1, weights="bf16")
    assert s.kv_bytes == pytest.approx(0.5 * (acc.device_memory_bytes - DOCUMENTED_RUNTIME_RESERVE_BYTES - w))
    plan, _, _ = case_plan(_case("lmdeploy 0.6.2", "--quant-policy 8"))
    assert plan.kv == "int8"


def test_decode_batches_above_the_largest_cuda_graph_pay_the_eager_floor():
    """TGI captures decode graphs up to 32 sequences: a 33-sequence decode step of a small model
    cannot finish before the host has issued every layer's kernels; a 32-sequence one can."""
    m = get_model("llama-3.1-8b")
    cl = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=1, gpus_per_node=8)
    kw = dict(tp=1, pp=1, weights="bf16", kv_dtype="bf16", act_dtype="bf16", overhead_s=0.0,
              eager_prefill_layer_s=1e-3)
    ic = IterationCost(m, cl, cuda_graph_max_batch=32, **kw)
    floor = m.layers * 1e-3
    assert ic.time_s(32, 0.0, 0.0, 32, 32 * 100.0, 32) < floor
    assert ic.time_s(33, 0.0, 0.0, 33, 33 * 100.0, 33) == pytest.approx(floor)
    never = IterationCost(m, cl, **kw)  # no limit: graphs cover every decode batch
    assert never.time_s(33, 0.0, 0.0, 33, 33 * 100.0, 33) < floor



@pytest.mark.parametrize("software, whole_step", [
    ("lmdeploy 0.1.0a1 (TurboMind)", True), ("lmdeploy 0.1.0a0", True), ("lmdeploy 0.0.14", True),
    ("lmdeploy 0.1.0a2", False), ("lmdeploy 0.1.0", False), ("lmdeploy 0.2.5", False),
])
def test_lmdeploy_turbomind_before_pr775_prefills_every_admitted_prompt_in_one_step(software, whole_step):
    """Up to v0.1.0a1 TurboMind prefilled every newly admitted prompt in the loop pass (ContextDecode);
    PR #775 (first in v0.1.0a2) capped a step at max_context_token_num (default session_len) tokens.
    Llama-2-7B (4,096-token context), max_batch_size 128: 128 x 4,096 against 4,096."""
    m, acc = get_model("llama-2-7b"), get_accelerator("a100-sxm-80gb")
    s = lmdeploy_setup(software, "", m, acc, tp=1, pp=1, weights="fp16")
    assert (s.scheduler, s.token_budget) == ("continuous", 128 * 4096 if whole_step else 4096)
    assert ("ContextDecode" in s.why) == whole_step


def _burst_ttfts(software: str, prompts: int, prompt_tokens: int):
    import numpy as np

    from parasim.serving.simulate import simulate

    raw = {"id": "x", "source": "", "kind": "serving", "software": software, "model": {"catalog": "llama-2-7b"},
           "hardware": {"accelerator": "a100-sxm-80gb", "gpus": 1, "gpus_per_node": 8},
           "plan": {"tp": 1, "pp": 1, "replicas": 1, "weights": "fp16", "scheduler": None, "max_batch": None},
           "workload": {"requests": prompts, "prompt_tokens": prompt_tokens, "output_tokens": 4, "arrival": "burst"},
           "measured": {"output_tokens_per_s": 1.0}}
    case = parse_case(raw, index=0, base_dir=Path("."))
    plan, _, _ = case_plan(case)
    res = simulate(case.model, case.cluster, plan, _workload(case), seed=0)
    return np.sort(res.requests["ttft_s"])


def test_lmdeploy_pre_pr775_burst_gets_its_first_tokens_together():
    """A burst of 8 x 2,048-token prompts: before v0.1.0a2 all eight are prefilled in the first step, so
    all eight first tokens come out at the same instant. From v0.1.0a2 a step holds 4,096 tokens: the
    first step two prompts, every later one the running decodes plus one prompt (4,096 - decodes <
    2 x 2,048), so seven distinct first-token times, the first earlier than the whole-burst step and
    the last later (each later prompt also waits for the decode rows of the earlier)."""
    early = _burst_ttfts("lmdeploy 0.1.0a1", 8, 2048)
    late = _burst_ttfts("lmdeploy 0.2.0", 8, 2048)
    assert len(set(early.round(12))) == 1
    assert len(set(late.round(12))) == 7
    assert late[0] < early[0] < late[-1]


@pytest.mark.parametrize("software, source, custom", [
    ("lmdeploy 0.1.0a1 (TurboMind)", "", False),  # ftNcclAllReduceSum in the attention and FFN layers
    ("lmdeploy 0.4.2", "", False),
    ("lmdeploy 0.7.1", "", False),
    ("lmdeploy 0.7.2", "", True),                  # src/turbomind/comm: its own (native) all-reduce
    ("lmdeploy 0.8.0", "", True),
    ("lmdeploy", "", True),                        # unnamed: the current release
    ("lmdeploy 0.4.2", "--backend pytorch", True),  # the PyTorch engine keeps parasim's default
])
def test_turbomind_all_reduces_through_nccl_before_0_7_2(software, source, custom):
    m, acc = get_model("llama-3.1-70b"), get_accelerator("a100-sxm-80gb")
    s = lmdeploy_setup(software, source, m, acc, tp=4, pp=1, weights="bf16")
    assert s.custom_allreduce is custom
    assert ("through NCCL" in s.why) is not custom
    raw = _case(software, source, gpu="a100-sxm-80gb", model="llama-3.1-70b")
    plan, _, _ = case_plan(raw)
    assert plan.custom_allreduce is custom
