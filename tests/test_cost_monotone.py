"""Invariants of the roofline: more FLOP/s or more bandwidth never makes a layer slower; more
tokens never make it faster; energy lies between idle and TDP."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_accelerator, make_cluster
from parasim.cost.energy import cost_usd, energy_j, power_w
from parasim.cost.layer import LayerCost, Sharding
from parasim.specs.catalog import get_model

MODELS = ["llama-3-8b", "mixtral-8x7b", "deepseek-v3", "gpt-3-175b"]
batch = st.fixed_dictionaries({
    "tokens": st.integers(1, 8192), "pairs": st.floats(0, 5e7), "kv": st.floats(0, 1e6),
    "dseqs": st.integers(0, 256), "ctx": st.floats(0, 1e7)})


def _time(model, acc, tp, b):
    lc = LayerCost(get_model(model), make_cluster(8, accelerator=acc), Sharding(tp=tp))
    dseqs = min(b["dseqs"], b["tokens"])
    return lc.forward(b["tokens"], b["pairs"], b["kv"], dseqs, b["ctx"] if dseqs else 0.0)["total"]


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), tp=st.sampled_from([1, 2, 8]), b=batch,
       flops_x=st.floats(1.0, 4.0), hbm_x=st.floats(1.0, 4.0), link_x=st.floats(1.0, 4.0))
def test_more_hardware_never_slower(model, tp, b, flops_x, hbm_x, link_x):
    base = make_accelerator()
    better = base.with_(peak_flops_per_s={k: v * flops_x for k, v in base.peak_flops_per_s.items()},
                        hbm_bw_bytes_per_s=base.hbm_bw_bytes_per_s * hbm_x,
                        link_bw_bytes_per_s=base.link_bw_bytes_per_s * link_x)
    assert _time(model, better, tp, b) <= _time(model, base, tp, b) * (1 + 1e-12)


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS), tokens=st.integers(1, 4096), extra=st.integers(1, 4096))
def test_more_tokens_never_faster(model, tokens, extra):
    lc = LayerCost(get_model(model), make_cluster(8), Sharding(tp=1))
    assert lc.forward(tokens)["total"] <= lc.forward(tokens + extra)["total"] * (1 + 1e-12)


def test_decode_is_memory_bound_prefill_compute_bound():
    m = get_model("llama-3-8b")
    lc = LayerCost(m, make_cluster(1), Sharding())
    ops = {o["name"]: o for o in lc.operators(1, decode_seqs=1, decode_ctx=100)}
    acc = lc.acc
    up = ops["mlp_up"]
    assert up["time_s"] == pytest.approx(up["bytes"] / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory)
                                         + acc.efficiency.kernel_overhead_s)
    big = {o["name"]: o for o in lc.operators(8192, prefill_pairs=8192 * 8193 / 2)}["mlp_up"]
    assert big["time_s"] == pytest.approx(big["flops"] / (acc.peak("bf16") * acc.efficiency.gemm)
                                          + acc.efficiency.kernel_overhead_s)


def test_fp8_weights_halve_decode_weight_traffic():
    m = get_model("llama-3-8b")
    bf16 = LayerCost(m, make_cluster(1), Sharding(), weight_dtype="bf16").forward(8)["mlp"]
    fp8 = LayerCost(m, make_cluster(1), Sharding(), weight_dtype="fp8").forward(8)["mlp"]
    assert fp8 < 0.6 * bf16


@settings(max_examples=50, deadline=None)
@given(u=st.floats(-1, 2), wall=st.floats(0, 1e5), gpus=st.integers(1, 1024))
def test_power_between_idle_and_tdp(u, wall, gpus):
    acc = make_accelerator()
    assert acc.idle_w <= power_w(acc, u) <= acc.tdp_w
    e = energy_j(acc, gpus, wall, u)
    assert gpus * wall * acc.idle_w <= e <= gpus * wall * acc.tdp_w * (1 + 1e-12)


def test_cost_is_gpu_hours_times_price():
    acc = make_accelerator(price_usd_per_hour=3.0)
    assert cost_usd(acc, 8, 3600) == pytest.approx(24.0)
    assert cost_usd(acc, 8, 3600, price_usd_per_hour=1.0) == pytest.approx(8.0)
