"""Sliding-window attention layers (ModelSpec.sliding_window / sliding_layers): the layer pattern
from a config, the attention a windowed layer does, and the KV an engine keeps for it. Values are
derived by hand from the window's definition (a query sees at most `window` keys) and from the
engines' published KV rules (vLLM's hybrid KV cache manager, SGLang's SWA pool)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.cost.memory import kv_budget, kv_cache_bytes_per_token_per_gpu, sliding_kv_share
from parasim.errors import InputError
from parasim.serving import ServingPlan, Workload, simulate
from parasim.serving.itercost import IterationCost, windowed_pairs_bound
from parasim.serving.kvcache import request_window_blocks, unservable, window_blocks
from parasim.serving.resolve import resolve_plan
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.specs.hf_config import load_model_file
from parasim.specs.model import ModelSpec
from parasim.specs.model_mapping import model_from_mapping

H100 = get_accelerator("h100-sxm")
CLUSTER = ClusterSpec(accelerator=H100, gpus=1)
# a small llama-family model: 2 KV heads of 8 dims cache 2 x 2 x 8 x 2 = 64 bytes per token per layer (bf16)
TINY = ModelSpec(name="tiny", family="llama", layers=4, hidden=64, heads=4, kv_heads=2, head_dim=8,
                 ffn_hidden=128, vocab=1000, max_seq_len=4096)


# --- the layer pattern ------------------------------------------------------------------------------

def test_layer_counts():
    assert TINY.windowed_layers == 0 and TINY.full_attention_layers == 4
    every = TINY.with_(sliding_window=16)  # Mistral-7B v0.1: no count = every layer
    assert every.windowed_layers == 4 and every.full_attention_layers == 0
    half = TINY.with_(sliding_window=16, sliding_layers=2)
    assert half.windowed_layers == 2 and half.full_attention_layers == 2


def test_catalog_patterns():
    oss = get_model("gpt-oss-120b")  # layer_types 18 x [sliding_attention, full_attention], window 128
    assert (oss.sliding_window, oss.windowed_layers, oss.full_attention_layers) == (128, 18, 18)
    gemma = get_model("gemma-2-9b")  # even-indexed layers of 42 are local, window 4096
    assert (gemma.sliding_window, gemma.windowed_layers) == (4096, 21)
    mistral = get_model("mistral-7b")
    assert (mistral.sliding_window, mistral.windowed_layers) == (4096, 32)


@pytest.mark.parametrize("fields, key", [
    (dict(sliding_layers=2), "sliding_layers"),  # a count without a window
    (dict(sliding_window=16, sliding_layers=5), "sliding_layers"),  # more than the layers
    (dict(sliding_window=0), "sliding_window"),
    (dict(sliding_window=-3), "sliding_window"),
    (dict(sliding_window=2.5), "sliding_window"),
    (dict(sliding_window="128"), "sliding_window"),
    (dict(sliding_window=16, sliding_layers=-1), "sliding_layers"),
    (dict(sliding_window=16, sliding_layers=True), "sliding_layers"),
])
def test_hostile_pattern_names_the_field(fields, key):
    d = dict(family="llama", layers=4, hidden=64, heads=4, kv_heads=2, ffn_hidden=128, vocab=1000) | fields
    with pytest.raises(InputError) as e:
        model_from_mapping(d, where="case.model")
    assert e.value.field == f"case.model.{key}"


def _hf(tmp_path, **extra):
    cfg = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 64,
           "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
           "vocab_size": 1000, "max_position_embeddings": 4096, "sliding_window": 32} | extra
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return p


def test_hf_layer_types_count_the_sliding_layers(tmp_path):
    kinds = ["sliding_attention", "full_attention"] * 3
    m = load_model_file(_hf(tmp_path, layer_types=kinds))
    assert (m.sliding_window, m.windowed_layers) == (32, 3)
    m = load_model_file(_hf(tmp_path, layer_types=["full_attention"] * 6))
    assert m.sliding_window is None and m.windowed_layers == 0


def test_hf_sliding_window_pattern(tmp_path):
    # Gemma 3: layer i is global when (i + 1) % 6 == 0; of 6 layers one is global
    m = load_model_file(_hf(tmp_path, sliding_window_pattern=6))
    assert m.windowed_layers == 5
    m = load_model_file(_hf(tmp_path, sliding_window_pattern=2))
    assert m.windowed_layers == 3


def test_hf_window_without_pattern_is_every_layer(tmp_path):
    assert load_model_file(_hf(tmp_path)).windowed_layers == 6


@pytest.mark.parametrize("kinds", [["sliding_attention"] * 5, ["local"] * 6, "sliding_attention", [1] * 6])
def test_hf_hostile_layer_types(tmp_path, kinds):
    with pytest.raises(InputError, match="layer_types"):
        load_model_file(_hf(tmp_path, layer_types=kinds))


# --- attention ----------------------------------------------------------------------------------

def test_pairs_bound_by_hand():
    # one 10-token prompt, window 4: causal pairs 55; each query sees at most 4 keys, so at most 40
    # (exactly 4*5/2 + 6*4 = 34: the bound charges the first window's triangle as full rows)
    assert windowed_pairs_bound(55, 10, 4) == 40
    assert windowed_pairs_bound(55, 10, 10) == 55  # window = prompt: full attention
    assert windowed_pairs_bound(10 * 500, 10, 128) == 1280  # 10 queries deep in a long context
    # decode: 3 sequences with 1,000 cached tokens each read 128 each under a 128-token window
    assert windowed_pairs_bound(3000, 3, 128) == 384


def test_decode_reads_the_window_only_by_hand():
    """All layers windowed at 16 tokens: a decode of 2 sequences with 100 tokens each reads 2 x 16
    tokens of KV per layer, exactly what the full-attention model reads with 32 tokens of context."""
    full = IterationCost(TINY, CLUSTER, tp=1, pp=1, weights="bf16", kv_dtype="bf16", act_dtype="bf16", overhead_s=0.0)
    win = IterationCost(TINY.with_(sliding_window=16), CLUSTER, tp=1, pp=1, weights="bf16", kv_dtype="bf16",
                        act_dtype="bf16", overhead_s=0.0)
    assert full.layer.kv_bytes_per_token == 64  # 2 KV heads x 8 dims x (K, V) x 2 bytes
    assert win._attention_s(2, 0.0, 0.0, 2, 200.0) == full._attention_s(2, 0.0, 0.0, 2, 32.0)
    # half the layers windowed: the layer average of the two
    half = IterationCost(TINY.with_(sliding_window=16, sliding_layers=2), CLUSTER, tp=1, pp=1, weights="bf16",
                         kv_dtype="bf16", act_dtype="bf16", overhead_s=0.0)
    f, w = full._attention_s(2, 0.0, 0.0, 2, 200.0)[1], full._attention_s(2, 0.0, 0.0, 2, 32.0)[1]
    assert half._attention_s(2, 0.0, 0.0, 2, 200.0)[1] == pytest.approx((f + w) / 2, rel=1e-12)


def test_tensorrt_engine_flag_turns_the_window_off():
    m = TINY.with_(sliding_window=16)
    args = dict(tp=1, pp=1, weights="bf16", kv_dtype="bf16", act_dtype="bf16", overhead_s=0.0)
    full = IterationCost(TINY, CLUSTER, **args)
    off = IterationCost(m, CLUSTER, attention_window="full", **args)
    assert off.time_s(300, 300 * 301 / 2, 0.0, 4, 4000.0, 5) == full.time_s(300, 300 * 301 / 2, 0.0, 4, 4000.0, 5)


windows = hst.integers(min_value=1, max_value=5000)
batches = hst.tuples(hst.integers(min_value=0, max_value=2000), hst.integers(min_value=0, max_value=64),
                     hst.integers(min_value=1, max_value=3000))


@settings(max_examples=200, deadline=None)
@given(window=windows, sliding=hst.sampled_from([None, 1, 2, 3]), batch=batches)
def test_windowed_never_slower_and_equal_when_the_window_covers_the_context(window, sliding, batch):
    prefill, seqs, ctx_each = batch
    tokens = prefill + seqs
    pairs = prefill * (prefill + 1) / 2.0
    ctx = float(seqs * ctx_each)
    args = dict(tp=1, pp=1, weights="bf16", kv_dtype="bf16", act_dtype="bf16", overhead_s=0.0)
    if tokens == 0:
        return
    full = IterationCost(TINY, CLUSTER, **args).time_s(tokens, pairs, 0.0, seqs, ctx, max(1, seqs))
    win = IterationCost(TINY.with_(sliding_window=window, sliding_layers=sliding), CLUSTER, **args)
    t = win.time_s(tokens, pairs, 0.0, seqs, ctx, max(1, seqs))
    assert t <= full * (1 + 1e-12)
    if window >= max(prefill, ctx_each):
        assert t == pytest.approx(full, rel=1e-12)


# --- KV capacity ---------------------------------------------------------------------------------

def test_pool_bytes_per_token_by_hand():
    oss = get_model("gpt-oss-120b")  # 8 KV heads of 64 dims: 2 x 8 x 64 x 2 = 2,048 bytes per layer
    assert kv_cache_bytes_per_token_per_gpu(oss, tp=1, pp=1) == 36 * 2048
    window = sliding_kv_share(oss, "window")  # the pool counts the 18 full-attention layers
    assert kv_cache_bytes_per_token_per_gpu(oss, tp=1, pp=1, sliding_share=window) == 18 * 2048
    pool = sliding_kv_share(oss, "pool")  # SGLang: the SWA pool holds 0.8 of the full pool's tokens
    assert kv_cache_bytes_per_token_per_gpu(oss, tp=1, pp=1, sliding_share=pool) == pytest.approx((18 + 0.8 * 18) * 2048)
    assert sliding_kv_share(TINY, "window") == 1.0  # no sliding layers: nothing changes
    b_full = kv_budget(oss, H100, tp=1, pp=1, weights="fp4", kv_dtype="bf16", block_size=16,
                       gpu_memory_utilization=0.9, max_tokens=8192, max_batch=256)
    b_win = kv_budget(oss, H100, tp=1, pp=1, weights="fp4", kv_dtype="bf16", block_size=16,
                      gpu_memory_utilization=0.9, max_tokens=8192, max_batch=256, sliding_share=window)
    assert b_win.kv == b_full.kv and b_win.blocks in (2 * b_full.blocks, 2 * b_full.blocks + 1)


def test_window_blocks_by_hand():
    oss = get_model("gpt-oss-120b")
    # one sliding group per full group (18 / 18); a 128-token window in 16-token blocks keeps the
    # blocks of the last 127 tokens plus the current one: cdiv(127, 16) + 1 = 9
    assert window_blocks(oss, "window", 16) == (1, 9)
    assert window_blocks(oss, "full", 16) == (0, 0)
    assert window_blocks(TINY, "window", 16) == (0, 0)
    five = TINY.with_(layers=6, sliding_window=1024, sliding_layers=5)  # Gemma 3's 5 local : 1 global
    assert window_blocks(five, "window", 16) == (5, 65)
    assert request_window_blocks(100, 1, 9, 16) == 7  # a 100-token request never fills the window
    assert request_window_blocks(32100, 1, 9, 16) == 9
    np.testing.assert_array_equal(request_window_blocks(np.array([100, 32100]), 5, 65, 16), [5 * 7, 5 * 65])


def test_unservable_counts_the_window_blocks():
    P, O = np.array([3000]), np.array([100])
    # 3,099 cached tokens need 194 blocks; the window adds 9
    fits = dict(capacity_blocks=200, block=16, role="mixed", reserve_full=False, first_chunk_tokens=None)
    assert not unservable(P, O, **fits)[0]
    assert unservable(P, O, window=(1, 9), **fits)[0]


def _oss_like(layers=4):
    return TINY.with_(layers=layers, sliding_window=32, sliding_layers=layers // 2)


def test_window_kv_holds_more_long_requests():
    """With the window kept apart the same memory holds about twice the long requests: the pool
    counts the full-attention half's bytes, and each request adds only its window's blocks."""
    m = _oss_like()
    wl = Workload.from_columns(np.zeros(40), np.full(40, 3000), np.full(40, 50))
    base = ServingPlan(scheduler="vllm", gpu_memory_utilization=0.9)
    full = simulate(m, CLUSTER, base, wl, seed=1)
    win = simulate(m, CLUSTER, ServingPlan(scheduler="vllm", gpu_memory_utilization=0.9, sliding_kv="window"), wl,
                   seed=1)
    assert win.kv["kv_blocks"] in (2 * full.kv["kv_blocks"], 2 * full.kv["kv_blocks"] + 1)
    assert win.summary["completed"] == full.summary["completed"] == 40


def _util_for_blocks(model, blocks: int, plan: ServingPlan) -> float:
    """gpu_memory_utilization that leaves about `blocks` blocks of `plan`'s pool for `model`."""
    share = sliding_kv_share(model, plan.sliding_kv)
    b = kv_budget(model, H100, tp=1, pp=1, weights="bf16", kv_dtype="bf16", block_size=16, gpu_memory_utilization=1.0,
                  max_tokens=plan.token_budget, max_batch=plan.max_batch, sliding_share=share)
    fixed = b.usable - b.kv
    return (fixed + (blocks + 0.5) * 16 * b.kv_bytes_per_token) / H100.device_memory_bytes


