"""`plan train --etp`: the expert-TP choices of a MoE search, driven through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

BASE = ["plan", "train", "--model", "mixtral-8x7b", "--gpu", "h100-sxm", "--gpus", "16", "--seq-len", "4096",
        "--global-batch", "64", "--tp", "2,4", "--pp", "1,2", "--micro-batch", "1", "--recompute", "full",
        "--zero", "1", "--schedules", "1f1b", "--json"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parasim", *args], capture_output=True, text=True, timeout=300)


def search(*extra: str) -> dict:
    p = run(*BASE, *extra)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_etp_restricts_the_ranked_plans_and_the_space():
    default, only_one, as_tp = search(), search("--etp", "1"), search("--etp", "tp")
    assert {p["etp"] for p in only_one["ranked"]} == {1}
    assert all(p["etp"] == p["tp"] for p in as_tp["ranked"])
    # the default searches both choices, so the two restricted spaces add up to it
    assert only_one["space_size"] + as_tp["space_size"] == default["space_size"]
    assert {p["etp"] for p in default["ranked"]} >= {1, 2}


@pytest.mark.parametrize("value", ["x", "0", "-1", "1.5", "tp,,", "1e9"])
def test_bad_etp_is_exit_2_naming_it(value):
    p = run(*BASE, "--etp", value)
    assert p.returncode == 2 and "etp" in p.stderr and "Traceback" not in p.stderr


def test_etp_on_a_dense_model_is_refused():
    p = run("plan", "train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--seq-len", "4096",
            "--global-batch", "64", "--etp", "2")
    assert p.returncode == 2 and "dense" in p.stderr
