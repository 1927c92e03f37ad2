"""TensorRT-LLM's PyTorch backend quantizes some linear inputs in kernels of their own (plan.ACT_QUANT
`norms_act` / `act`; engines.trtllm.pytorch_act_quant): hand-computed costs, the profile's choice by TP,
width, format and release, and refusal of bad modes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.engines.trtllm import pytorch_act_quant
from parasim.errors import InputError
from parasim.serving import ServingPlan, generate, simulate
from parasim.serving.itercost import IterationCost
from parasim.serving.plan import ACT_QUANT
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec
from tests.test_serving_fastloop import both, same

B200 = get_accelerator("b200")
H100 = get_accelerator("h100-sxm")
# Llama-3.3-70B's shapes, as the TensorRT-LLM perf-overview cases write them out
L70 = ModelSpec(name="llama-70b-shape", family="llama", layers=80, hidden=8192, heads=64, kv_heads=8, head_dim=128,
                ffn_hidden=28672, vocab=128256)
L405 = ModelSpec(name="llama-405b-shape", family="llama", layers=126, hidden=16384, heads=128, kv_heads=8, head_dim=128,
                 ffn_hidden=53248, vocab=128256)
L8 = ModelSpec(name="llama-8b-shape", family="llama", layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128,
               ffn_hidden=14336, vocab=128256)


def _cost(model, acc, gpus, weights, mode, tp):
    return IterationCost(model, ClusterSpec(accelerator=acc, gpus=gpus), tp=tp, pp=1, weights=weights,
                         kv_dtype="fp8", act_dtype="bf16", overhead_s=0.0, act_quant=mode)


def test_nvfp4_norms_act_by_hand_on_b200():
    """TP 1, NVFP4: QKV and gate/up inputs (8,192 wide) and the down input (28,672) each read once at
    2 bytes and written at 4.5 bits (E2M1 + one E4M3 scale per 16 = 0.5625 B), three kernel launches."""
    t = 2048
    per_layer = (t * (8192 + 8192 + 28672) * (2 + 0.5625) / (8.0e12 * 0.815) + 3 * 4.0e-6)
    assert per_layer == pytest.approx(48.26e-6, rel=1e-3)  # 236 MB per layer at 6.52 TB/s + 12 us
    cost = _cost(L70, B200, 1, "fp4", "norms_act", 1)
    step = (t, 0.0, 0.0, t, t * 192.0, t)
    assert cost.breakdown(*step)["act_quant"] == pytest.approx(80 * per_layer, rel=1e-9)
    fused = _cost(L70, B200, 1, "fp4", "fused", 1)
    assert cost.time_s(*step) - fused.time_s(*step) == pytest.approx(80 * per_layer, rel=1e-9)


def test_norms_mode_quantizes_the_qkv_and_gate_up_inputs():
    """FP8 at TP 1: the two hidden-wide inputs after the RMSNorms, one byte written each, two kernels."""
    t = 1024
    per_layer = t * (8192 + 8192) * (2 + 1) / (H100.hbm_bw_bytes_per_s * H100.efficiency.memory) + 2 * 4.0e-6
    cost = _cost(L70, H100, 1, "fp8", "norms", 1)
    assert cost.breakdown(t, 0.0, 0.0, t, t * 100.0, t)["act_quant"] == pytest.approx(80 * per_layer, rel=1e-9)


def test_act_mode_quantizes_only_the_down_input():
    """TP 4: the down input is ffn / 4 wide; one kernel. FP8 writes one byte per element."""
    t = 512
    per_layer = t * (53248 // 4) * (2 + 1) / (H100.hbm_bw_bytes_per_s * H100.efficiency.memory) + 4.0e-6
    cost = _cost(L405, H100, 4, "fp8", "act", 4)
    assert cost.breakdown(t, 0.0, 0.0, t, t * 100.0, t)["act_quant"] == pytest.approx(126 * per_layer, rel=1e-9)


def test_sixteen_bit_gemms_never_pay():
    c16 = IterationCost(L70, ClusterSpec(accelerator=B200, gpus=1), tp=1, pp=1, weights="bf16", kv_dtype="bf16",
                        act_dtype="bf16", overhead_s=0.0, act_quant="norms_act")
    assert c16.breakdown(256, 0.0, 0.0, 256, 256 * 100.0, 256)["act_quant"] == 0.0


@pytest.mark.parametrize("model,acc,weights,tp,want", [
    (L70, B200, "fp4", 1, "norms_act"),   # no all-reduce at TP 1
    (L405, B200, "fp4", 4, "act"),        # norm+quantize fused into the TP all-reduce
    (L8, H100, "fp8", 2, "norms"),        # hidden 4096: the Llama layer's fusion is off; FP8 SwiGLU quantizes
    (L70, H100, "fp8", 1, "norms"),
    (L70, H100, "fp8", 2, None),          # FP8 at TP > 1: norms fused into the all-reduce, SwiGLU quantizes
    (L8, B200, "fp4", 2, "norms_act"),
    (L70, B200, "bf16", 1, None),         # 16-bit GEMMs quantize nothing
    (L70, H100, "fp4", 1, None),          # no FP4 unit: weight-only, activations stay 16-bit
])
def test_profile_choice(model, acc, weights, tp, want):
    got = pytorch_act_quant(model, acc, weights=weights, tp=tp)
    assert (got[0] if got else None) == want


def test_moe_models_are_left_fused():
    assert pytorch_act_quant(get_model("qwen3-30b-a3b"), B200, weights="fp4", tp=1) is None


def test_case_profile_sets_it_for_the_pytorch_backend_only(tmp_path):
    from parasim.specs.validation_case import load_cases
    from parasim.validation.serving import case_plan
    import yaml
    base = {"kind": "serving", "model": {"family": "llama", "layers": 80, "hidden": 8192, "heads": 64,
                                         "kv_heads": 8, "ffn_hidden": 28672, "vocab": 128256},
            "plan": {"tp": 1, "weights": "fp8", "kv_cache": "fp8"},
            "workload": {"requests": 10, "prompt_tokens": 128, "output_tokens": 128, "arrival": "burst"},
            "measured": {"output_tokens_per_s": 1.0}}
    cases = [dict(base, id="torch", software="tensorrt-llm 1.0 (pytorch backend)", source="trtllm-bench",
                  hardware={"accelerator": "h200-sxm", "gpus": 1}),
             dict(base, id="engine", software="tensorrt-llm 0.17", source="trtllm-bench",
                  hardware={"accelerator": "h200-sxm", "gpus": 1})]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"cases": cases}))
    torch_case, engine_case = load_cases(p)
    plan, choices, _ = case_plan(torch_case)
    assert plan.act_quant == "norms" and any("QKV and gate/up" in c for c in choices)
    assert case_plan(engine_case)[0].act_quant == "fused"  # TensorRT engines: not this mechanism


@settings(max_examples=60, deadline=None)
@given(mode=hst.text(min_size=0, max_size=12))
def test_unknown_modes_are_refused_naming_the_field(mode):
    if mode in ACT_QUANT:
        return
    with pytest.raises(InputError) as e:
        ServingPlan(weights="fp4", act_quant=mode)
    assert e.value.field == "act_quant"
    if mode.strip():  # an empty string is refused as such; any other text with the allowed modes
        assert "norms_act" in e.value.message


@pytest.mark.parametrize("mode", ["norms_act", "act", "norms"])
def test_new_modes_with_16_bit_weights_are_refused(mode):
    with pytest.raises(InputError) as e:
        simulate(L70, ClusterSpec(accelerator=B200, gpus=1), ServingPlan(act_quant=mode), generate(requests=2, rate=1.0))
    assert e.value.field == "act_quant"


@pytest.mark.parametrize("mode", ["norms_act", "act"])
def test_compiled_loop_equals_python_engine(mode):
    wl = generate(requests=60, rate=20.0, seed=5, prompt_tokens=300, output_tokens=40)
    slow, fast, ran = both(ServingPlan(scheduler="continuous", weights="fp8", kv_dtype="fp8", act_quant=mode), wl)
    assert ran
    same(slow, fast)
