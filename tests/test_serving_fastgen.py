"""DeepSpeed-FastGen against the vLLM release it was compared with (the FastGen blog, November 2023:
Llama-2-70B, 4 x A100-80GB, TP 4, prompts ~N(2600, 30 %), outputs ~N(60, 30 %), 512 requests from
1-32 closed-loop clients; effective throughput = requests/s meeting the prompt SLA |prompt| / 512 s
and a 4 tokens/s generation rate).

Bounds come from the physics modelled, not from the blog's figures: both engines run the same
GEMMs per token, so neither can be much faster in raw throughput; what Dynamic SplitFuse changes
is how long a generating request waits behind a prompt."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from parasim.engines.apply import engine_defaults
from parasim.engines.fastgen import MII_MAX_RAGGED_BATCH_SIZE, mii_block_size
from parasim.engines.host import RAY_CONTROL_S_PER_TOKEN
from parasim.engines.lookup import engine_software, profile_for
from parasim.serving import ServingPlan, generate, simulate
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

MODEL, GPU, TP = get_model("llama-2-70b"), get_accelerator("a100-sxm-80gb"), 4
CLUSTER = ClusterSpec(accelerator=GPU, gpus=TP)
PROMPT_MEAN, OUTPUT_MEAN, VAR = 2600, 60, 0.3  # the blog's Figure 4 workload
SLA_PROMPT_TOKENS_PER_S, SLA_GEN_TOKENS_PER_S, EMA_SPAN = 512, 4, 16  # the benchmark's SLA (DeepSpeedExamples)
FASTGEN, VLLM = "deepspeed-mii==0.1.0", "vllm==0.2.1"


def _normal_file(path, mean: float, rel_sd: float, hi: int) -> str:
    """The benchmark client's lengths: a normal of sd = rel_sd x mean, clipped to [1, hi]."""
    sd = rel_sd * mean
    path.write_text("".join(f"{x},{math.exp(-0.5 * ((x - mean) / sd) ** 2):.10f}\n"
                            for x in range(1, hi + 1) if abs(x - mean) <= 5 * sd))
    return str(path)


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    d = tmp_path_factory.mktemp("fastgen")
    return generate(requests=512, burst=True, seed=0,
                    prompt_dist=_normal_file(d / "p.txt", PROMPT_MEAN, VAR, 4000),  # the client's max_prompt_length
                    output_dist=_normal_file(d / "o.txt", OUTPUT_MEAN, VAR, 4 * OUTPUT_MEAN))


def _plan(engine: str, workload) -> ServingPlan:
    _, fields, _ = engine_defaults(engine, MODEL, GPU, {"tp": TP}, workload)
    return ServingPlan(tp=TP, **fields)


def _run(engine: str, workload, clients: int, record: bool = False):
    return simulate(MODEL, CLUSTER, _plan(engine, workload), workload, max_concurrency=clients, record=record)


def _token_times(res) -> list[np.ndarray]:
    """Each request's token times, rebuilt from the iteration record of the one engine: its first
    token, then one at the end of every iteration that stepped the decoders, up to its finish
    (checked: as many as it generated)."""
    inst = res.recording.instances[0]
    ends = np.sort(inst.ends["t_s"][inst.starts["decode_requests"] > 0])
    r, out = res.requests, []
    for first, fin, n in zip(r["first_token_s"], r["finish_s"], r["output_tokens"]):
        times = np.concatenate([[first], ends[np.searchsorted(ends, first, "right"):np.searchsorted(ends, fin, "right")]])
        assert len(times) == n
        out.append(times)
    return out


def _ema_below(gaps: np.ndarray, limit_s: float, span: int = EMA_SPAN) -> bool:
    """The benchmark's generation SLA: the exponential moving average of the inter-token gaps
    (pandas ewm(span).mean(), adjust=True) stays below `limit_s` at every token."""
    a, num, den = 2.0 / (span + 1), 0.0, 0.0
    for g in gaps:
        num, den = g + (1 - a) * num, 1 + (1 - a) * den
        if num / den >= limit_s:
            return False
    return True


def _effective(res) -> tuple[float, float]:
    """(requests/s meeting the blog's SLA, the share meeting it): first token within |prompt| / 512 s
    of sending, and the EMA of the token gaps under 1/4 s throughout (plot_effective_throughput.py)."""
    r = res.requests
    ok = [bool(c and ttft <= p / SLA_PROMPT_TOKENS_PER_S and _ema_below(np.diff(t), 1.0 / SLA_GEN_TOKENS_PER_S))
          for c, ttft, p, t in zip(r["completed"], r["ttft_s"], r["prompt_tokens"], _token_times(res))]
    span = float(np.max(r["finish_s"]) - np.min(r["arrival_s"]))
    share = sum(ok) / len(ok)
    return len(ok) / span * share, share


