"""The LM head's main-gradient accumulation epilogue (training/step.py `lm_head_wgrad_accum_s`)
against hand formulas: Megatron-Core's output layer accumulates its weight gradient into the fp32
main_grad like every transformer layer, so its vocab/TP x hidden shard is read and written once
per micro-batch; FSDP2 (fresh gradient tensors) pays none."""

import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from parasim.cli.train_cmd import build
from parasim.specs.catalog import get_model
from parasim.training import TrainingPlan, simulate

LLAMA = get_model("llama-3-8b")
CLUSTERS = {n: build({"model": "llama-3-8b", "gpu": "h100-sxm", "gpus": n})[1] for n in (1, 4, 8)}


def _bw_ko():
    acc = CLUSTERS[8].accelerator
    return acc.hbm_bw_bytes_per_s * acc.efficiency.memory, acc.efficiency.kernel_overhead_s


def _run(model, gpus=8, **kw):
    base = dict(tp=1, pp=1, dp=gpus, micro_batch=1, global_batch=gpus, seq_len=2048)
    return simulate(model, CLUSTERS[gpus], TrainingPlan(**{**base, **kw}))


def test_nemotron4_15b_shard_by_hand():
    """Nemotron-4 15B at TP 4: 256,000 / 4 = 64,000 rows of 6,144, fp32 main gradient read and
    written: 64,000 x 6,144 x 8 B = 3.146 GB per micro-batch."""
    m = dataclasses.replace(LLAMA, vocab=256000, hidden=6144, heads=48, kv_heads=8, ffn_hidden=24576,
                            layers=2, tied_embeddings=False)
    bw, ko = _bw_ko()
    r = _run(m, tp=4, dp=2, global_batch=2, sequence_parallel=True)
    assert r.details["lm_head_wgrad_accum_s"] == pytest.approx(64000 * 6144 * 8 / bw + ko, rel=1e-12)
    # bf16 main gradients: half the bytes, the same one kernel
    r16 = _run(m, tp=4, dp=2, global_batch=2, sequence_parallel=True, grad_dtype="bf16")
    assert r16.details["lm_head_wgrad_accum_s"] - ko == pytest.approx((64000 * 6144 * 8 / bw) / 2, rel=1e-12)


def test_fsdp2_has_no_main_gradient():
    flat = _run(LLAMA, zero=3)
    fsdp2 = _run(LLAMA, zero=3, fsdp_layout="per_param")
    assert flat.details["lm_head_wgrad_accum_s"] > 0
    assert fsdp2.details["lm_head_wgrad_accum_s"] == 0.0


def test_on_the_critical_path_once_per_micro_batch():
    """One rank, no pipeline: the step grows by the epilogue once per micro-batch against the same
    plan whose only difference is this term (bf16 vs fp32 gradients changes the layers' epilogue
    too, so compare the sum of both epilogues' differences)."""
    a = _run(LLAMA, gpus=1, dp=1, global_batch=4)
    b = _run(LLAMA, gpus=1, dp=1, global_batch=4, grad_dtype="bf16")
    m = 4
    head = a.details["lm_head_wgrad_accum_s"] - b.details["lm_head_wgrad_accum_s"]
    layers = LLAMA.layers * (a.details["layer_fwd_wgrad_accum"] - b.details["layer_fwd_wgrad_accum"])
    assert head > 0
    assert a.breakdown["compute"] - b.breakdown["compute"] == pytest.approx(m * (head + layers), rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(vocab=st.integers(1, 400_000), tp=st.sampled_from([1, 2, 4, 8]))
def test_scales_with_the_local_vocabulary_shard(vocab, tp):
    m = dataclasses.replace(LLAMA, vocab=vocab, layers=1, tied_embeddings=False)
    bw, ko = _bw_ko()
    r = _run(m, tp=tp, dp=8 // tp, global_batch=8 // tp, sequence_parallel=tp > 1)
    shard = -(-vocab // tp)
    assert r.details["lm_head_wgrad_accum_s"] == pytest.approx(shard * LLAMA.hidden * 8 / bw + ko, rel=1e-9)
