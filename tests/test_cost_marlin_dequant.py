"""Marlin weight-only GEMMs at prefill sizes: the dequantization's fixed SM cycles (cost.quant.marlin_rate).

Published points re-derived by hand here:

* SGLang PR #38884 (H100, live W4A16 server, 16,384-token chunked-prefill forwards, nsys): the MoE Marlin
  W4A16 GEMM does 1.237 TFLOP per layer per GPU in 4.863 ms = 254 TFLOP/s, "25.7% of H100 BF16 peak".
  parasim's Marlin rate on the H100 times its dense BF16 rate at the reference depth gives that rate.
* vLLM PR #2497 (comment of 2024-01-24, IST-DASLab/marlin bench.py; the GPU is not named, the torch FP16
  rate it implies, 141 / 0.61 = 231 TFLOP/s, is an A100's): Marlin runs at 0.60 / 0.61 of torch FP16 at
  batch 2,048 / 4,000, its TFLOP/s flat at 141 from batch 128 on. parasim's A100 rate, scaled from the
  H100 point by the per-SM BF16 tensor rate, is within 6 % of both.
* SGLang PR #34682 (H20 97GB, Marlin MXFP4 MoE, DeepSeek-V4-Flash experts hidden 4,096, intermediate
  2,048, E 256, top 6): 535.340 ms at M = 128k tokens. By hand (H20: 148 TFLOP/s BF16, 78 SMs per
  third-party listings; the catalog gives no SM count, so parasim does not apply the rate there), the same
  fixed-cycle law predicts the measured 74 TFLOP/s within 3 %.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from parasim.cost.layer import LayerCost, Sharding, op_time_s
from parasim.cost.quant import (MARLIN_REF_K, MARLIN_TILE_M, marlin_dequant_stall, marlin_rate, marlin_runs)
from parasim.cost.quant_bytes import quant_scope
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

OSS = get_model("gpt-oss-120b")
LLAMA = get_model("llama-3-8b")


def _oss_layer(gpu: str, *, marlin_moe: bool = False, gemm: str = "triton") -> LayerCost:
    acc = get_accelerator(gpu)
    return LayerCost(OSS, ClusterSpec(accelerator=acc, gpus=1), Sharding(tp=1), weight_dtype="fp4",
                     act_dtype="bf16", kv_dtype="bf16", moe_gemm=gemm, quant=quant_scope(OSS, "fp4"),
                     marlin_moe=marlin_moe)


def _llama_layer(gpu: str, weights: str = "int4") -> LayerCost:
    acc = get_accelerator(gpu)
    return LayerCost(LLAMA, ClusterSpec(accelerator=acc, gpus=1), Sharding(tp=1), weight_dtype=weights,
                     act_dtype="bf16", kv_dtype="bf16")


def _ops(layer: LayerCost, tokens: float, moe: bool) -> dict:
    return {o.name: o for o in layer.token_ops(tokens, moe=moe)}


def test_h100_reference_is_the_published_rate():
    h100 = get_accelerator("h100-sxm")
    published = 1.237e12 / 4.863e-3
    assert published / 989.4e12 == pytest.approx(0.257, abs=5e-4)  # the PR's "25.7% of H100 BF16 peak"
    dense = h100.sustained_peak("bf16") * h100.gemm_efficiency("bf16", MARLIN_REF_K)
    assert dense * marlin_rate(h100) == pytest.approx(published, rel=1e-9)


def test_a100_rate_matches_the_marlin_bench_at_large_batch():
    """Fixed dequantization cycles per SM: the A100's BF16 tensor rate per SM is 312 / 108 against the
    H100's 989.4 / 132, so its stall is that fraction of the H100's."""
    a100 = get_accelerator("a100-sxm-80gb")
    per_sm = (312.0 / 108) / (989.4 / 132)
    by_hand = 1.0 / (1.0 + marlin_dequant_stall() * per_sm)
    assert marlin_rate(a100) == pytest.approx(by_hand, rel=1e-9)
    for published in (0.60, 0.61):  # speedup column of the bench at batch 2,048 and 4,000
        assert marlin_rate(a100) == pytest.approx(published, rel=0.06)


def test_h20_kernel_sweep_by_hand():
    """SGLang PR #34682's Marlin column at M = 128k: FLOP per token 2 x 6 x (4096 x 2 x 2048 + 2048 x 4096)."""
    flop_per_token = 2 * 6 * (4096 * 2 * 2048 + 2048 * 4096)
    measured = 131072 * flop_per_token / 535.340e-3
    assert measured == pytest.approx(73.9e12, rel=0.01)
    h100 = get_accelerator("h100-sxm")
    eff_4096 = h100.gemm_efficiency("bf16", 4096)  # the H20 entry carries the same Hopper K law
    rate = 1.0 / (1.0 + marlin_dequant_stall() * (148.0 / 78) / (989.4 / 132))
    predicted = 148e12 * eff_4096 * rate
    assert predicted == pytest.approx(measured, rel=0.03)


