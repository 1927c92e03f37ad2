"""Failures, checkpoints and goodput (training/goodput.py): the published orders of magnitude,
the model against its closed forms, its invariants, and the CLI contract of #20 item 3."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from parasim.specs.catalog import get_model
from parasim.training.goodput import (Reliability, checkpoint_bytes, daly_interval_s, estimate, goodput_fraction,
                                      optimal_interval_s, young_interval_s)
from tests.conftest import run_cli

DAY_S = 86400.0
# Llama 3 report (arXiv 2407.21783, sec. 3.3.4): 466 job interruptions in a 54-day snapshot of
# 405B pre-training on 16,384 H100, 419 of them unexpected; > 90 % effective training time
LLAMA3_GPUS, LLAMA3_DAYS, LLAMA3_ALL, LLAMA3_UNEXPECTED = 16384, 54, 466, 419
# its step, from its own figures: 16M-token batches at ~400 TFLOP/s per GPU, 6N FLOPs per token
LLAMA3_STEP_S = 16e6 * 6 * 405e9 / (LLAMA3_GPUS * 400e12)
# MegaScale (arXiv 2402.15627): 175B on 12,288 GPUs at 55.2 % MFU of the A100's 312 TFLOP/s,
# batch 6,144 x 2,048 tokens; a production run kept > 90 % effective training time
MEGASCALE_GPUS = 12288
MEGASCALE_STEP_S = 6144 * 2048 * 6 * 175e9 / (MEGASCALE_GPUS * 0.552 * 312e12)

positive = st.floats(min_value=1e-3, max_value=1e5, allow_nan=False, allow_infinity=False)


def _llama3(**over) -> object:
    return estimate(get_model("llama-3.1-405b"), gpus=LLAMA3_GPUS, gpus_per_node=8, step_time_s=LLAMA3_STEP_S,
                    r=Reliability.from_options(over))


# --- the published figures ----------------------------------------------------------------------------
def test_the_catalog_failure_rate_is_the_llama3_rate_to_within_a_few_percent():
    published_gpu_hours = LLAMA3_GPUS * LLAMA3_DAYS * 24 / LLAMA3_UNEXPECTED  # GPU-hours per interruption
    assert Reliability.from_options({}).mtbf_gpu_hours == pytest.approx(published_gpu_hours, rel=0.05)


def test_llama3_scale_gives_hundreds_of_interruptions_in_54_days_and_over_90_percent_goodput():
    e = _llama3()
    interruptions = LLAMA3_DAYS * e.interruptions_per_day
    assert 100 <= interruptions <= 1000  # "hundreds"
    assert LLAMA3_UNEXPECTED / 2 <= interruptions <= LLAMA3_ALL * 2
    assert 0.90 < e.goodput_fraction < 0.98  # > 90 % reported; hundreds of restarts cost a few %


def test_megascale_scale_keeps_over_90_percent_effective_training_time():
    e = estimate(get_model("gpt-3-175b"), gpus=MEGASCALE_GPUS, gpus_per_node=8, step_time_s=MEGASCALE_STEP_S,
                 r=Reliability.from_options({}))
    assert 0.90 < e.goodput_fraction < 0.99
    # fewer GPUs than Llama 3 and a smaller checkpoint: no worse than the Llama 3 run
    assert e.goodput_fraction >= _llama3().goodput_fraction


def test_a_failure_rate_ten_times_llama3s_drops_goodput_well_below_90_percent():
    assert _llama3(mtbf_gpu_hours=Reliability.from_options({}).mtbf_gpu_hours / 10).goodput_fraction < 0.85


# --- the model against hand formulas ---------------------------------------------------------------------
def test_checkpoint_holds_14_bytes_per_parameter():
    m = get_model("llama-3.1-70b")
    assert checkpoint_bytes(m) == (2 + 4 + 4 + 4) * m.params_total  # bf16 weights, fp32 master + 2 moments


def test_goodput_is_daly_expected_wall_time_over_work():
    tau, c, r, m = 300.0, 20.0, 600.0, 3 * 3600.0
    wall = m * math.exp(r / m) * (math.exp((tau + c) / m) - 1)
    assert goodput_fraction(tau, c, r, m) == pytest.approx(tau / wall, rel=1e-12)
    # first order in 1/M: g = tau/(tau + C) * (1 - (tau + C)/(2M) - R/M) (+ O(1/M^2)): the stall,
    # half a segment lost per failure and the restart
    m = 30 * 3600.0
    first = tau / (tau + c) * (1 - (tau + c) / (2 * m) - r / m)
    assert goodput_fraction(tau, c, r, m) == pytest.approx(first, abs=1e-4)


def test_llama3_numbers_follow_from_the_assumptions():
    e, r = _llama3(), Reliability.from_options({})
    nodes = LLAMA3_GPUS // 8
    rate = min(nodes * r.checkpoint_bw_gbps, r.storage_bw_gbps) * 1e9 / 8  # bytes/s
    assert e.checkpoint_write_s == pytest.approx(405e9 * 14 / rate, rel=0.02)  # 405B at 14 B/param
    assert e.job_mtbf_s == pytest.approx(r.mtbf_gpu_hours * 3600 / LLAMA3_GPUS)
    assert e.checkpoint_interval_s == e.checkpoint_interval_steps * LLAMA3_STEP_S
    assert abs(e.checkpoint_interval_s - e.optimal_interval_s) <= LLAMA3_STEP_S


@given(c=positive, m=st.floats(min_value=1e3, max_value=1e7))
def test_young_and_daly_approach_the_exact_optimum_when_checkpoints_are_cheap(c, m):
    assume(c < m / 100)
    exact = optimal_interval_s(c, m)
    assert daly_interval_s(c, m) == pytest.approx(exact, rel=1e-3)
    assert young_interval_s(c, m) == pytest.approx(exact, rel=0.05)


@given(c=positive, r=positive, m=st.floats(min_value=10.0, max_value=1e7), other=st.floats(min_value=1e-3, max_value=1e7))
def test_the_optimal_interval_beats_any_other(c, r, m, other):
    best = optimal_interval_s(c, m)
    assert goodput_fraction(best, c, r, m) >= goodput_fraction(other, c, r, m) * (1 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(gpus=st.sampled_from([8, 64, 512, 4096, 16384]), step=st.floats(min_value=0.5, max_value=60.0),
       k=st.integers(min_value=1, max_value=5000), async_save=st.booleans())
def test_the_chosen_whole_step_interval_beats_any_other(gpus, step, k, async_save):
    m = get_model("llama-3.1-70b")
    kw = {"gpus": gpus, "gpus_per_node": 8, "step_time_s": step}
    chosen = estimate(m, **kw, r=Reliability.from_options({"async_save": async_save}))
    other = estimate(m, **kw, r=Reliability.from_options({"async_save": async_save, "save_interval": k}))
    assert chosen.goodput_fraction >= other.goodput_fraction * (1 - 1e-12)


# --- invariants -------------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(mtbf=st.floats(min_value=1e-3, max_value=1e9), bw=st.floats(min_value=1e-3, max_value=1e9),
       cap=st.floats(min_value=1e-3, max_value=1e9), restart=st.floats(min_value=0.0, max_value=7 * DAY_S),
       gpus=st.integers(min_value=1, max_value=1 << 20), step=st.floats(min_value=1e-3, max_value=1e4),
       async_save=st.booleans())
def test_goodput_is_a_fraction_even_for_hostile_assumptions(mtbf, bw, cap, restart, gpus, step, async_save):
    r = Reliability.from_options({"mtbf_gpu_hours": mtbf, "checkpoint_bw_gbps": bw, "storage_bw_gbps": cap,
                                  "restart_s": restart, "async_save": async_save})
    e = estimate(get_model("llama-3.1-8b"), gpus=gpus, gpus_per_node=8, step_time_s=step, r=r)
    assert 0.0 <= e.goodput_fraction <= 1.0
    if (e.recovery_s + e.checkpoint_stall_s + e.checkpoint_interval_s) / e.job_mtbf_s < 100:
        assert e.goodput_fraction > 0.0  # zero only when the job cannot outrun its failures


@settings(max_examples=80, deadline=None)
@given(mtbf=st.floats(min_value=1e3, max_value=1e6), bw=st.floats(min_value=1.0, max_value=1e4),
       restart=st.floats(min_value=0.0, max_value=3600.0), step=st.floats(min_value=0.1, max_value=60.0),
       gpus=st.integers(min_value=1, max_value=1 << 16), more=st.integers(min_value=2, max_value=64),
       async_save=st.booleans())
def test_more_gpus_never_raise_goodput_at_a_fixed_per_gpu_rate(mtbf, bw, restart, step, gpus, more, async_save):
    r = Reliability.from_options({"mtbf_gpu_hours": mtbf, "checkpoint_bw_gbps": bw, "storage_bw_gbps": 16000.0,
                                  "restart_s": restart, "async_save": async_save})
    m = get_model("llama-3.1-70b")
    few = estimate(m, gpus=gpus, gpus_per_node=8, step_time_s=step, r=r)
    many = estimate(m, gpus=gpus * more, gpus_per_node=8, step_time_s=step, r=r)
    assert many.goodput_fraction <= few.goodput_fraction * (1 + 1e-9)


@settings(max_examples=80, deadline=None)
@given(bw=st.floats(min_value=1.0, max_value=1e5), faster=st.floats(min_value=1.0, max_value=100.0),
       cap=st.floats(min_value=1.0, max_value=1e6), gpus=st.integers(min_value=1, max_value=1 << 15),
       step=st.floats(min_value=0.1, max_value=60.0), async_save=st.booleans())
def test_faster_storage_never_lowers_goodput(bw, faster, cap, gpus, step, async_save):
    m = get_model("llama-3.1-70b")

    def g(node_bw: float, total: float) -> float:
        r = Reliability.from_options({"checkpoint_bw_gbps": node_bw, "storage_bw_gbps": total, "async_save": async_save})
        return estimate(m, gpus=gpus, gpus_per_node=8, step_time_s=step, r=r).goodput_fraction

    assert g(bw * faster, cap) >= g(bw, cap) * (1 - 1e-12)
    assert g(bw, cap * faster) >= g(bw, cap) * (1 - 1e-12)


def test_async_save_stalls_for_the_snapshot_only_and_helps_on_slow_storage():
    slow = {"checkpoint_bw_gbps": 8.0, "storage_bw_gbps": 800.0}  # 100 MB/s per node, 100 GB/s in all
    blocking, background = _llama3(**slow), _llama3(**slow, async_save=True)
    assert background.checkpoint_stall_s < blocking.checkpoint_stall_s / 100
    assert background.checkpoint_interval_s >= background.checkpoint_write_s  # saves never queue
    assert background.goodput_fraction > blocking.goodput_fraction


# --- the CLI ---------------------------------------------------------------------------------------------
TRAIN = ["train", "-m", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "16", "--tp", "8", "--global-batch", "16",
         "--seq-len", "4096"]


def test_train_json_reports_goodput_always_and_time_to_train_with_tokens():
    plain = json.loads(run_cli(*TRAIN, "--json").stdout)
    assert 0 < plain["goodput_fraction"] <= 1 and plain["time_to_train_s"] is None
    assert plain["goodput"]["goodput_fraction"] == plain["goodput_fraction"]
    r = run_cli(*TRAIN, "--json", "--tokens", "1e12")
    out = json.loads(r.stdout)
    assert out["time_to_train_s"] == pytest.approx(1e12 / out["tokens_per_s"] / out["goodput_fraction"])
    assert out["goodput_fraction"] == plain["goodput_fraction"]  # tokens change the total, not the fraction


def test_train_goodput_options_work_from_a_config_file_as_flags(tmp_path):
    opts = {"mtbf_gpu_hours": 2000, "restart_s": 60, "checkpoint_bw_gbps": 50, "async_save": True, "tokens": 1e11}
    flags = [a for k, v in opts.items() for a in ((f"--{k.replace('_', '-')}",) if v is True else
                                                    (f"--{k.replace('_', '-')}", str(v)))]
    by_flags = json.loads(run_cli(*TRAIN, "--json", *flags).stdout)
    cfg = tmp_path / "plan.yaml"
    cfg.write_text(yaml.safe_dump(opts))
    by_file = json.loads(run_cli(*TRAIN, "--json", "-c", str(cfg)).stdout)
    for key in ("goodput", "goodput_fraction", "time_to_train_s"):
        assert by_file[key] == by_flags[key]
    assert by_flags["goodput"]["assumptions"]["async_save"] is True
    assert by_flags["goodput_fraction"] < json.loads(run_cli(*TRAIN, "--json").stdout)["goodput_fraction"]


@pytest.mark.parametrize("flag, value", [("--mtbf-gpu-hours", "0"), ("--restart-s", "-5"),
                                         ("--checkpoint-bw-gbps", "nan"), ("--storage-bw-gbps", "1e-300"),
                                         ("--save-interval", "0")])
def test_bad_goodput_flags_exit_2_naming_the_flag(flag, value):
    r = run_cli(*TRAIN, flag, value)
    assert r.returncode == 2 and flag.lstrip("-") in r.stderr and "Traceback" not in r.stderr


PLAN = ["plan", "train", "-m", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "16,64", "--global-batch", "64",
        "--seq-len", "4096", "--tp", "8", "--pp", "1", "--zero", "1", "--micro-batch", "1", "--recompute", "none",
        "--workers", "1"]


def test_plan_train_time_to_train_needs_tokens():
    r = run_cli(*PLAN, "--objective", "time-to-train")
    assert r.returncode == 2 and "--tokens" in r.stderr and "Traceback" not in r.stderr


def test_plan_train_ranks_by_time_to_train_with_goodput_per_plan():
    r = run_cli(*PLAN, "--objective", "time-to-train", "--tokens", "1e12", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    ranked = out["ranked"]
    assert {row["gpus"] for row in ranked} == {16, 64}
    for row in ranked:
        m = row["metrics"]
        assert 0 < row["goodput_fraction"] <= 1 and row["goodput_fraction"] == m["goodput_fraction"]
        assert row["time_to_train_s"] == pytest.approx(1e12 / m["tokens_per_s"] / row["goodput_fraction"])
        assert row["objective_value"] == pytest.approx(row["time_to_train_s"] / DAY_S)
    times = [row["time_to_train_s"] for row in ranked]
    assert times == sorted(times)
    # the same plan through `train` reports the same goodput
    best = out["best"]
    again = json.loads(run_cli("train", "-m", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", str(best["gpus"]),
                               "--tp", "8", "--global-batch", "64", "--seq-len", "4096", "--recompute", "none",
                               "--micro-batch", "1", "--zero", "1", "--json", "--tokens", "1e12").stdout)
    assert again["goodput_fraction"] == pytest.approx(best["goodput_fraction"], rel=1e-9)
    assert again["time_to_train_s"] == pytest.approx(best["time_to_train_s"], rel=1e-9)


def test_plan_train_goodput_flags_move_the_wall_time_and_the_emitted_yaml_keeps_them(tmp_path):
    base = json.loads(run_cli(*PLAN, "--objective", "time-to-train", "--tokens", "1e12", "--json").stdout)["best"]
    emitted = tmp_path / "best.yaml"
    flaky = json.loads(run_cli(*PLAN, "--objective", "time-to-train", "--tokens", "1e12", "--json",
                               "--mtbf-gpu-hours", "500", "--restart-s", "1800", "--emit-yaml", str(emitted)).stdout)["best"]
    assert flaky["goodput_fraction"] < base["goodput_fraction"]
    assert flaky["time_to_train_s"] > base["time_to_train_s"]
    cfg = yaml.safe_load(emitted.read_text())
    assert (cfg["mtbf_gpu_hours"], cfg["restart_s"], cfg["tokens"]) == (500, 1800, 1e12)
    again = json.loads(run_cli("train", "-c", str(emitted), "--json").stdout)
    assert again["goodput"] == flaky["metrics"]["goodput"]
    assert again["time_to_train_s"] == pytest.approx(flaky["time_to_train_s"], rel=1e-12)
