"""Published effects, reproduced in direction and rough size (small workloads, seconds each)."""

from __future__ import annotations

import numpy as np

from parasim.search.capacity import bisect_rate, slo_meets
from parasim.serving import SLO, ServingPlan, Workload, simulate
from parasim.specs.catalog import get_accelerator, get_model, model_from_mapping
from parasim.specs.cluster import ClusterSpec


def _poisson_unit(n: int, seed: int) -> np.ndarray:
    gaps = np.random.default_rng(seed).exponential(1.0, n)
    return np.cumsum(gaps) - gaps[0]


def test_sarathi_chunked_prefill_raises_capacity_under_p99_tbt_slo():
    """Sarathi-Serve (Agrawal et al., OSDI'24): Mistral-7B on one A100, strict P99 TBT SLO and a
    median scheduling delay under 2 s: stall-free chunked prefill serves ~2.6x vLLM's capacity."""
    model = get_model("mistral-7b")
    cluster = ClusterSpec(accelerator=get_accelerator("a100-sxm-80gb"), gpus=1)
    rng = np.random.default_rng(0)
    n = 300
    prompt = np.clip(rng.lognormal(np.log(1500), 0.7, n), 64, 7000).astype(int)
    output = np.clip(rng.lognormal(np.log(150), 0.7, n), 8, 1000).astype(int)
    unit = _poisson_unit(n, 1)

    def meets(res) -> bool:
        s = res.summary
        return s["itl_p99_s"] <= 0.2 and s["queueing_p50_s"] <= 2.0

    def capacity(scheduler: str) -> float:
        plan = ServingPlan(scheduler=scheduler)
        return bisect_rate(lambda r: simulate(model, cluster, plan, Workload.from_columns(unit / r, prompt, output)),
                           meets, upper=8.0).requests_per_s

    sarathi, vllm = capacity("sarathi"), capacity("vllm")
    assert vllm > 0
    assert 1.8 <= sarathi / vllm <= 6.0, (sarathi, vllm)


def test_disaggregation_beats_colocation_on_goodput_for_prefill_heavy_tight_slo():
    """DistServe (Zhong et al., OSDI'24): with long prompts, short outputs and a tight TPOT SLO,
    separate prefill and decode GPUs (here 2 prefill + 1 decode) serve more SLO-meeting requests
    per second than the same 3 GPUs running colocated vLLM replicas."""
    model = get_model("llama-2-13b")
    cluster = ClusterSpec(accelerator=get_accelerator("a100-sxm-80gb"), gpus=3)
    rng = np.random.default_rng(0)
    n = 300
    prompt = np.clip(rng.lognormal(np.log(1500), 0.4, n), 256, 4000).astype(int)
    output = np.clip(rng.lognormal(np.log(64), 0.4, n), 8, 256).astype(int)
    unit = _poisson_unit(n, 2)
    slo = SLO(ttft_s=1.0, tpot_s=0.025)

    def goodput(plan: ServingPlan) -> float:
        run = lambda r: simulate(model, cluster, plan, Workload.from_columns(unit / r, prompt, output), slo=slo)  # noqa: E731
        return bisect_rate(run, slo_meets(0.9), upper=20.0).requests_per_s

    disagg = goodput(ServingPlan(scheduler="disagg", prefill_gpus=2, decode_gpus=1))
    colocated = goodput(ServingPlan(scheduler="vllm", replicas=3))
    assert disagg > 1.2 * colocated, (disagg, colocated)


def test_batchllm_prefix_grouping_beats_fcfs_lru_on_shared_prefix_batch():
    """BatchLLM (Zheng et al. 2024): an offline batch whose requests share long prefixes, in random
    order: grouping them globally computes each prefix once; FCFS with an LRU prefix cache evicts
    prefixes before their next use. Reported gain 1.1-2x."""
    model = get_model("llama-2-7b")
    cluster = ClusterSpec(accelerator=get_accelerator("a100-sxm-40gb"), gpus=1)
    rng = np.random.default_rng(0)
    groups, per = 30, 8
    pid = np.repeat(np.arange(groups), per)
    rng.shuffle(pid)
    n = groups * per
    plen = np.full(n, 3000)
    wl = Workload.from_columns(np.zeros(n), plen + rng.integers(100, 300, n), rng.integers(50, 150, n), pid, plen)
    lru = simulate(model, cluster, ServingPlan(scheduler="vllm", prefix_cache=True), wl).summary
    grouped = simulate(model, cluster, ServingPlan(scheduler="batchllm", prefix_cache=True), wl).summary
    assert grouped["completed"] == lru["completed"] == n
    assert grouped["prefix_cache_hits"] == n - groups  # every prefix computed exactly once
    ratio = grouped["total_tokens_per_s"] / lru["total_tokens_per_s"]
    assert 1.1 <= ratio <= 2.5, ratio


def test_kv_capacity_limits_concurrency_of_34b_at_50k_context_on_a100():
    """Fu 2024, "Challenges in deploying long-context transformers": a 34B GQA model at 50K tokens
    of context needs ~12 GB of KV cache per request, so one 80 GB A100 holding the weights serves
    only a couple of such requests at once, however many are waiting."""
    yi34 = model_from_mapping({"name": "yi-34b-like", "family": "llama", "layers": 60, "hidden": 7168, "heads": 56,
                               "kv_heads": 8, "head_dim": 128, "ffn_hidden": 20480, "vocab": 64000,
                               "max_seq_len": 200000})
    cluster = ClusterSpec(accelerator=get_accelerator("a100-sxm-80gb"), gpus=1)
    plan = ServingPlan(scheduler="sarathi", weights="int8", kv_dtype="bf16", token_budget=2048)
    n = 6
    long = simulate(yi34, cluster, plan, Workload.from_columns(np.zeros(n), [50_000] * n, [64] * n))
    kv_per_request = 60 * 2 * 8 * 128 * 2 * 50_000
    assert 11e9 < kv_per_request < 13e9
    fit = long.kv["kv_tokens"] // 50_064
    assert 1 <= fit <= 3
    assert long.summary["peak_running"] <= fit + 1  # + one prompt chunking in behind the decoders
    assert long.summary["completed"] == n
    short = simulate(yi34, cluster, plan, Workload.from_columns(np.zeros(64), [4_000] * 64, [64] * 64))
    assert short.summary["peak_running"] >= 8 * fit
