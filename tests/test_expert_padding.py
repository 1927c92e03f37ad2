"""Routed experts padded to vLLM's Marlin MXFP4 MoE tile (cost/expert_padding.py, engines/vllm.py).

vLLM's `Mxfp4MoEMethod.create_weights` allocates each expert at hidden rounded up to 256 and the
intermediate size per partition rounded up to 128 for the Marlin backend ("the moe marlin kernel
requires that for each linear n % 256 == 0 and k % 128 == 0"). gpt-oss-120b (36 layers, 128
experts, hidden = intermediate = 2,880, three matrices per expert, MXFP4 = 4.25 bits per element
with its E8M0 scales) thus loads 2,944 x 3,072 matrices. Published: vLLM 0.10.1 on one H100 with
Marlin printed "Model loading took 65.9651 GiB" (vllm-project/vllm issue #23278). The Triton backend on
Hopper (vLLM >= 0.11.1, `triton_hopper`) keeps the loaded E8M0 scales next to their swizzled, row-padded
copy and holds the expert biases in float32: 0.14.1 printed 64.38 GiB (issue #33155)."""

from __future__ import annotations

import pytest

from parasim.cost.expert_padding import expert_padding_bytes_per_gpu
from parasim.cost.memory import weight_bytes_per_gpu
from parasim.engines.profile import EngineContext
from parasim.engines.vllm import VllmProfile
from parasim.errors import InputError
from parasim.serving import ServingPlan
from parasim.specs.catalog import get_accelerator, get_model

GIB = 1024 ** 3
OSS = get_model("gpt-oss-120b")


