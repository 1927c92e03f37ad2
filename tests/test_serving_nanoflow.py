"""Intra-device overlap (`serve --overlap nanoflow`): NanoFlow's direction (a clear throughput gain
at large batch, little at small), the physical bounds of an overlapped iteration (never faster than
its busiest resource, never slower than running the work in sequence), monotonicity in bandwidth,
the pipeline formula by hand, and hostile inputs."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.engines.launch import launch_for
from parasim.errors import InputError
from parasim.serving import ServingPlan, simulate
from parasim.serving.itercost import IterationCost
from parasim.serving.overlap import GEMV_SATURATION_SHARE, fluid_layer_s, overlap_cost
from parasim.serving.workload import generate
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from tests.conftest import run_cli

A100 = "a100-sxm-80gb"


def _costs(model: str, tp: int, gpu: str = A100, n: int = 4, **acc_changes):
    acc = get_accelerator(gpu)
    if acc_changes:
        acc = dataclasses.replace(acc, **acc_changes)
    cluster = cluster_for(acc, tp)
    m = get_model(model)
    plain = IterationCost.for_plan(m, cluster, ServingPlan(tp=tp))
    return plain, overlap_cost(m, cluster, ServingPlan(tp=tp, overlap="nanoflow", nano_batches=n), tp=tp)


# --- the pipeline formula by hand ---------------------------------------------------------------

def test_fluid_layer_hand_values():
    s = GEMV_SATURATION_SHARE
    # equal compute and memory work: the memory kernel takes s of the SMs while the GEMMs run
    assert fluid_layer_s(1.0, 1.0, 0.0, 0.0, s, 0.3, 10**9) == pytest.approx(1.0 + s)
    # two nano-batches: half of the sequential excess stays (the pipeline's fill and drain)
    assert fluid_layer_s(1.0, 1.0, 0.0, 0.0, s, 0.3, 2) == pytest.approx((1.0 + s) + (2.0 - (1.0 + s)) / 2)
    # one resource only: nothing to overlap, the time is its own
    assert fluid_layer_s(2.0, 0.0, 0.0, 0.0, s, 0.3, 4) == pytest.approx(2.0)
    # HBM shared by GEMMs that read their weights and the memory kernels: no overlap at all
    assert fluid_layer_s(1.0, 1.0, 0.0, 2.0, s, 0.3, 4) == pytest.approx(2.0)


@given(g=hst.floats(0, 10), m=hst.floats(0, 10), k=hst.floats(0, 10), share=hst.floats(0, 1),
       sm=hst.floats(0.05, 1), sk=hst.floats(0.05, 1), n=hst.integers(2, 16))
def test_fluid_layer_between_busiest_resource_and_sequential(g, m, k, share, sm, sk, n):
    hbm = share * (g + m)  # bytes time never exceeds the kernels' own time
    t = fluid_layer_s(g, m, k, hbm, sm, sk, n)
    assert max(g, m, k, hbm) - 1e-9 <= t <= g + m + k + 1e-9
    assert fluid_layer_s(g, m, k, hbm, sm, sk, n + 1) <= t + 1e-9  # more nano-batches: less fill and drain


# --- an iteration ---------------------------------------------------------------------------------

BATCH = hst.tuples(hst.integers(0, 2048), hst.integers(0, 1024), hst.integers(1, 4096), hst.integers(0, 2048))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=BATCH, model=hst.sampled_from([("llama-2-70b", 8), ("llama-3-8b", 1), ("llama-3-8b", 2)]),
       n=hst.integers(2, 8))
def test_overlap_never_beats_the_busiest_resource_nor_loses_to_the_plain_schedule(batch, model, n):
    prefill, decode, ctx, kv = batch
    tokens = prefill + decode
    if tokens == 0:
        return
    plain, over = _costs(*model, n=n)
    pairs = prefill * (prefill + 1) / 2.0
    args = (tokens, pairs, float(kv if prefill else 0), decode, float(decode * ctx), max(1, decode))
    t_plain, t = plain.time_s(*args), over.time_s(*args)
    b = plain.breakdown(*args)
    compute = b["attn_gemms"] + b["mlp"] + b["moe"] + b["attn_prefill"]
    memory = b["elementwise"] + b["act_quant"] + b["attn_decode"]
    network = b["tp_comm"] + b["ep_comm"] + b["pp_p2p"]
    sequential = b["embedding"] + b["lm_head"] + b["overhead"]
    assert t <= t_plain + 1e-12
    assert t >= max(compute, memory, network) + sequential - 1e-12


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=BATCH, factor=hst.floats(1.0, 4.0))
def test_more_memory_bandwidth_is_never_slower(batch, factor):
    prefill, decode, ctx, kv = batch
    tokens = prefill + decode
    if tokens == 0:
        return
    base_bw = get_accelerator(A100).hbm_bw_bytes_per_s
    _, slow = _costs("llama-2-70b", 8)
    _, fast = _costs("llama-2-70b", 8, hbm_bw_bytes_per_s=base_bw * factor)
    args = (tokens, prefill * (prefill + 1) / 2.0, float(kv if prefill else 0), decode, float(decode * ctx), max(1, decode))
    assert fast.time_s(*args) <= slow.time_s(*args) * (1 + 1e-9)


def test_small_decode_batch_gains_nothing_large_one_gains_what_the_hidden_work_allows():
    plain, over = _costs("llama-2-70b", 8)
    small = (8, 0.0, 0.0, 8, 8 * 1300.0, 8)
    assert over.time_s(*small) == pytest.approx(plain.time_s(*small), rel=0.01)
    large = (1024, 0.0, 0.0, 1024, 1024 * 1300.0, 1024)
    b = plain.breakdown(*large)
    memory = b["elementwise"] + b["attn_decode"]
    network = b["tp_comm"]
    gain = plain.time_s(*large) / over.time_s(*large)
    # at most all of the memory and network work hides under the GEMMs
    assert 1.05 < gain <= b["total"] / (b["total"] - memory - network)


# --- NanoFlow's direction, end to end -------------------------------------------------------------

def _offline_throughput(max_batch: int, overlap: str) -> float:
    """An offline burst as NanoFlow's constant-length runs (Llama-2-70B, 8x A100, TP 8, input 1024,
    output 512): total tokens per second."""
    plan = ServingPlan(tp=8, max_batch=max_batch, token_budget=2048, overlap=overlap)
    wl = generate(requests=300, prompt_tokens=1024, output_tokens=512, rate=1.0, seed=0, burst=True)
    s = simulate(get_model("llama-2-70b"), cluster_for(get_accelerator(A100), 8), plan, wl).summary
    assert s["completed"] == 300
    return s["total_tokens_per_s"]


def test_nanoflow_direction_clear_gain_at_large_batch_little_at_small():
    large = _offline_throughput(1024, "nanoflow") / _offline_throughput(1024, "none")
    small = _offline_throughput(8, "nanoflow") / _offline_throughput(8, "none")
    # NanoFlow's ablation (Fig. 9) measures 1.07-1.17x from overlap alone; its 1.9x over vLLM also holds
    # vLLM's own overheads, which are not this option's
    assert 1.05 < large < 1.5
    assert 1.0 <= small < 1.10
    assert large > small


# --- plan, CLI, emit ------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, field", [
    (dict(overlap="nano"), "overlap"),
    (dict(nano_batches=4), "nano_batches"),
    (dict(overlap="nanoflow", nano_batches=1), "nano_batches"),
    (dict(overlap="nanoflow", nano_batches=17), "nano_batches"),
    (dict(overlap="nanoflow", scheduler="disagg"), "overlap"),
    (dict(overlap="nanoflow", spec_method="eagle", num_speculative_tokens=2, spec_acceptance=0.5), "overlap"),
])
def test_bad_plans_name_the_field(kw, field):
    with pytest.raises(InputError) as e:
        ServingPlan(**kw)
    assert e.value.field == field


BASE = ["serve", "-m", "llama-3-8b", "--gpu", A100, "--rate", "2", "--requests", "20"]


@pytest.mark.parametrize("extra, field", [
    (["--overlap", "bogus"], "overlap"),
    (["--nano-batches", "3"], "nano_batches"),
    (["--overlap", "nanoflow", "--nano-batches", "1"], "nano-batches"),
    (["--overlap", "nanoflow", "--nano-batches", "x"], "nano-batches"),
    (["--overlap", "nanoflow", "--scheduler", "disagg", "--gpus", "2"], "overlap"),
])
def test_cli_hostile_overlap_options_exit_2(extra, field):
    r = run_cli(*BASE, *extra)
    assert r.returncode == 2, r.stderr
    assert field.replace("-", "_") in r.stderr.replace("-", "_") and "Traceback" not in r.stderr


def test_config_key_works_as_the_flag(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("overlap: nanoflow\nnano_batches: 2\n")
    a = json.loads(run_cli(*BASE, "-c", str(cfg), "--json").stdout)
    b = json.loads(run_cli(*BASE, "--overlap", "nanoflow", "--nano-batches", "2", "--json").stdout)
    assert a["summary"] == b["summary"] and a["inputs"]["plan"]["overlap"] == "nanoflow"
    assert any("intra-device overlap" in n for n in a["inputs"]["notes"])


def test_emit_says_no_engine_flag_does_it():
    launch = launch_for("vllm", get_model("llama-2-70b"), cluster_for(get_accelerator(A100), 8),
                        ServingPlan(tp=8, overlap="nanoflow"))
    assert launch.script().startswith("# vLLM") and any("NanoFlow" in n for n in launch.notes)
    plain = launch_for("vllm", get_model("llama-2-70b"), cluster_for(get_accelerator(A100), 8), ServingPlan(tp=8))
    assert not any("NanoFlow" in n for n in plain.notes)
