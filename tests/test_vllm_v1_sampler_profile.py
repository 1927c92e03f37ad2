"""vLLM V1's KV pool is what its start-up profile leaves, and that profile ends with a dummy sampler
pass (`ServingPlan.sampler_profile`, `cost.memory.vllm_v1_sampler_profile_bytes`).

Hand figures from the vLLM source's tensor shapes (vllm/v1/worker/gpu_model_runner.py
`_dummy_sampler_run`, vllm/v1/sample/sampler.py, vllm/v1/sample/ops/topk_topp_sampler.py
`apply_top_k_top_p`, main at 0.10.1 / 0.11.0 / 0.14): with R rows and V vocabulary entries the
live tensors at the `scatter` are the bf16 logits [R, V], their fp32 copy [R, V], `sort`'s values
(fp32) and indices (int64) [R, V], the boolean top-k mask [R, V], the fp32 softmax [R, V] (the
cumsum is written into it), the boolean top-p mask [R, V] and the scatter's fp32 output [R, V]
(PyTorch's native path); FlashInfer's `top_k_top_p_sampling_from_logits` (top_k_first) keeps the
bf16 logits, the fp32 copy, the top-k-masked fp32 logits and their fp32 softmax.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.memory import activation_workspace_bytes, kv_budget, vllm_v1_sampler_profile_bytes
from parasim.engines.apply import engine_defaults
from parasim.errors import InputError
from parasim.serving import ServingPlan, generate
from parasim.specs.catalog import get_accelerator, get_model

H100 = get_accelerator("h100-sxm")
GPT_OSS = get_model("gpt-oss-120b")
QWEN = get_model("qwen3-235b-a22b")
GIB = 1024 ** 3


def _hand_bytes(rows: int, vocab: int, path: str = "native") -> int:
    """Bytes of the [rows, vocab] tensors listed in the module docstring."""
    bf16, fp32, int64, boolean = 2, 4, 8, 1
    if path == "flashinfer":
        return rows * vocab * (bf16 + fp32 + fp32 + fp32)
    return rows * vocab * (bf16 + fp32 + fp32 + int64 + boolean + fp32 + boolean + fp32)


def test_sampler_peak_matches_the_tensor_shapes():
    # gpt-oss-120b (vocab 201,088) at the API server's 1,024 sequences on an H100
    assert vllm_v1_sampler_profile_bytes(GPT_OSS, rows=1024) == _hand_bytes(1024, 201088)
    assert _hand_bytes(1024, 201088) / GIB == pytest.approx(5.3696, abs=1e-4)
    # Qwen3-235B (vocab 151,936): every TP rank holds the whole vocabulary (V1 all-gathers)
    assert vllm_v1_sampler_profile_bytes(QWEN, rows=1024) == _hand_bytes(1024, 151936)
    assert vllm_v1_sampler_profile_bytes(QWEN, rows=256, path="flashinfer") == _hand_bytes(256, 151936, "flashinfer")


def _budget(model, *, max_batch, max_tokens, sampler, tp=1, weights="bf16"):
    sampler = {True: "native", False: "none"}.get(sampler, sampler)
    return kv_budget(model, H100, tp=tp, pp=1, weights=weights, kv_dtype="bf16", block_size=16,
                     gpu_memory_utilization=0.9, max_tokens=max_tokens, max_batch=max_batch, sampler_profile=sampler)


def test_v1_pool_is_left_after_the_larger_of_forward_and_sampler():
    m = QWEN
    plain = _budget(m, max_batch=1024, max_tokens=8192, sampler=False, tp=4, weights="fp8")
    v1 = _budget(m, max_batch=1024, max_tokens=8192, sampler=True, tp=4, weights="fp8")
    forward = activation_workspace_bytes(m, tp=4, tokens=8192, logit_rows=0, act_bytes=2.0)
    sampler = _hand_bytes(1024, 151936)
    assert sampler > forward  # the sampler pass is the profile's peak here
    assert v1.activations == sampler
    # the old charge was the forward plus one fp32 [1024, vocab/tp] logits tensor
    assert plain.activations == pytest.approx(forward + 1024 * 151936 / 4 * 4)
    assert plain.kv - v1.kv == pytest.approx(sampler - plain.activations)


def test_rows_are_capped_by_the_token_budget():
    # _dummy_run: num_reqs = min(num_tokens, max_num_seqs)
    b = _budget(GPT_OSS, max_batch=1024, max_tokens=256, sampler=True)
    assert b.activations == max(activation_workspace_bytes(GPT_OSS, tp=1, tokens=256, logit_rows=0, act_bytes=2.0),
                                _hand_bytes(256, 201088))


@pytest.mark.parametrize(("engine", "gpu", "path"), [
    ("vllm==0.10.1", "h100-sxm", "flashinfer"),  # FlashInfer's sampler on by default when installed
    ("vllm==0.11.0", "h100-sxm", "flashinfer"),
    ("vllm==0.11.1", "h100-sxm", "native"),  # PR #26859: FlashInfer's sampler opt-in
    ("vllm==0.14.1", "h100-sxm", "native"),
    ("vllm", "h100-sxm", "native"),  # release not named: the current defaults
    ("vllm==0.10.1", "mi300x", "native"),  # not CUDA: forward_native
    ("vllm==0.6.5", "h100-sxm", None),  # V0: not this profile
    ("sglang", "h100-sxm", None),
])
def test_which_engines_size_the_pool_after_a_sampler_pass(engine, gpu, path):
    wl = generate(requests=4, burst=True, prompt_tokens=128, output_tokens=16, seed=1)
    _, fields, _ = engine_defaults(engine, get_model("llama-3-8b"), get_accelerator(gpu), {}, wl)
    assert fields.get("sampler_profile") == path


@pytest.mark.parametrize(("software", "text", "gpu", "path"), [
    ("vllm 0.10.1", "docker run ... -e VLLM_USE_FLASHINFER_SAMPLER=0 vllm/vllm-openai", "h100-sxm", "native"),
    ("vllm 0.14.1", "VLLM_USE_FLASHINFER_SAMPLER=1 vllm serve", "h100-sxm", "flashinfer"),
    ("vllm 0.10.1", "WARNING FlashInfer is not available. Falling back to ...", "h100-sxm", "native"),
    ("vllm 0.10.1", "VLLM_USE_FLASHINFER_SAMPLER=1", "mi300x", "native"),  # ROCm: forward_native whatever the flag
])
def test_a_stated_sampler_wins(software, text, gpu, path):
    from parasim.engines.vllm import _sampler_path
    assert _sampler_path(software, get_accelerator(gpu), text) == path


@pytest.mark.parametrize("bad", ["yes", 1, 0.5, [True], True, "Native"])
def test_non_bool_sampler_profile_is_rejected(bad):
    with pytest.raises(InputError) as e:
        ServingPlan(sampler_profile=bad)
    assert "sampler_profile" in str(e.value)


@settings(max_examples=60, deadline=None)
@given(seqs=st.integers(1, 4096), more=st.integers(0, 4096), tokens=st.integers(1, 1 << 16),
       vocab=st.integers(1000, 300000), extra_vocab=st.integers(0, 200000))
def test_pool_never_grows_with_max_num_seqs_or_vocabulary(seqs, more, tokens, vocab, extra_vocab):
    m = dataclasses.replace(get_model("llama-3-8b"), vocab=vocab)
    bigger = dataclasses.replace(m, vocab=vocab + extra_vocab)
    base = _budget(m, max_batch=seqs, max_tokens=tokens, sampler=True).kv
    assert _budget(m, max_batch=seqs + more, max_tokens=tokens, sampler=True).kv <= base
    assert _budget(bigger, max_batch=seqs, max_tokens=tokens, sampler=True).kv <= base