@pytest.mark.parametrize("reservation", ["incremental", "full"])
@pytest.mark.parametrize("sched", ["vllm", "sarathi", "continuous"])
def test_window_kv_runs_under_pressure(sched, reservation):
    """A small pool under a burst: every request completes (preempted and recomputed where the
    blocks run out), with the window blocks booked and freed along the way."""
    m = _oss_like()
    rng = np.random.default_rng(4)
    wl = Workload.from_columns(np.zeros(60), rng.integers(20, 400, 60), rng.integers(1, 80, 60))
    plan = ServingPlan(scheduler=sched, sliding_kv="window", kv_reservation=reservation, token_budget=512,
                       max_batch=32)
    plan = ServingPlan(scheduler=sched, sliding_kv="window", kv_reservation=reservation, token_budget=512,
                       max_batch=32, gpu_memory_utilization=_util_for_blocks(m, 60, plan))
    res = simulate(m, CLUSTER, plan, wl, seed=1)
    assert res.feasible and res.kv["kv_blocks"] == 60
    assert res.summary["completed"] + res.summary["dropped"] == 60
    if reservation == "incremental":
        assert res.summary["preemptions"] > 0


@pytest.mark.parametrize("plan, field", [
    (dict(attention_window="sliding"), "attention_window"),
    (dict(sliding_kv="half"), "sliding_kv"),
    (dict(sliding_kv=3), "sliding_kv"),
])
def test_hostile_plan_values(plan, field):
    with pytest.raises(InputError) as e:
        ServingPlan(**plan)
    assert e.value.field == field


