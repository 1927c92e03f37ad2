"""`parasim plan train|serve` through the CLI, the way a user runs it."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import run_cli

SMALL_TRAIN = ["plan", "train", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "64",
               "--global-batch", "128", "--seq-len", "4096", "--workers", "2",
               "--zero", "1,3", "--micro-batch", "1,2"]
SMALL_SERVE = ["plan", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--max-gpus", "4", "--rate", "8",
               "--prompt-tokens", "512", "--output-tokens", "128", "--length-dist", "lognormal", "--requests", "300",
               "--screen-requests", "100", "--slo-ttft", "1", "--slo-tpot", "0.05", "--schedulers", "sarathi,vllm",
               "--token-budgets", "512,2048", "--max-batches", "128", "--workers", "2"]


def test_plan_train_json_contract_and_emitted_yaml_reproduces(tmp_path):
    out_yaml = tmp_path / "best.yaml"
    r = run_cli(*SMALL_TRAIN, "--json", "--emit-yaml", str(out_yaml), "--reference", "tp=8,pp=1,zero=1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("best", "ranked", "evaluated", "pruned", "baseline", "search_wall_s"):
        assert key in out
    ranked = out["ranked"]
    assert ranked[0] == out["best"] and [x["rank"] for x in ranked] == list(range(1, len(ranked) + 1))
    for row in ranked[:5]:
        for k in ("tp", "pp", "dp", "cp", "ep", "micro_batch", "virtual_stages", "recompute", "zero", "schedule"):
            assert k in row
        assert {"tokens_per_s", "mfu", "step_time_s", "peak_memory_gib_per_gpu"} <= set(row["metrics"])
        assert row["metrics"]["fits"]
    scores = [x["metrics"]["tokens_per_s"] for x in ranked]
    assert scores == sorted(scores, reverse=True)
    assert out["reference"]["rank"] is not None
    assert out["baseline"]["tp"] == 8
    cfg = yaml.safe_load(out_yaml.read_text())
    again = run_cli("train", "-c", str(out_yaml), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["step_time_s"] == out["best"]["metrics"]["step_time_s"]
    # the winner's error bars are those `train` quotes for the same plan (docs/expected-error.md)
    assert out["expected_error"] == json.loads(again.stdout)["expected_error"]
    assert out["expected_error"]["category"]["generation"] == "hopper"
    assert cfg["tp"] == out["best"]["tp"]


def test_plan_serve_best_plan_reruns_to_the_same_numbers(tmp_path):
    out_yaml = tmp_path / "best.yaml"
    r = run_cli(*SMALL_SERVE, "--json", "--emit-yaml", str(out_yaml), "--pareto", "cost,latency")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    best = out["best"]
    assert best["fidelity"] == "full" and best["meets_slo"]
    for k in ("tp", "pp", "replicas", "scheduler"):
        assert k in best
    assert out["pareto"]["front"]
    cfg = yaml.safe_load(out_yaml.read_text())  # a short generator config, no trace file
    assert (cfg["length_dist"], cfg["length_sigma"], cfg["rate"], cfg["requests"], cfg["seed"]) == ("lognormal", 0.5, 8.0, 300, 0)
    assert "trace" not in cfg and list(tmp_path.iterdir()) == [out_yaml]
    again = run_cli("serve", "-c", str(out_yaml), "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)["summary"]
    assert summary == best["metrics"]["summary"]
    assert out["expected_error"] == json.loads(again.stdout)["expected_error"]
    assert set(out["expected_error"]["by_metric"]) == {"throughput", "ttft", "tpot", "e2e"}


def test_plan_table_output_runs():
    r = run_cli(*SMALL_TRAIN, "--top", "3", "--pareto", "tokens-per-s,memory")
    assert r.returncode == 0, r.stderr
    assert "plan train" in r.stdout and "pruned" in r.stdout


@pytest.mark.parametrize("args, field", [
    (["plan", "train", "--model", "nope-7b", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch", "8", "--seq-len", "2048"], "model"),
    (["plan", "train", "--model", "llama-3.1-8b", "--gpu", "h999", "--gpus", "8", "--global-batch", "8", "--seq-len", "2048"], "gpu"),
    (["plan", "train", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--seq-len", "2048"], "global-batch"),
    (["plan", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--max-gpus", "4", "--slo-ttft", "1", "--slo-tpot", "0.1"], "workload"),
    (["plan", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--max-gpus", "4", "--rate", "-1",
      "--prompt-tokens", "10", "--output-tokens", "10", "--slo-ttft", "1", "--slo-tpot", "0.1"], "rate"),
    (["plan", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--max-gpus", "0", "--rate", "1",
      "--prompt-tokens", "10", "--output-tokens", "10", "--slo-ttft", "1", "--slo-tpot", "0.1"], "max-gpus"),
    (["plan", "serve", "--model", "nope", "--gpu", "h100-sxm", "--max-gpus", "4", "--rate", "1",
      "--prompt-tokens", "10", "--output-tokens", "10", "--slo-ttft", "1", "--slo-tpot", "0.1"], "model"),
])
def test_bad_input_is_one_line_exit_2(args, field):
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.stderr
