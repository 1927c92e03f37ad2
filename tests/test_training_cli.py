"""`parasim train` through a subprocess, as a user runs it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

BASE = ["train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "16", "--tp", "2", "--pp", "2",
        "--global-batch", "64", "--seq-len", "4096"]
KEYS = ("step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "model_tflops_per_gpu", "mfu",
        "peak_memory_gib_per_gpu", "fits", "breakdown", "parasim_version", "tp", "pp", "dp")


def test_json_contract():
    r = run_cli(*BASE, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for k in KEYS:
        assert k in out
    assert out["dp"] == 4  # derived
    for k in ("compute", "exposed_comm", "bubble", "optimizer"):
        assert out["breakdown"][k] >= 0


def test_config_file_and_flags_override_it(tmp_path):
    cfg = tmp_path / "plan.yaml"
    cfg.write_text("model: llama-3-8b\ngpu: h100-sxm\ngpus: 16\ntp: 2\npp: 2\nglobal-batch: 64\nseq_len: 4096\n"
                   "micro-batch: 2\n")
    a = json.loads(run_cli("train", "-c", str(cfg), "--json").stdout)
    b = json.loads(run_cli("train", "-c", str(cfg), "--micro-batch", "1", "--json").stdout)
    assert a["micro_batch"] == 2 and b["micro_batch"] == 1


def test_example_config_runs():
    r = run_cli("train", "-c", "examples/train-llama3-70b.yaml")
    assert r.returncode == 0, r.stderr
    assert "step time" in r.stdout


def test_plan_that_does_not_fit_exits_one_with_its_breakdown():
    """Nothing fits -> exit 1, and the result (fits false, the memory breakdown) is still printed:
    as JSON, and as the table with the GiB rows and the reason."""
    args = ["train", "--model", "llama-3-70b", "--gpu", "h100-sxm", "--gpus", "8", "--tp", "1", "--zero", "0",
            "--global-batch", "8"]
    r = run_cli(*args, "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["fits"] is False and out["memory"]["total_gib"] > out["memory"]["capacity_gib"]
    assert out["memory"]["capacity_gib"] == 80  # an "80 GB" H100 holds 80 GiB
    t = run_cli(*args)
    assert t.returncode == 1 and "Traceback" not in t.stderr
    assert "does not fit" in t.stdout and "of 80 GiB" in t.stdout and "weights" in t.stdout


@pytest.mark.parametrize("extra,field", [
    (["--dp", "3"], "gpus"),
    (["--global-batch", "7"], "global-batch"),
    (["--precision", "fp4"], "precision"),
    (["--schedule", "chimera"], "schedule"),
    (["--tp", "3", "--pp", "1"], "tp"),
])
def test_bad_input_exits_2_with_one_line_naming_the_field(extra, field):
    args = [a for a in BASE]
    r = run_cli(*args, *extra)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.stderr