@pytest.mark.parametrize("plan, model, field", [
    (dict(sliding_kv="window"), TINY, "sliding_kv"),  # no sliding layers
    (dict(attention_window="full"), TINY, "attention_window"),
    (dict(sliding_kv="window"), TINY.with_(sliding_window=16), "sliding_kv"),  # every layer slides
])
def test_plans_refused_for_models_they_cannot_apply_to(plan, model, field):
    with pytest.raises(InputError) as e:
        resolve_plan(model, H100, ServingPlan(**plan))
    assert e.value.field == field


def test_window_with_migration_refused():
    with pytest.raises(InputError) as e:
        ServingPlan(sliding_kv="window", migration="llumnix", replicas=2)
    assert e.value.field == "sliding_kv"


def test_cli_bad_sliding_kv_exits_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sliding_kv: window\n")
    r = subprocess.run([sys.executable, "-m", "parasim", "serve", "--model", "llama-3-8b", "--gpu", "h100-sxm",
                        "--rate", "5", "--requests", "10", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 2 and "sliding_kv" in r.stderr and "Traceback" not in r.stderr


def test_reported_tokens_split_over_the_kv_cache_groups():
    """vLLM logs "GPU KV cache size" as num_blocks // len(kv_cache_groups) x block_size: gpt-oss's
    pool of full-attention blocks serves two groups (18 full, 18 sliding layers)."""
    oss = get_model("gpt-oss-120b")
    b = kv_budget(oss, H100, tp=1, pp=1, weights="fp4", kv_dtype="bf16", block_size=16, gpu_memory_utilization=0.9,
                  max_tokens=8192, max_batch=256, sliding_share=sliding_kv_share(oss, "window"))
    assert b.groups == 2 and b.reported_tokens == b.blocks // 2 * 16
    assert b.to_dict()["kv_tokens_reported"] == b.reported_tokens
    full = kv_budget(oss, H100, tp=1, pp=1, weights="fp4", kv_dtype="bf16", block_size=16, gpu_memory_utilization=0.9,
                     max_tokens=8192, max_batch=256)
    assert full.groups == 1 and full.reported_tokens == full.tokens and "kv_tokens_reported" not in full.to_dict()


def test_window_kv_runs_leave_the_compiled_loop(monkeypatch):
    """The compiled loop does not book window blocks: PARASIM_FASTPATH=1 refuses such a run,
    naming why, and auto runs it in the Python engine."""
    wl = Workload.from_columns(np.zeros(5), np.full(5, 300), np.full(5, 20))
    plan = ServingPlan(scheduler="vllm", sliding_kv="window")
    monkeypatch.setenv("PARASIM_FASTPATH", "1")
    with pytest.raises(InputError, match="PARASIM_FASTPATH.*sliding_kv window"):
        simulate(_oss_like(), CLUSTER, plan, wl, seed=1)
    monkeypatch.setenv("PARASIM_FASTPATH", "auto")
    assert simulate(_oss_like(), CLUSTER, plan, wl, seed=1).summary["completed"] == 5
