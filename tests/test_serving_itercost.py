"""IterationCost: the named breakdown is the iteration time's only arithmetic, and it matches
a roofline worked by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.cost.attn_shape import FA3
from parasim.cost.layer import LayerCost, Sharding
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

LLAMA = get_model("llama-3-8b")
MIXTRAL = get_model("mixtral-8x7b")
H100 = get_accelerator("h100-sxm")


def documented_parts() -> tuple[str, ...]:
    """The breakdown's parts as docs/serving.md lists them ("parts (`itercost.PARTS`: `a`, `b`, ...;"):
    read from the documentation, so the code's own PARTS tuple is checked, not restated."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text(encoding="utf-8")
    listed = re.search(r"parts \(`itercost\.PARTS`:(.*?);", text, re.DOTALL)
    assert listed, "docs/serving.md no longer lists the iteration time's parts"
    return tuple(re.findall(r"`(\w+)`", listed.group(1)))


PARTS = documented_parts()


def cost(model=LLAMA, *, gpus: int = 1, **kw) -> IterationCost:
    args = dict(tp=1, pp=1, weights="bf16", kv_dtype="bf16", act_dtype="bf16", overhead_s=2e-3) | kw
    return IterationCost(model, ClusterSpec(accelerator=H100, gpus=gpus), **args)


def test_decode_iteration_by_hand():
    """A decode step of 8 sequences with 1,000 tokens of context each, tp=1, pp=1, bf16: attention
    is the roofline of each layer's KV read, the token-only parts are the layer's own forward (no
    attention work) times the layers, and the time is the sum of the parts plus the overhead."""
    ic = cost()
    m, eff = LLAMA, H100.efficiency
    seqs, ctx = 8, 8 * 1000.0
    heads, kv_heads = m.heads, m.kv_heads
    kv_bytes = 2 * kv_heads * m.head_dim * 2.0  # K and V, bf16, one layer
    qkvo_bytes = (2 * heads * m.head_dim + 2 * kv_heads * m.head_dim + heads * m.head_dim) * 2.0
    flops = 2 * heads * 2 * m.head_dim * ctx
    attn = max(flops / (H100.peak("bf16") * eff.attention),
               (ctx * kv_bytes + seqs * qkvo_bytes) / (H100.hbm_bw_bytes_per_s * eff.memory)) + eff.kernel_overhead_s
    b = ic.breakdown(seqs, decode_seqs=seqs, decode_ctx=ctx, logits=seqs)
    assert b["attn_decode"] == pytest.approx(m.layers * attn, rel=1e-12)
    assert b["attn_prefill"] == 0.0
    layer = LayerCost(m, ClusterSpec(accelerator=H100, gpus=1), Sharding(tp=1))
    f = layer.forward(seqs)
    for name in ("attn_gemms", "mlp", "elementwise"):
        assert b[name] == pytest.approx(m.layers * f[name], rel=1e-12)
    assert b["moe"] == b["tp_comm"] == b["ep_comm"] == b["pp_p2p"] == b["act_quant"] == b["eager_host_wait"] == 0.0
    embedding = 2 * seqs * m.hidden * 2.0 / (H100.hbm_bw_bytes_per_s * eff.memory) + eff.kernel_overhead_s
    assert b["embedding"] == pytest.approx(embedding, rel=1e-12)
    assert b["overhead"] == 2e-3
    hand = sum(b[k] for k in PARTS)
    assert b["total"] == pytest.approx(hand, rel=1e-12)
    assert ic.time_s(seqs, 0.0, 0.0, seqs, ctx, seqs) == pytest.approx(hand, rel=1e-12)


def test_prefill_attention_by_hand():
    """A 100-token chunk after 300 cached tokens: pairs c*p + c(c+1)/2; the chunk reads the cached
    KV and writes its own Q, K, V, O. Its 100 query rows each add FlashAttention-3's causal
    per-row cost in key columns, and the catalog's rate is the law's at 16k non-causal
    (cost.attn_shape)."""
    ic = cost()
    m, eff = LLAMA, H100.efficiency
    c, p = 100, 300
    pairs = c * p + c * (c + 1) / 2
    law = FA3
    shape = (pairs + c * law.fwd_causal) / pairs * law.ref_seq / (law.ref_seq + law.fwd_full)
    flops = 2 * m.heads * 2 * m.head_dim * pairs * shape
    mem = (c * (2 * m.heads + 2 * m.kv_heads + m.heads) * m.head_dim * 2.0 + p * 2 * m.kv_heads * m.head_dim * 2.0)
    attn = max(flops / (H100.peak("bf16") * eff.attention), mem / (H100.hbm_bw_bytes_per_s * eff.memory))
    b = ic.breakdown(c, pairs, p, 0, 0.0, 1)
    assert b["attn_prefill"] == pytest.approx(m.layers * (attn + eff.kernel_overhead_s), rel=1e-12)
    assert b["attn_decode"] == 0.0


batches = hst.tuples(hst.integers(1, 700), hst.integers(0, 3000), hst.integers(0, 64), hst.integers(1, 2000))


