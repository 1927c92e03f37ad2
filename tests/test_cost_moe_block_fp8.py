"""Triton block-FP8 routed experts (vLLM / SGLang, Hopper): the per-K-step wait and the 64-row tile.

vLLM PR #23280 (H100, DeepSeek-V3 N=2112 K=7168, tuned config) prints the Triton block-FP8 GEMM at
367 / 396 / 403 / 407 TFLOP/s against torch BF16 at 620 / 648 / 716 / 666 TFLOP/s for M = 1,024 /
2,048 / 4,096 / 8,192: 0.59 of the BF16 rate, no FP8 speed-up. cost.moe_tile reads that as a
fixed wait per K step; these tests check, by hand:

* on the H100 at the measured depth, the experts' compute rate is 0.59 x the BF16 dense rate
  (the published ratio, recomputed here from the four printed pairs);
* the wait is fixed in SM cycles, so the rate follows 1 / (1 + c x s) with s the part's FP8 rate
  per SM over the H100's: identical on the H200 (same SM), higher on the H100 PCIe;
* it applies to the `triton` family with 128 x 128 block scales only (not per-tensor FP8, not
  TensorRT-LLM's `cutlass` runner, not training, not a part without an FP8 unit or an SM count);
* the kernel keeps its 64-row BLOCK_SIZE_M at every batch (vLLM's and SGLang's block-FP8 config).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.cost.layer import LayerCost, Sharding
from parasim.cost.moe_tile import (TRITON_SMALL_M_TILE_QUANT, moe_tile_m, triton_block_fp8, triton_block_fp8_rate,
                                   triton_block_fp8_stall)
from parasim.cost.quant_bytes import quant_scope
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

DSV3 = get_model("deepseek-v3")  # its checkpoint states block_128 scales
#: vLLM PR #23280 "BF16 vs W8A8 Block FP8 GEMMs" (H100, N=2112 K=7168): (torch-bf16, triton) TFLOP/s
PUBLISHED = [(619.771938, 366.839772), (648.192575, 396.032348), (715.781529, 402.982983), (666.385367, 406.511360)]


def _layer(gpu: str, gemm: str = "triton", weights: str = "fp8", scales_from_model: bool = True) -> LayerCost:
    acc = get_accelerator(gpu)
    quant = quant_scope(DSV3, weights) if scales_from_model else None
    return LayerCost(DSV3, ClusterSpec(accelerator=acc, gpus=8), Sharding(tp=8), weight_dtype=weights,
                     act_dtype="bf16", kv_dtype="bf16", moe_gemm=gemm, quant=quant)


def _experts(layer: LayerCost, tokens: float) -> dict:
    return {o.name: o for o in layer.token_ops(tokens, moe=True) if o.name.startswith("experts_")}


def test_h100_rate_is_the_published_fraction_of_bf16():
    """FP8 peak x FP8 efficiency at K 7168 x rate = (mean published triton / bf16) x BF16 peak x BF16
    efficiency at K 7168: the measured ratio, whatever the catalog's FP8 / BF16 efficiencies are."""
    h100 = get_accelerator("h100-sxm")
    ratio = sum(t / b for b, t in PUBLISHED) / len(PUBLISHED)
    assert 0.56 < ratio < 0.61
    fp8 = h100.sustained_peak("fp8") * h100.gemm_efficiency("fp8", 7168) * triton_block_fp8_rate(h100)
    bf16 = h100.sustained_peak("bf16") * h100.gemm_efficiency("bf16", 7168)
    assert fp8 == pytest.approx(ratio * bf16, rel=1e-12)


def test_wait_is_fixed_in_sm_cycles():
    """rate = 1 / (1 + c x s), s = FP8 TFLOP/s per SM over the H100's: the H200 has the H100's SM
    (1,978.9 TFLOP/s over 132 SMs) and loses the same; the H100 PCIe (1,513 over 114, lower clocks)
    spends longer on each step's MMA against the same wait, so it loses less."""
    c = triton_block_fp8_stall()
    h100, h200, pcie = (get_accelerator(g) for g in ("h100-sxm", "h200-sxm", "h100-pcie"))
    assert triton_block_fp8_rate(h200) == pytest.approx(triton_block_fp8_rate(h100), rel=1e-12)
    s = (1513.0 / 114) / (1978.9 / 132)
    assert triton_block_fp8_rate(pcie) == pytest.approx(1.0 / (1.0 + c * s), rel=1e-3)
    assert triton_block_fp8_rate(h100) < triton_block_fp8_rate(pcie) < 1.0


def test_experts_take_the_rate_and_the_fp8_unit_on_h200():
    ops = _experts(_layer("h200-sxm"), 8192.0)
    for op in ops.values():
        assert op.rate == pytest.approx(triton_block_fp8_rate(get_accelerator("h200-sxm")), rel=1e-12)
    assert {o.dtype for o in ops.values()} == {"fp8"}


@pytest.mark.parametrize("gpu,gemm,scales", [("h200-sxm", "cutlass", True),  # TensorRT-LLM's runner
                                             ("h200-sxm", "triton", False),  # per-tensor FP8 (no checkpoint scope)
                                             ("h20", "triton", True),  # no SM count in the catalog
                                             ("a100-sxm-80gb", "triton", True)])  # FP8 runs weight-only (Marlin)
def test_not_applied_elsewhere(gpu, gemm, scales):
    """Elsewhere the experts keep their family's rate: 1, or the CUTLASS grouped rate (0.92)."""
    for op in _experts(_layer(gpu, gemm, scales_from_model=scales), 8192.0).values():
        assert op.rate > 0.9


def test_training_keeps_the_dense_rate():
    """Megatron-Core's grouped GEMMs (the folded layout, etp set) are not the Triton serving kernel."""
    acc = get_accelerator("h100-sxm")
    layer = LayerCost(DSV3, ClusterSpec(accelerator=acc, gpus=8), Sharding(tp=1, ep=8, etp=1), weight_dtype="fp8",
                      act_dtype="bf16", kv_dtype="bf16", moe_gemm="triton", quant=quant_scope(DSV3, "fp8"))
    assert not layer._block_fp8


@settings(max_examples=60, deadline=None)
@given(tokens=hst.floats(min_value=1.0, max_value=65536.0), experts=hst.sampled_from([8.0, 32.0, 128.0, 256.0]))
def test_block_fp8_tile_is_64_rows_at_every_batch(tokens, experts):
    """vLLM's and SGLang's block-FP8 config keeps BLOCK_SIZE_M 64 above E tokens too (cost.moe_tile)."""
    assert moe_tile_m("triton", tokens, experts, 128, quantized=True, block_fp8=True) == TRITON_SMALL_M_TILE_QUANT == 64


def test_prefill_chunk_moe_slower_by_the_rate():
    """An 8,192-token prefill chunk of DeepSeek-V3 at TP 8 on the H200: the wait scales the compute
    side only, so each expert GEMM takes more than twice as long as at the dense FP8 rate, and at
    most 1 / rate as long (the weight bytes, which both read, are not scaled)."""
    from parasim.cost.layer import op_time_s
    acc = get_accelerator("h200-sxm")
    rate = triton_block_fp8_rate(acc)
    ops = _experts(_layer("h200-sxm"), 8192.0)
    for op in ops.values():
        slow = op_time_s(op, acc)
        fast = op_time_s(replace(op, rate=1.0), acc)
        assert 2.0 < slow / fast <= 1.0 / rate + 1e-9
