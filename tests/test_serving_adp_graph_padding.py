"""CUDA-graph padding under attention DP (serving.lockstep with `cuda_graph_batch_sizes`).

What TensorRT-LLM does (tensorrt_llm/_torch/pyexecutor/model_engine.py, 1.x): with attention DP over
more than one rank, `_get_padded_batch` all-gathers every rank's `[can_run_cuda_graph, batch_size]`;
when all ranks are generation-only each pads to the captured size at or above the *largest* rank
batch, and `_maybe_get_cuda_graph` replays a graph only when all ranks are generation-only with equal
batches. Any context work on any rank: every rank runs eagerly, unpadded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.serving import ServingPlan, Workload, simulate
from parasim.serving.lockstep import RankCost, generation_only_batch
from parasim.serving.schedulers.base import Batch
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.specs.validation_case import load_cases
from parasim.validation.serving import _workload, case_plan

ROOT = Path(__file__).resolve().parents[1]
MIXTRAL = get_model("mixtral-8x7b")
CL = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=2, gpus_per_node=8)


def _plan(**kw) -> ServingPlan:
    return ServingPlan(tp=1, replicas=2, ep=2, weights="bf16", scheduler="continuous", token_budget=8192, **kw)


def _cost(plan: ServingPlan) -> RankCost:
    return RankCost.for_plan(MIXTRAL, CL, plan.resolved(MIXTRAL))


class _Rank:
    def __init__(self, n_dec: int) -> None:
        self.n_dec = n_dec


def test_group_rule_pads_every_rank_to_the_largest_batch():
    """Ranks with 3 and 5 decoders and captured sizes (4, 8): both run the graph of 8 (the round-up of
    the group's largest batch, 5), not 4 and 8 as two independent engines would."""
    cost = _cost(_plan(cuda_graph_batch_sizes=[4, 8]))
    plain = _cost(_plan())
    cost.group_batch = 5
    assert cost.padded(3, 0.0, 3) == 8 and cost.padded(5, 0.0, 5) == 8
    assert cost.time_s(3, 0.0, 0.0, 3, 300.0, 3) == plain.time_s(8, 0.0, 0.0, 8, 305.0, 8)
    assert (cost.last_tokens, cost.last_real_tokens) == (8, 3)  # the MoE layers see the 5 dummy slots too
    cost.group_batch = None  # some rank runs context work: every rank eager, unpadded
    assert cost.time_s(3, 0.0, 0.0, 3, 300.0, 3) == plain.time_s(3, 0.0, 0.0, 3, 300.0, 3)
    assert cost.last_tokens == 3
    cost.group_batch = 9  # above the largest captured size: no graph, no padding
    assert cost.padded(3, 0.0, 3) == 3


def test_generation_only_batch():
    dec, mixed = Batch(decode=True), Batch(chunks=[(0, 16)], decode=True)
    assert generation_only_batch([_Rank(3), _Rank(5)], [dec, dec]) == 5
    assert generation_only_batch([_Rank(3), _Rank(0)], [dec, None]) == 3  # an idle rank steps one dummy request
    assert generation_only_batch([_Rank(0), _Rank(0)], [None, None]) == 1
    assert generation_only_batch([_Rank(3), _Rank(5)], [dec, mixed]) is None


def test_three_requests_two_ranks_by_hand():
    """A burst of three equal requests (10-token prompts, 3 outputs): A and C go to rank 0, B to
    rank 1 (fewest active prompt tokens, then requests, then the lowest index). Iteration 1 prefills
    (eager, unpadded); in the two decode iterations rank 0 has 2 decoders and rank 1 has 1, and with
    captured sizes (1, 2, 4) rank 1 pads to 2 (the group's largest batch), its dummy slot holding one
    cached token."""
    padded = _plan(cuda_graph_batch_sizes=[1, 2, 4])
    plain = _cost(_plan())
    wl = Workload.from_columns([0.0, 0.0, 0.0], [10, 10, 10], [3, 3, 3])
    res = simulate(MIXTRAL, CL, padded, wl, seed=0)
    pre0 = plain.time_s(20, 2 * 10 * 11 / 2, 0.0, 0, 0.0, 2)
    pre1 = plain.time_s(10, 10 * 11 / 2, 0.0, 0, 0.0, 1)
    dt1 = max(pre0, pre1) + plain.group_s(30, 20)
    # decode step k (k = 1, 2): rank 0 reads 2 x (10 + k) cached tokens, rank 1 10 + k plus the dummy's 1
    dt = [max(plain.time_s(2, 0.0, 0.0, 2, 2 * (10 + k), 2), plain.time_s(2, 0.0, 0.0, 2, 10 + k + 1, 2))
          + plain.group_s(4, 2) for k in (1, 2)]
    assert res.requests["ttft_s"][1] == pytest.approx(dt1, rel=1e-12)
    assert res.requests["e2e_s"][1] == pytest.approx(dt1 + dt[0] + dt[1], rel=1e-12)
    unpadded = simulate(MIXTRAL, CL, _plan(), wl, seed=0)
    assert res.requests["e2e_s"][1] > unpadded.requests["e2e_s"][1]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=hst.integers(2, 40), prompt=hst.integers(1, 300), out=hst.integers(2, 40),
       sizes=hst.lists(hst.integers(1, 64), min_size=1, max_size=6, unique=True).map(sorted))
def test_padding_never_speeds_a_burst_up_and_loses_no_token(n, prompt, out, sizes):
    """Padding only adds dummy work to generation-only iterations: a burst of equal requests takes at
    least as long, every request completes, and the balance ratio counts real tokens only."""
    wl = Workload.from_columns([0.0] * n, [prompt] * n, [out] * n)
    a = simulate(MIXTRAL, CL, _plan(cuda_graph_batch_sizes=sizes), wl, seed=0).summary
    b = simulate(MIXTRAL, CL, _plan(), wl, seed=0).summary
    assert a["completed"] == b["completed"] == n and a["output_tokens"] == b["output_tokens"]
    assert a["makespan_s"] >= b["makespan_s"] * (1 - 1e-12)
    assert a["lockstep"]["balance_ratio_mean"] == b["lockstep"]["balance_ratio_mean"]


def test_the_dep_rows_of_the_12_page_run_padded():
    """The 1.2 perf-overview's DEP rows state padding and a list: their plans carry it now."""
    cases = load_cases(ROOT / "validation" / "trtllm-1.2-perf-overview.yaml")
    case = next(c for c in cases if c.id == "trtllm12-qwen3-235b-b200-dep4-1024-1024")
    plan, choices, _ = case_plan(case, _workload(case))
    assert plan.ep == 4 and plan.cuda_graph_batch_sizes[-1] == min(plan.max_batch, plan.token_budget)
    assert any("attention DP only when every rank is generation-only" in str(c) for c in choices)


def test_cli_serve_takes_padding_with_ep(tmp_path):
    """A config with ep and cuda_graph_batch_sizes runs (it was exit 2 before the group rule)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mixtral-8x7b\ngpu: h100-sxm\ngpus: 2\ntp: 1\nreplicas: 2\nep: 2\nrequests: 12\n"
                   "burst: true\nprompt_tokens: 64\noutput_tokens: 8\nscheduler: continuous\n"
                   "cuda_graph_batch_sizes: [1, 2, 4, 8]\n")
    r = subprocess.run([sys.executable, "-m", "parasim", "serve", "-c", str(cfg), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
