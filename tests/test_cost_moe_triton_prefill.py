"""The Triton fused_moe kernel's MMA rate at prefill sizes against published kernel sweeps.

vLLM's `benchmarks/kernels/benchmark_moe.py` times one fused-MoE call (row alignment, the two
expert GEMMs with the activation between them, the k-way sum) with a tuned config file. Three
published sweeps, BF16, copied here from their pull requests (tokens, "Kernel time" / "Tuned" us):

* vLLM PR #24700 (https://github.com/vllm-project/vllm/pull/24700, "Benchmarks on H100", Mixtral
  BF16 `-tp=2`, tuned `E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json`): E 8, top 2, K 4096, N
  7168 per rank;
* vLLM PR #44818 (https://github.com/vllm-project/vllm/pull/44818, Gemma-4 shape on an H200,
  "Tuned (us)" column): E 128, top 8, K 2816, N 704;
* vLLM PR #40542 (https://github.com/vllm-project/vllm/pull/40542, A100-SXM4-80GB, "tuned us"
  column): E 64, top 6, K 2048, N 1408.

For every point where each touched expert holds at least 256 rows (tokens x top-k / E), the rate
of the expert GEMMs at which parasim's `experts_up + activation + experts_down + moe_combine` equals
the published time is found here by bisection (the rate scales the GEMMs' compute side only), and
must be the point rate the catalog constant was built from; the generation's rate is the mean over
its sweeps, by hand: Hopper (mean(0.863, 0.855) + 0.709) / 2 = 0.784, Ampere 0.809.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.cost.layer import LayerCost, Sharding, op_time_s
from parasim.cost.moe_tile import (TRITON_FUSED_MOE_POINT_RATES, TRITON_FUSED_MOE_RATES, TRITON_RATE_MIN_ROWS,
                                   grouped_gemm_rate)
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

# (part, experts, top-k, K, N per rank, [(tokens, published us), ...]) -- typed from the PRs
MIXTRAL_H100 = ("h100-sxm", 8, 2, 4096, 7168,
                [(1, 144.03), (8, 434.98), (32, 487.35), (128, 491.39), (256, 536.77), (512, 662.33),
                 (1024, 833.72), (1536, 1122.93)])
GEMMA4_H200 = ("h200-sxm", 128, 8, 2816, 704,
               [(64, 384.1), (128, 396.4), (256, 419.6), (512, 442.3), (1024, 528.4), (1536, 582.0),
                (2048, 728.2), (3072, 962.9), (4096, 1189.6)])
E64_A100 = ("a100-sxm-80gb", 64, 6, 2048, 1408, [(64, 677.6), (256, 717.0), (1024, 929.9), (4096, 2636.6)])
SWEEPS = {"hopper": (MIXTRAL_H100, GEMMA4_H200), "ampere": (E64_A100,)}

EXPERT_OPS = ("experts_up", "activation", "experts_down", "moe_combine")


def _ops(part: str, e: int, k: int, hidden: int, n: int, tokens: int, weights: str = "bf16", gemm: str = "triton"):
    """The fused-MoE call's ops for a synthetic one-rank MoE of this shape (the attention side is
    Qwen3-30B-A3B's and does not enter)."""
    model = replace(get_model("qwen3-30b-a3b"), experts=e, experts_per_token=k, hidden=hidden, moe_ffn_hidden=n,
                    shared_experts=0)
    layer = LayerCost(model, ClusterSpec(accelerator=get_accelerator(part), gpus=1), Sharding(tp=1),
                      weight_dtype=weights, act_dtype="bf16", kv_dtype="bf16", moe_gemm=gemm)
    ops = [o for o in layer.token_ops(float(tokens)) if o.name in EXPERT_OPS]
    assert {o.name for o in ops} == set(EXPERT_OPS)
    return ops, layer.acc


def _us(ops, acc, rate: float | None = None) -> float:
    return 1e6 * sum(op_time_s(o if rate is None or not o.name.startswith("experts_") else replace(o, rate=rate), acc)
                     for o in ops)


def _solve_rate(ops, acc, measured_us: float) -> float:
    lo, hi = 0.2, 1.5
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _us(ops, acc, mid) > measured_us else (lo, mid)
    return 0.5 * (lo + hi)


def _prefill_points(sweep):
    part, e, k, hidden, n, rows = sweep
    return [(t, us) for t, us in rows if t * k / e >= TRITON_RATE_MIN_ROWS]


def test_point_rates_are_rederived_from_the_published_times():
    for gen, sweeps in SWEEPS.items():
        derived = []
        for sweep in sweeps:
            part, e, k, hidden, n, _ = sweep
            derived.append(tuple(_solve_rate(_ops(part, e, k, hidden, n, t)[0], get_accelerator(part), us)
                                 for t, us in _prefill_points(sweep)))
        shipped = TRITON_FUSED_MOE_POINT_RATES[gen]
        assert [len(p) for p in derived] == [len(p) for p in shipped]
        for got, ref in zip(derived, shipped):
            for g, r in zip(got, ref):
                assert g == pytest.approx(r, abs=1.5e-3)