def test_fastgen_profile_reads_deepspeed_defaults(workload):
    plan = _plan(FASTGEN, workload)
    assert plan.scheduler == "splitfuse" and plan.token_budget == MII_MAX_RAGGED_BATCH_SIZE
    assert plan.block_size == mii_block_size(MODEL.head_dim) == 64  # head size 128 on Ampere
    assert plan.cuda_graph_max_batch == 0 and plan.eager_prefill_layer_s > 0  # eager forwards
    assert not plan.custom_allreduce and plan.attention == "flash2"
    assert profile_for("DeepSpeed-MII 0.1.0 (FastGen)").name == "deepspeed-mii"
    assert engine_software("fastgen")[0].name == "deepspeed-mii"


def test_vllm_021_lacks_what_later_releases_added(workload):
    old, graphs, driver = _plan("vllm==0.2.1", workload), _plan("vllm==0.2.6", workload), _plan("vllm==0.2.7", workload)
    assert old.cuda_graph_max_batch == 0 and graphs.cuda_graph_max_batch is None
    assert old.host_s_per_context_token == graphs.host_s_per_context_token == TP * RAY_CONTROL_S_PER_TOKEN
    assert driver.host_s_per_context_token == 0.0
    assert not old.custom_allreduce
    # PR #2221's A/B: 0.1159 s per request over 8 workers' sends of its history (hand arithmetic)
    assert RAY_CONTROL_S_PER_TOKEN * 8 * (1031 + sum(1031 + k for k in range(317))) == pytest.approx(1 / 2.48 - 1 / 3.48)


def test_ray_control_plane_grows_with_the_batch_history():
    plan = ServingPlan(tp=TP, host_s_per_context_token=1e-7)
    base, ray = IterationCost.for_plan(MODEL, CLUSTER, ServingPlan(tp=TP)), IterationCost.for_plan(MODEL, CLUSTER, plan)
    for n, ctx in ((1, 100), (16, 16 * 2600), (64, 64 * 3000)):
        assert ray.time_s(n, 0.0, 0.0, n, ctx, n) - base.time_s(n, 0.0, 0.0, n, ctx, n) == pytest.approx(1e-7 * ctx)
        assert ray.breakdown(n, 0.0, 0.0, n, ctx, n)["total"] == pytest.approx(ray.time_s(n, 0.0, 0.0, n, ctx, n))


def test_generation_stalls_behind_prompts_in_vllm_not_in_fastgen(workload):
    """The blog's Figure 5 (16 clients): vLLM's tail token latency is several times FastGen's.
    FastGen's longest gap is one forward of at most 768 tokens; vLLM's p90 gap holds a whole prompt's
    prefill, since about clients / mean output = 16 / 60 = 27 % of its steps follow a new prompt."""
    fg, vl = _run(FASTGEN, workload, 16).summary, _run(VLLM, workload, 16).summary
    fg_cost = IterationCost.for_plan(MODEL, CLUSTER, _plan(FASTGEN, workload))
    budget = MII_MAX_RAGGED_BATCH_SIZE
    # a full forward: the budget's prompt tokens at the deepest context a prompt reaches (4000)
    forward = fg_cost.time_s(budget, budget * 4000.0, 4000.0 - budget, 0, 0.0, 1)
    assert fg["itl_p99_s"] <= 1.05 * forward
    vl_cost = IterationCost.for_plan(MODEL, CLUSTER, _plan(VLLM, workload))
    p10_prompt = int(PROMPT_MEAN * (1 - 1.2816 * VAR))
    assert vl["itl_p90_s"] >= vl_cost.prefill_alone_s(p10_prompt)
    assert vl["itl_p90_s"] >= 2.5 * fg["itl_p90_s"]


def test_effective_throughput_fastgen_ahead_of_vllm_021(workload):
    """The blog: FastGen 1.42 vs vLLM 0.63 queries/s at the peaks over client counts (2.3x), with ~28 %
    of vLLM's requests missing the 4 tokens/s SLA there and under 1 % of FastGen's. Both engines run
    the same GEMMs per token, so raw rates stay within ~15 % and FastGen's edge is the share of
    requests vLLM's prefill stalls push over the EMA bound: clearly ahead, not past the blog's
    figure (parasim: 1.7x; docs/serving.md)."""
    clients = (4, 8, 12, 16, 20)
    fg = max((_effective(_run(FASTGEN, workload, c, record=True)) for c in clients), key=lambda e: e[0])
    vl = max((_effective(_run(VLLM, workload, c, record=True)) for c in clients), key=lambda e: e[0])
    assert 1.3 < fg[0] / vl[0] <= 2.3
    assert fg[1] > 0.95  # FastGen's requests meet the SLA at its peak
    assert 0.1 < 1 - vl[1] < 0.5  # a sizeable share of vLLM's do not at its own


def test_cli_takes_the_fastgen_engine():
    out = subprocess.run([sys.executable, "-m", "parasim", "serve", "--model", "llama-2-7b", "--gpu", "a100-sxm-80gb",
                          "--engine", "deepspeed-mii==0.1.0", "--requests", "20", "--rate", "2", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    bad = subprocess.run([sys.executable, "-m", "parasim", "serve", "--model", "llama-2-7b", "--gpu", "a100-sxm-80gb",
                          "--engine", "deepspeed-mii==0.9", "--requests", "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "deepspeed-mii 0.1 - 0.3" in bad.stderr and "Traceback" not in bad.stderr
