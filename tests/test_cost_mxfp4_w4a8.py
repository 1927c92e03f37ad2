"""An MXFP4 checkpoint's experts run W4A8 on Blackwell (cost/quant.py `checkpoint_gemm_dtype`).

gpt-oss ships MXFP4 routed-expert weights and quantizes no activation; on B200 / GB200 the engines feed
those GEMMs MXFP8 activations (TensorRT-LLM's gpt-oss deployment guide: MXFP8 activations, MXFP4 MoE
weights). CUTLASS's "Blackwell SM100 GEMMs" table rates that MMA, `kind::mxf8f6f4.block_scale`, like the
plain FP8 one, `kind::f8f6f4` ("2x Hopper Fp8 Tensor Core"), and only `kind::mxf4` (both operands FP4)
twice as fast. So at a compute-bound batch the experts of the MXFP4 checkpoint take as long as those of a
per-tensor FP8 (W8A8) checkpoint of the same shapes, and longer than an NVFP4 (W4A4) one."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.layer import LayerCost, Sharding, op_time_s
from parasim.cost.quant import checkpoint_gemm_dtype
from parasim.cost.quant_bytes import quant_scope
from parasim.specs.catalog import accelerators, cluster_for, get_accelerator, get_model

OSS = get_model("gpt-oss-120b")
#: tokens of one prefill chunk large enough that every expert GEMM is compute-bound (256 rows per expert)
BIG = 8192


def _experts_s(model, weights: str, gpu: str, tokens: int = BIG) -> float:
    acc = get_accelerator(gpu)
    lc = LayerCost(model, cluster_for(acc, 1), Sharding(), weight_dtype=weights, quant=quant_scope(model, weights))
    return sum(op_time_s(o, acc) for o in lc.token_ops(tokens) if o.name.startswith("experts_"))


@pytest.mark.parametrize("gpu", ["b200", "gb200"])
def test_mxfp4_experts_take_the_fp8_mma_time_when_compute_bound(gpu):
    fp8_twin = replace(OSS, quantized_weights="fp8", weight_scales="per_tensor")
    nvfp4_twin = replace(OSS, weight_scales="nvfp4")
    mx = _experts_s(OSS, "fp4", gpu)
    assert mx == pytest.approx(_experts_s(fp8_twin, "fp8", gpu), rel=1e-9)
    assert _experts_s(nvfp4_twin, "fp4", gpu) < mx


def test_decode_still_reads_the_4_25_bit_weights():
    """A one-token step is bound by the expert weights it reads: the MXFP4 checkpoint's 4.25 bits, so it
    is faster than the FP8 twin's 8 bits even though both compute on the FP8 unit."""
    fp8_twin = replace(OSS, quantized_weights="fp8", weight_scales="per_tensor")
    assert _experts_s(OSS, "fp4", "b200", tokens=1) < _experts_s(fp8_twin, "fp8", "b200", tokens=1)


def test_other_paths_are_unchanged():
    assert checkpoint_gemm_dtype("fp4", "mxfp4", get_accelerator("h100-sxm")) == "bf16"  # W4A16 (no FP4 unit)
    assert checkpoint_gemm_dtype("fp4", "nvfp4", get_accelerator("b200")) == "fp4"  # NVFP4 stays W4A4
    assert checkpoint_gemm_dtype("fp8", "per_tensor", get_accelerator("b200")) == "fp8"
    assert checkpoint_gemm_dtype("fp4", "mxfp4", get_accelerator("b200")) == "fp8"


@settings(max_examples=60, deadline=None)
@given(gpu=st.sampled_from(sorted(accelerators())), weights=st.sampled_from(["fp4", "fp8", "int8", "int4"]),
       scales=st.sampled_from([None, "mxfp4", "nvfp4", "per_tensor", "block_128", "group_128"]))
def test_the_unit_is_one_the_part_has_and_never_fp4_for_mxfp4(gpu, weights, scales):
    acc = get_accelerator(gpu)
    unit = checkpoint_gemm_dtype(weights, scales, acc)
    if unit in ("fp8", "fp4", "int8"):  # a native path: the part must have the unit
        assert acc.has_unit(unit)
    if scales == "mxfp4" and acc.has_unit("fp8"):
        assert unit != "fp4"


def test_the_result_says_w4a8_on_blackwell_and_w4a16_on_hopper(cli):
    args = ("serve", "--model", "gpt-oss-120b", "--burst", "--requests", "4", "--prompt-tokens", "64",
            "--output-tokens", "4", "--json")
    b200 = cli(*args, "--gpu", "b200")
    assert b200.returncode == 0, b200.stderr
    p = json.loads(b200.stdout)["inputs"]["precision"]
    assert p["gemm_dtype"] == "fp8" and "W4A8" in p["how"]
    h100 = json.loads(cli(*args, "--gpu", "h100-sxm").stdout)["inputs"]["precision"]
    assert h100["gemm_dtype"] == "bf16" and h100["gemm"] == "weight-only"