def test_where_marlin_runs():
    a100, h100, b200 = (get_accelerator(g) for g in ("a100-sxm-80gb", "h100-sxm", "b200"))
    assert marlin_runs(a100) and marlin_runs(a100, experts=True)
    assert not marlin_runs(h100)  # dense weight-only on Hopper: vLLM's Machete (not measured)
    assert not marlin_runs(h100, experts=True)  # Hopper MXFP4 experts through Triton matmul_ogs
    assert marlin_runs(h100, experts=True, marlin_moe=True)
    assert not marlin_runs(b200, experts=True, marlin_moe=True)
    assert marlin_rate(get_accelerator("h20")) == 1.0  # no SM count in the catalog


def test_a100_gpt_oss_experts_take_the_rate_attention_does_not():
    layer = _oss_layer("a100-sxm-80gb")
    ops = _ops(layer, 8192, moe=True)
    rate = marlin_rate(get_accelerator("a100-sxm-80gb"))
    assert ops["experts_up"].dequant == pytest.approx(rate) and ops["experts_down"].dequant == pytest.approx(rate)
    assert ops["experts_up"].tile_m == MARLIN_TILE_M and ops["experts_up"].rate == 1.0
    assert ops["qkv_proj"].dequant == 1.0 and ops["o_proj"].dequant == 1.0  # gpt-oss keeps attention 16-bit


def test_hopper_gpt_oss_experts_take_it_only_through_marlin():
    assert _ops(_oss_layer("h100-sxm"), 8192, moe=True)["experts_up"].dequant == 1.0
    marlin = _ops(_oss_layer("h100-sxm", marlin_moe=True), 8192, moe=True)["experts_up"]
    assert marlin.dequant == pytest.approx(marlin_rate(get_accelerator("h100-sxm")))


def test_dense_weight_only_by_generation():
    a100 = _ops(_llama_layer("a100-sxm-80gb"), 4096, moe=False)
    assert a100["mlp_up"].dequant == pytest.approx(marlin_rate(get_accelerator("a100-sxm-80gb")))
    assert _ops(_llama_layer("h100-sxm"), 4096, moe=False)["mlp_up"].dequant == 1.0  # Machete
    assert _ops(_llama_layer("a100-sxm-80gb", "bf16"), 4096, moe=False)["mlp_up"].dequant == 1.0


def test_prefill_slows_decode_does_not():
    """The dequantization bounds the real rows' compute: a few-token decode GEMM stays a weight read
    (Marlin's near-ideal 4-bit speed-up up to batch 16: the bench's time is flat from batch 1 to 16);
    an 8,192-token prefill GEMM takes 1 / rate as long, a 64-token one less."""
    acc = get_accelerator("a100-sxm-80gb")
    layer = _llama_layer("a100-sxm-80gb")
    for tokens in (1, 8, 16):
        dec = _ops(layer, tokens, moe=False)["mlp_up"]
        assert op_time_s(dec, acc) == pytest.approx(op_time_s(replace(dec, dequant=1.0), acc), rel=1e-12)
    pre = _ops(layer, 8192, moe=False)["mlp_up"]
    slow = op_time_s(pre, acc) / op_time_s(replace(pre, dequant=1.0), acc)
    assert slow == pytest.approx(1.0 / marlin_rate(acc), rel=0.03)