def _hand_marlin_extra(tp: int = 1) -> float:
    part = 2880 // tp
    padded_part = -(-part // 128) * 128
    per_expert = 3 * (3072 * padded_part - 2880 * part)
    return 36 * 128 * per_expert * 4.25 / 8


def test_marlin_padding_by_hand():
    got = expert_padding_bytes_per_gpu(OSS, tp=1, pp=1, ep=1, weights="fp4", padding="marlin")
    assert got == pytest.approx(_hand_marlin_extra(), rel=1e-9)
    # TP 2: 1,440 per partition pads to 1,536
    got2 = expert_padding_bytes_per_gpu(OSS, tp=2, pp=1, ep=1, weights="fp4", padding="marlin")
    assert got2 == pytest.approx(_hand_marlin_extra(tp=2), rel=1e-9)


def test_published_marlin_load_within_one_percent():
    total = weight_bytes_per_gpu(OSS, tp=1, weights="fp4") + expert_padding_bytes_per_gpu(
        OSS, tp=1, pp=1, ep=1, weights="fp4", padding="marlin")
    assert total / GIB == pytest.approx(65.9651, rel=0.01)


def test_no_padding_cases():
    assert expert_padding_bytes_per_gpu(OSS, tp=1, pp=1, ep=1, weights="fp4", padding="none") == 0.0
    dense = get_model("llama-3-8b")
    assert expert_padding_bytes_per_gpu(dense, tp=1, pp=1, ep=1, weights="bf16", padding="marlin") == 0.0


def test_bad_value_names_the_field():
    with pytest.raises(InputError) as e:
        ServingPlan(expert_padding="tiles")
    assert e.value.field == "expert_padding"


def _vllm_padding(software: str, gpu: str, source: str = "") -> str | None:
    ctx = EngineContext(software=software, source=source, model=OSS, acc=get_accelerator(gpu), stated={},
                        kw={"tp": 1, "pp": 1, "replicas": 1, "weights": "fp4", "kv_dtype": None},
                        workload=lambda: None)
    VllmProfile().apply(ctx)
    return ctx.kw.get("expert_padding")


def test_vllm_backend_by_gpu_and_release():
    assert _vllm_padding("vllm 0.11.0", "a100-sxm-80gb") == "marlin"  # no Triton MXFP4 below SM 9.0
    assert _vllm_padding("vllm 0.10.1", "h100-sxm") == "marlin"  # issue #23278's log
    assert _vllm_padding("vllm 0.14.1", "h100-sxm") == "triton_hopper"  # issue #33155: Triton, swizzled
    assert _vllm_padding("vllm 0.11.0", "h100-sxm") is None  # torch 2.8.0: strided layout, no swizzle
    assert _vllm_padding("vllm", "h100-sxm") is None  # release unknown: nothing assumed
    assert _vllm_padding("vllm 0.23.1", "h100-sxm") == "triton_hopper"
    assert _vllm_padding("vllm 0.24.0", "h100-sxm") is None  # PR #46549 frees the loaded scales
    assert _vllm_padding("vllm 0.14.1", "h100-sxm", "VLLM_MXFP4_USE_MARLIN=1") == "marlin"


def test_padding_leaves_less_kv():
    from parasim.serving.simulate import plan_pools
    from parasim.specs.cluster import ClusterSpec

    cluster = ClusterSpec(accelerator=get_accelerator("a100-sxm-80gb"), gpus=1)
    base = dict(tp=1, weights="fp4", token_budget=8192, max_batch=256)
    plain = plan_pools(OSS, cluster, ServingPlan(**base))[0][0].kvb
    padded = plan_pools(OSS, cluster, ServingPlan(**base, expert_padding="marlin"))[0][0].kvb
    extra = _hand_marlin_extra()
    assert padded.weights - plain.weights == pytest.approx(extra, rel=1e-9)
    assert plain.kv - padded.kv == pytest.approx(extra, rel=1e-9)


def test_padding_a_dense_model_is_refused_naming_the_field(tmp_path):
    """Padding routed experts on a model without experts would change nothing: the plan is refused
    (exit 2, naming the field) rather than the setting silently ignored."""
    from tests.conftest import serve_config
    r = serve_config(tmp_path, "model: llama-3-8b\ngpu: h100-sxm\nexpert_padding: marlin\nrequests: 10\nrate: 1\n")
    assert r.returncode == 2 and "expert_padding" in r.stderr and "no experts" in r.stderr
    assert "Traceback" not in r.stderr


def _hand_triton_hopper_extra(tp: int = 1) -> float:
    """By hand from vLLM's mxfp4.py / triton_kernels' hopper_scale.py: intermediate per partition
    rounded up to 64; the swizzled scale copy (w13: 2 x I' rows by 2,880 / 32 = 90 columns; w2:
    2,880 rows by I' / 32 columns; rows up to 256, columns up to 2) held next to the loaded scales;
    biases (2 x I' + 2,880 per expert) in float32 where the checkpoint count charged 4.25 bits."""
    part = 2880 // tp
    ip = -(-part // 64) * 64
    up = lambda n, m: -(-n // m) * m
    weights_pad = 3 * 2880 * (ip - part) * 4.25 / 8
    scales = up(2 * ip, 256) * up(90, 2) + up(2880, 256) * up(ip // 32, 2)
    biases = (2 * ip + 2880) * 4 - (2 * part + 2880) * 4.25 / 8
    return 36 * 128 * (weights_pad + scales + biases)


def test_triton_hopper_by_hand():
    for tp in (1, 2, 4):
        got = expert_padding_bytes_per_gpu(OSS, tp=tp, pp=1, ep=1, weights="fp4", padding="triton_hopper")
        assert got == pytest.approx(_hand_triton_hopper_extra(tp), rel=1e-9)
    # TP 1: no weight padding; the scale copy is 36 x 128 x (5,888 x 90 + 3,072 x 90) bytes
    one = expert_padding_bytes_per_gpu(OSS, tp=1, pp=1, ep=1, weights="fp4", padding="triton_hopper")
    assert one > 36 * 128 * (5888 * 90 + 3072 * 90)


def test_published_triton_hopper_load_within_one_percent():
    """vLLM 0.14.1, one H100, 'Using Triton backend': 'Model loading took 64.38 GiB' (issue #33155)."""
    total = weight_bytes_per_gpu(OSS, tp=1, weights="fp4") + expert_padding_bytes_per_gpu(
        OSS, tp=1, pp=1, ep=1, weights="fp4", padding="triton_hopper")
    assert total / GIB == pytest.approx(64.38, rel=0.01)
    # the checkpoint's tensors alone are ~5.7 % short
    assert weight_bytes_per_gpu(OSS, tp=1, weights="fp4") / GIB < 64.38 * 0.95


def test_triton_hopper_on_a_non_mxfp4_model_pads_only():
    """A model without MXFP4 expert scales keeps only the intermediate rounding (no scale copy)."""
    q = get_model("qwen3-30b-a3b")
    got = expert_padding_bytes_per_gpu(q, tp=1, pp=1, ep=1, weights="bf16", padding="triton_hopper")
    part = q.moe_ffn_hidden
    ip = -(-part // 64) * 64
    n_layers = q.layers - q.dense_layers
    assert got == pytest.approx(n_layers * q.experts * q.mlp_matrices * q.hidden * (ip - part) * 2.0, rel=1e-9)


def test_triton_hopper_leaves_less_kv_and_a_stated_value_wins():
    from parasim.serving.simulate import plan_pools
    from parasim.specs.cluster import ClusterSpec

    cluster = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=1)
    base = dict(tp=1, weights="fp4", token_budget=8192, max_batch=256)
    plain = plan_pools(OSS, cluster, ServingPlan(**base))[0][0].kvb
    held = plan_pools(OSS, cluster, ServingPlan(**base, expert_padding="triton_hopper"))[0][0].kvb
    assert held.weights - plain.weights == pytest.approx(_hand_triton_hopper_extra(), rel=1e-9)
    assert plain.kv - held.kv == pytest.approx(_hand_triton_hopper_extra(), rel=1e-9)
    ctx = EngineContext(software="vllm 0.14.1", source="", model=OSS, acc=get_accelerator("h100-sxm"),
                        stated={"expert_padding": "none"},
                        kw={"tp": 1, "pp": 1, "replicas": 1, "weights": "fp4", "kv_dtype": None},
                        workload=lambda: None)
    VllmProfile().apply(ctx)
    assert ctx.kw.get("expert_padding") is None


@pytest.mark.parametrize("bad", ["triton", "TRITON_HOPPER", "triton-hopper", "triton_hopper "])
def test_near_miss_values_are_refused(bad):
    with pytest.raises(InputError) as e:
        ServingPlan(expert_padding=bad)
    assert e.value.field == "expert_padding" and "triton_hopper" in str(e.value)
