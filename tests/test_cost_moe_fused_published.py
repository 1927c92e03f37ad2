"""A whole fused-MoE layer (serving) against a published kernel sweep.

vLLM's `benchmarks/kernels/benchmark_moe.py` times one `fused_moe` call: the top-k of given router
logits, the row alignment, both expert GEMMs with the activation between them, and the sum of each
token's k expert outputs. vLLM PR #24700 (mgoin, 2025-09-11, "[Perf] Improve default fused moe
configs by analyzing tuned configs", section "Benchmarks on H100") prints that time for
Mixtral-8x7B in BF16 at TP 2 (`--model=mistralai/Mixtral-8x7B-Instruct-v0.1 -tp=2`, the tuned
config `E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json`) at 1 to 1,536 tokens.

parasim's counterpart is the layer's routed-expert ops under the `triton` kernel family
(cost.moe_tile): `experts_up`, `activation`, `experts_down` and `moe_combine` (the router GEMM is
outside the benchmark, which is handed the logits). The sweep spans the weight-bound decode sizes
(a few tokens per expert) and prefill-sized batches, so it checks both the touched-expert weight
reads and the padded-tile compute of cost.routing. The catalog's H100 entry was not fitted to it.
"""

from __future__ import annotations

import pytest

from parasim.cost.layer import LayerCost, Sharding, op_time_s
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

#: (tokens, published "Kernel time" in us), vLLM PR #24700, Mixtral BF16 TP2 on H100, tuned config
MIXTRAL_BF16_TP2_H100_US = [(1, 144.03), (2, 229.28), (4, 351.10), (8, 434.98), (16, 471.49), (24, 478.27),
                            (32, 487.35), (48, 487.85), (64, 483.14), (96, 494.42), (128, 491.39), (256, 536.77),
                            (512, 662.33), (1024, 833.72), (1536, 1122.93)]

EXPERT_OPS = ("experts_up", "activation", "experts_down", "moe_combine")


def fused_moe_us(tokens: int) -> float:
    layer = LayerCost(get_model("mixtral-8x7b"), ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=2),
                      Sharding(tp=2), weight_dtype="bf16", act_dtype="bf16", kv_dtype="bf16", moe_gemm="triton")
    ops = [o for o in layer.token_ops(float(tokens)) if o.name in EXPERT_OPS]
    assert {o.name for o in ops} == set(EXPERT_OPS)
    return 1e6 * sum(op_time_s(o, layer.acc) for o in ops)


@pytest.mark.parametrize("tokens,measured_us", MIXTRAL_BF16_TP2_H100_US)
def test_mixtral_fused_moe_layer_within_published_band(tokens, measured_us):
    """0.85-1.12 of the published time at every size: the
    decode sizes (weight-bound) within 10 %, the prefill sizes within 12 % now that the Triton
    kernel's Hopper prefill rate is charged (cost.moe_tile.TRITON_FUSED_MOE_RATES, the mean of this
    sweep and a second one, so this sweep alone sits on the slow side of it: 1.08-1.10 at 1,024-1,536
    tokens; without the rate 0.78-0.87 at 512-1,536)."""
    ratio = fused_moe_us(tokens) / measured_us
    assert 0.85 < ratio < 1.12, ratio


def test_decode_sizes_are_weight_bound_and_within_10_percent():
    """From 8 to 128 tokens every expert is touched (1 - (3/4)^8 = 90 % of the 8 at 8 tokens) and the
    published time is flat (435-494 us): reading the experts' weights. parasim stays within 10 %."""
    for tokens, measured in MIXTRAL_BF16_TP2_H100_US:
        if 8 <= tokens <= 128:
            assert abs(fused_moe_us(tokens) / measured - 1.0) < 0.10, tokens
    # the flat stretch itself: the weights of all 8 experts at TP 2, 3 matrices of 4096 x 7168 each, in BF16
    weights = 8 * 3 * 4096 * 7168 * 2
    bw = get_accelerator("h100-sxm").hbm_bw_bytes_per_s
    assert weights / bw * 1e6 < 487.35 < 1.5 * weights / bw * 1e6