def test_generation_rates_are_the_mean_over_sweeps_by_hand():
    assert TRITON_FUSED_MOE_RATES["hopper"] == pytest.approx(((0.863 + 0.855) / 2 + 0.709) / 2, abs=1e-9)
    assert TRITON_FUSED_MOE_RATES["ampere"] == pytest.approx(0.809, abs=1e-9)
    assert set(TRITON_FUSED_MOE_RATES) == {"hopper", "ampere"}


@pytest.mark.parametrize("sweep", [MIXTRAL_H100, GEMMA4_H200, E64_A100],
                         ids=["mixtral-h100", "gemma4-h200", "e64-a100"])
def test_prefill_points_within_12_percent_and_closer_than_the_dense_rate(sweep):
    """Every published point with >= 256 rows per expert: within 12 % with the rate, and closer to
    the measurement than the dense rate (which was 0.71-0.87 of it)."""
    part, e, k, hidden, n, _ = sweep
    for tokens, measured in _prefill_points(sweep):
        ops, acc = _ops(part, e, k, hidden, n, tokens)
        assert all(o.rate < 1.0 for o in ops if o.name.startswith("experts_"))
        with_rate, dense = _us(ops, acc) / measured, _us(ops, acc, 1.0) / measured
        assert 0.88 < with_rate < 1.12, (tokens, with_rate)
        assert dense < 0.9 and abs(with_rate - 1.0) < abs(dense - 1.0), (tokens, dense)


def test_weight_bound_decode_sizes_do_not_move():
    """Mixtral at 8-128 tokens reads all 8 experts' weights; the rate scales compute only, so the
    call's time moves by under 1 %."""
    part, e, k, hidden, n, rows = MIXTRAL_H100
    for tokens, _ in rows:
        if 8 <= tokens <= 128:
            ops, acc = _ops(part, e, k, hidden, n, tokens)
            assert _us(ops, acc) == pytest.approx(_us(ops, acc, 1.0), rel=0.01)


@pytest.mark.parametrize("case", ["fp8", "int4", "cutlass", "blackwell"])
def test_unmeasured_paths_keep_their_rate(case):
    """FP8 experts on the Triton path, weight-only INT4 (Marlin), the CUTLASS family on Ampere and
    Blackwell parts: none of the sweeps above measured them."""
    part, e, k, hidden, n = "h100-sxm", 128, 8, 2048, 768
    if case == "fp8":
        ops, _ = _ops(part, e, k, hidden, n, 8192, weights="fp8")
    elif case == "int4":
        ops, _ = _ops(part, e, k, hidden, n, 8192, weights="int4")
    elif case == "cutlass":
        ops, _ = _ops("a100-sxm-80gb", e, k, hidden, n, 8192, gemm="cutlass")
    else:
        ops, _ = _ops("b200", e, k, hidden, n, 8192)
    assert all(o.rate == 1.0 for o in ops if o.name.startswith("experts_"))
    assert grouped_gemm_rate("triton", "blackwell", weight_only=False, dtype="bf16") == 1.0
    assert grouped_gemm_rate("triton", "hopper", weight_only=True, dtype="bf16") == 1.0
    assert grouped_gemm_rate("triton", "ampere", weight_only=False, dtype="bf16") == TRITON_FUSED_MOE_RATES["ampere"]


def test_training_grouped_gemms_keep_the_dense_rate():
    """Training's folded layout (Megatron-Core / TE grouped GEMMs) is not a serving engine's kernel."""
    model = get_model("mixtral-8x7b")
    layer = LayerCost(model, ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=8), Sharding(tp=2, etp=2),
                      weight_dtype="bf16", act_dtype="bf16", moe_gemm="triton")
    ops = [o for o in layer.token_ops(8192.0, moe=True) if o.name.startswith("experts_")]
    assert ops and all(o.rate == 1.0 for o in ops)


@settings(max_examples=40, deadline=None)
@given(tokens=hst.floats(1.0, 32768.0), part=hst.sampled_from(["h100-sxm", "h200-sxm", "a100-sxm-80gb"]))
def test_the_triton_rate_never_speeds_up_and_never_costs_more_than_its_inverse(tokens, part):
    """Qwen3-30B-A3B's 16-bit experts under the Triton family at any batch: between the dense-rate
    time and that time over the generation's rate (the rate scales the compute side only)."""
    acc = get_accelerator(part)
    layer = LayerCost(get_model("qwen3-30b-a3b"), ClusterSpec(accelerator=acc, gpus=1), Sharding(tp=1),
                      weight_dtype="bf16", act_dtype="bf16", kv_dtype="bf16", moe_gemm="triton")
    rate = TRITON_FUSED_MOE_RATES[acc.generation]
    for op in (o for o in layer.token_ops(tokens) if o.name.startswith("experts_")):
        assert op.rate == rate
        t, dense = op_time_s(op, acc), op_time_s(replace(op, rate=1.0), acc)
        assert dense * (1 - 1e-12) <= t <= dense / rate * (1 + 1e-12)
