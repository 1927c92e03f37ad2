"""The routed experts' grouped GEMM row tile by kernel family (`moe_gemm`, cost.moe_tile).

vLLM's and SGLang's Triton fused_moe kernel takes a small BLOCK_SIZE_M while the rank's tokens are
at most its experts; TensorRT-LLM's SM90 grouped GEMM and training keep the part's tile. Checked by
hand: a lone decode token's expert rows fill exactly 1/tile of their tile, so the padded compute
scales with the tile; above E tokens, and in the default family, nothing moves; the engine
profiles set the family for MoE models only; bad values are refused naming the field. The effect
is #18's DeepSeek-V3.2 on 8 x H20 case: the fp8 experts of a 32-sequence decode step were charged
256 whole 128-row tiles, compute-bound on the H20; halving the tile halves that part."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.cost.layer import LayerCost, Sharding
from parasim.cost.moe_tile import MOE_GEMMS, TRITON_SMALL_M_TILE_16BIT, TRITON_SMALL_M_TILE_QUANT, moe_tile_m
from parasim.engines.apply import engine_defaults
from parasim.errors import InputError
from parasim.serving import ServingPlan, generate
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

H100 = get_accelerator("h100-sxm")
MIXTRAL = get_model("mixtral-8x7b")


def _experts(gemm: str, tokens: float, weights: str = "bf16", tp: int = 8):
    layer = LayerCost(MIXTRAL, ClusterSpec(accelerator=H100, gpus=tp), Sharding(tp=tp), weight_dtype=weights,
                      act_dtype="bf16" if weights == "bf16" else "fp8", moe_gemm=gemm)
    return {o.name: o for o in layer.token_ops(tokens, moe=True) if o.name.startswith("experts_")}


@pytest.mark.parametrize("weights,tile", [("bf16", TRITON_SMALL_M_TILE_16BIT), ("fp8", TRITON_SMALL_M_TILE_QUANT),
                                          ("bf16", 0), ("fp8", 0)])
def test_lone_token_fills_one_row_of_its_tile(weights, tile):
    """One token on one rank (ep 1: no busiest-rank factor) picks k of E experts, one row each:
    E[tiles per expert] = P(touched) = k/E and the mean rows per expert k/E, so the rows fill
    exactly 1/tile (at TP 8 Mixtral's 28 column tiles are fewer than the 132 SMs: no wave term).
    tile 0: the default family, the part's own tile."""
    tile = tile or H100.efficiency.gemm_tile_m
    gemm = "triton" if tile != H100.efficiency.gemm_tile_m else "cutlass"
    for op in _experts(gemm, 1.0, weights).values():
        assert op.fill == pytest.approx(1.0 / tile, rel=1e-9)


def test_padded_compute_scales_with_the_tile():
    """The grouped GEMM's compute term is flops / (peak x eff x fill): a tile 128/16 = 8 times smaller
    fills 8 times more of it. FLOPs, bytes and shapes are the same ops."""
    big, small = _experts("cutlass", 1.0), _experts("triton", 1.0)
    for name in big:
        a, b = big[name], small[name]
        assert (a.flops, a.bytes, a.m, a.n, a.k) == (b.flops, b.bytes, b.m, b.n, b.k)
        assert b.fill / a.fill == pytest.approx(H100.efficiency.gemm_tile_m / TRITON_SMALL_M_TILE_16BIT, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(tokens=hst.integers(min_value=MIXTRAL.experts + 1, max_value=20000))
def test_above_the_expert_count_the_families_agree(tokens):
    """Past M = E tokens the Triton configs leave the small-M branch: the part's tile, as cutlass.
    (The families still differ in their MMA rate on Hopper: tests/test_cost_moe_grouped_rate.py.)"""
    def tiled(gemm):
        return {name: replace(op, rate=1.0) for name, op in _experts(gemm, float(tokens)).items()}
    assert tiled("triton") == tiled("cutlass")


@settings(max_examples=200, deadline=None)
@given(gemm=hst.sampled_from(MOE_GEMMS), tokens=hst.floats(min_value=0, max_value=1e6),
       experts=hst.integers(min_value=1, max_value=512), part=hst.sampled_from([64, 128, 256]),
       quantized=hst.booleans())
def test_tile_is_never_above_the_parts(gemm, tokens, experts, part, quantized):
    t = moe_tile_m(gemm, tokens, experts, part, quantized=quantized)
    assert 0 < t <= part
    if gemm == "cutlass" or tokens > experts or tokens == 0:
        assert t == part


def test_weight_only_keeps_marlins_tile():
    """Weight-only formats already run Marlin's own small tile: the family does not change them."""
    assert _experts("triton", 1.0, "int4") == _experts("cutlass", 1.0, "int4")


def test_deepseek_decode_on_h20_halves_its_expert_compute():
    """DeepSeek-V3 fp8 on 8 x H20 at TP 8, 32 decoding sequences: 32 tokens <= 256 experts, so the
    fp8 Triton tile (64 rows) replaces the part's 128. The experts are compute-bound there (the
    H20's FP8 rate is a sixth of an H100's), so the MoE part falls by about half (the expert weight
    reads and the router and shared expert stay)."""
    ds = get_model("deepseek-v3")
    cluster = ClusterSpec(accelerator=get_accelerator("h20"), gpus=8)
    moe = {g: IterationCost.for_plan(ds, cluster, ServingPlan(tp=8, weights="fp8", moe_gemm=g))
           .breakdown(32, 0.0, 0.0, 32, 32 * 3072.0, 32)["moe"] for g in MOE_GEMMS}
    assert 0.45 < moe["triton"] / moe["cutlass"] < 0.6


def test_engine_profiles_set_the_family_for_moe_models_only():
    wl = generate(requests=4, burst=True, prompt_tokens=128, output_tokens=16, seed=1)
    dense = get_model("llama-3-8b")
    for engine in ("vllm", "sglang"):
        _, fields, _ = engine_defaults(engine, MIXTRAL, H100, {"tp": 2}, wl)
        assert fields.get("moe_gemm") == "triton"
        _, fields, _ = engine_defaults(engine, dense, H100, {}, wl)
        assert "moe_gemm" not in fields
    _, fields, _ = engine_defaults("tensorrt-llm", MIXTRAL, H100, {"tp": 2}, wl)
    assert "moe_gemm" not in fields


def test_plan_field_checked_and_left_out_of_the_mapping_at_its_default():
    with pytest.raises(InputError) as e:
        ServingPlan(moe_gemm="deepgemm")
    assert e.value.field == "moe_gemm" and "cutlass" in str(e.value)
    assert "moe_gemm" not in ServingPlan().to_mapping()
    assert ServingPlan(moe_gemm="triton").to_mapping()["moe_gemm"] == "triton"


def _serve(tmp_path, config: str, *args: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "plan.yaml"
    cfg.write_text(config)
    return subprocess.run([sys.executable, "-m", "parasim", "serve", "-c", str(cfg), "--burst", "--requests", "8",
                           "--prompt-tokens", "16", "--output-tokens", "8", "--json", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_config_key(tmp_path):
    """A dense model has no experts: `moe_gemm: triton` is refused (exit 2, naming the field); a
    bad value likewise; on an MoE model the key reaches the plan."""
    dense = _serve(tmp_path, "moe_gemm: triton\n", "--model", "llama-3-8b", "--gpu", "h100-sxm")
    assert dense.returncode == 2 and "moe_gemm" in dense.stderr and "Traceback" not in dense.stderr
    bad = _serve(tmp_path, "moe_gemm: deepgemm\n", "--model", "mixtral-8x7b", "--gpu", "h100-sxm", "--tp", "2")
    assert bad.returncode == 2 and "moe_gemm" in bad.stderr and "Traceback" not in bad.stderr
    ok = _serve(tmp_path, "moe_gemm: triton\n", "--model", "mixtral-8x7b", "--gpu", "h100-sxm", "--tp", "2")
    assert ok.returncode == 0, ok.stderr
    assert '"moe_gemm": "triton"' in json.dumps(json.loads(ok.stdout)["inputs"])