@settings(max_examples=40, deadline=None)
@given(batches, hst.sampled_from([dict(), dict(tp=2, gpus=2), dict(pp=2, gpus=2),
                                  dict(weights="fp8", kv_dtype="fp8", act_quant="dynamic", tp=2, gpus=2),
                                  dict(eager_prefill_layer_s=2e-4, cuda_graph_max_batch=16),
                                  dict(model=MIXTRAL, tp=2, gpus=2)]))
def test_breakdown_parts_sum_to_the_iteration_time(batch, variant):
    """Any batch, any engine: every part is a non-negative number of seconds, the parts are the
    documented parts, and time_s is their sum."""
    chunk, cached, seqs, ctx_each = batch
    kw = dict(variant)
    ic = cost(kw.pop("model", LLAMA), **kw)
    pairs = chunk * cached + chunk * (chunk + 1) / 2
    args = (chunk + seqs, pairs, float(cached), seqs, float(seqs * ctx_each), seqs + 1)
    b = ic.breakdown(*args)
    assert list(b) == [*PARTS, "total"]
    assert all(v >= 0.0 for v in b.values())
    assert b["total"] == pytest.approx(sum(b[k] for k in PARTS), rel=1e-12)
    assert ic.time_s(*args) == pytest.approx(b["total"], rel=1e-12)
    decode_only = (seqs, 0.0, 0.0, seqs, float(seqs * ctx_each), seqs)
    if seqs:
        assert ic.time_s(*decode_only) == pytest.approx(ic.breakdown(*decode_only)["total"], rel=1e-12)


def test_eager_host_wait_is_what_the_host_adds():
    """An 8-token eager prefill: the GPU would finish long before the host has issued 32 layers of
    1 ms each, so the iteration lasts layers x 1 ms + overhead and the wait is the difference."""
    ic = cost(eager_prefill_layer_s=1e-3)
    b = ic.breakdown(8, 36.0, 0.0, 0, 0.0, 1)
    gpu = sum(b[k] for k in PARTS if k not in ("overhead", "eager_host_wait"))
    assert b["eager_host_wait"] == pytest.approx(LLAMA.layers * 1e-3 - gpu, rel=1e-9)
    assert b["total"] == pytest.approx(LLAMA.layers * 1e-3 + 2e-3, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(hst.floats(1e3, 2e8), hst.floats(1e3, 2e8), hst.sampled_from([2, 4, 8]), hst.booleans())
def test_tp_all_reduce_is_monotone_in_size_across_the_custom_kernel_limit(a, b, tp, custom):
    """The custom P2P kernel below its size limit, NCCL above: a larger buffer never reduces faster."""
    ic = cost(tp=tp, gpus=tp, custom_allreduce=custom)
    lo, hi = sorted((a, b))
    assert ic.tp_allreduce_s(lo) <= ic.tp_allreduce_s(hi)


@settings(max_examples=40, deadline=None)
@given(hst.integers(1, 1500), hst.integers(1, 600), hst.integers(16, 4000), hst.sampled_from([1, 2, 4]),
       hst.sampled_from([LLAMA, MIXTRAL]))
def test_more_tokens_never_make_an_iteration_cheaper(seqs, more, ctx_each, tp, model):
    """Decode batches of the same per-sequence context: adding sequences never shortens the
    iteration (wave and tile quantisation included: waves only grow with rows; an MoE layer's padded
    expert tiles only grow with tokens)."""
    ic = cost(model, tp=tp, gpus=tp)
    small = ic.time_s(seqs, 0.0, 0.0, seqs, float(seqs * ctx_each), seqs)
    big = ic.time_s(seqs + more, 0.0, 0.0, seqs + more, float((seqs + more) * ctx_each), seqs + more)
    assert small <= big * (1 + 1e-12)
    # a prefill chunk likewise
    assert ic.prefill_alone_s(seqs) <= ic.prefill_alone_s(seqs + more) * (1 + 1e-12)


@settings(max_examples=30, deadline=None)
@given(hst.integers(1, 2000), hst.integers(0, 4000), hst.floats(1.0, 4.0))
def test_more_bandwidth_is_never_slower(tokens, ctx_each, factor):
    """Scaling HBM and link bandwidth up never lengthens an iteration."""
    fast = H100.with_(hbm_bw_bytes_per_s=H100.hbm_bw_bytes_per_s * factor,
                      link_bw_bytes_per_s=H100.link_bw_bytes_per_s * factor)
    args = dict(tp=2, pp=1, weights="bf16", kv_dtype="bf16", act_dtype="bf16", overhead_s=2e-3)
    slow_ic = IterationCost(LLAMA, ClusterSpec(accelerator=H100, gpus=2), **args)
    fast_ic = IterationCost(LLAMA, ClusterSpec(accelerator=fast, gpus=2), **args)
    batch = (tokens, 0.0, 0.0, tokens, float(tokens * ctx_each), tokens)
    assert fast_ic.time_s(*batch) <= slow_ic.time_s(*batch) * (1 + 1e-12)
