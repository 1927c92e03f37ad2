"""Issue 5's acceptance runs (no timing assertions: benchmarks/plan_speed.py prints the times)."""

from __future__ import annotations

import json

from parasim.errors import InputError
from parasim.search.plan_train import TrainSearch, run_search
from tests.conftest import run_cli

# Llama 3 paper (405B pre-training at 8K): TP 8, PP 16, DP 128, micro-batch 1, interleaved 1F1B,
# no activation recomputation, optimizer states and gradients sharded over DP (ZeRO-2-like FSDP
# without re-sharding the weights), sequence parallel with TP.
PAPER = {"tp": 8, "pp": 16, "dp": 128, "micro_batch": 1, "recompute": "none", "zero": 2, "sequence_parallel": True}


def _paper_reference():
    """Interleaved if the training validator accepts 126 layers on 16 stages, else 1F1B."""
    from parasim.search.plan_train import reference_item
    from parasim.specs.catalog import get_model

    model = get_model("llama-3.1-405b")
    req = TrainSearch(model="llama-3.1-405b", gpu=("h100-sxm",), gpus=(16384,), seq_len=8192, global_batch=2048)
    for extra in ({"schedule": "interleaved", "virtual_stages": 2}, {"schedule": "1f1b"}):
        try:
            reference_item(TrainSearch(**{**req.__dict__, "reference": {**PAPER, **extra}}), model, 2048)
            return {**PAPER, **extra}
        except InputError:
            continue
    raise AssertionError("the paper plan is rejected by the training validator")


def test_llama3_405b_training_plan_beats_the_paper_plan():
    ref = _paper_reference()
    out = run_search(TrainSearch(model="llama-3.1-405b", gpu=("h100-sxm",), gpus=(16384,), seq_len=8192,
                                 global_batch_tokens=16 * 1024 * 1024, reference=ref))
    paper = out["reference"]
    assert paper["rank"] is not None, paper
    assert out["ranked"][paper["rank"] - 1]["metrics"]["step_time_s"] == paper["metrics"]["step_time_s"]
    assert out["best"]["metrics"]["tokens_per_s"] >= paper["metrics"]["tokens_per_s"]


def test_llama3_70b_serving_plan_and_rerun(tmp_path):
    y = tmp_path / "best.yaml"
    r = run_cli("plan", "serve", "--model", "llama-3-70b", "--gpu", "h100-sxm", "--max-gpus", "16", "--rate", "10",
                "--prompt-tokens", "1000", "--output-tokens", "250", "--length-dist", "lognormal",
                "--slo-ttft", "2", "--slo-tpot", "0.1", "--attainment", "0.9", "--json", "--emit-yaml", str(y))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    best = out["best"]
    assert best["gpus"] <= 16 and best["metrics"]["summary"]["slo_attainment"] >= 0.9
    again = run_cli("serve", "-c", str(y), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["summary"] == best["metrics"]["summary"]
