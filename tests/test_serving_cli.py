"""`parasim serve` through a subprocess: the JSON contract, config files, outputs, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm"]
CONTRACT = ("requests", "completed", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "e2e_p99_s",
            "output_tokens_per_s", "requests_per_s", "slo_attainment", "energy_j_per_token", "cost_usd_per_m_tokens")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parasim", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_json_contract_and_determinism():
    args = [*BASE, "--rate", "5", "--requests", "150", "--seed", "3", "--prompt-tokens", "300",
            "--output-tokens", "40", "--json"]
    a, b = run(*args), run(*args)
    assert a.returncode == 0, a.stderr
    d = json.loads(a.stdout)
    for k in CONTRACT:
        assert k in d["summary"], k
    assert d["summary"]["requests"] == d["summary"]["completed"] == 150
    assert d["summary"]["slo_attainment"] is None
    assert d["sim_wall_s"] >= 0
    d2 = json.loads(b.stdout)
    d.pop("sim_wall_s"), d2.pop("sim_wall_s")  # the one wall-clock field
    assert d == d2


def test_capacity_and_slo(tmp_path):
    p = run(*BASE, "--rate", "5", "--requests", "120", "--prompt-tokens", "300", "--output-tokens", "40",
            "--slo-ttft", "0.5", "--slo-tpot", "0.05", "--capacity", "--attainment", "0.9", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["capacity_requests_per_s"] > 0
    assert d["summary"]["capacity_requests_per_s"] == d["capacity_requests_per_s"]
    assert 0.0 <= d["summary"]["slo_attainment"] <= 1.0
    for k in CONTRACT:
        assert k in d["summary"], k
    assert d["sim_wall_s"] >= 0 and d["feasible"] is True


def test_lognormal_flags_and_config_keys_agree(tmp_path):
    from parasim.serving import generate

    flags = ["--rate", "4", "--requests", "80", "--prompt-tokens", "600", "--output-tokens", "90", "--seed", "2",
             "--length-dist", "lognormal", "--length-sigma", "0.8"]
    a = run(*BASE, *flags, "--json")
    assert a.returncode == 0, a.stderr
    d = json.loads(a.stdout)
    wl = generate(requests=80, rate=4, prompt_tokens=600, output_tokens=90, seed=2, length_dist="lognormal",
                  length_sigma=0.8, max_total_tokens=8192)
    assert d["inputs"]["workload"]["prompt_tokens_mean"] == pytest.approx(float(wl.prompt_tokens.mean()))
    assert d["inputs"]["workload"]["output_tokens_mean"] == pytest.approx(float(wl.output_tokens.mean()))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: llama-3-8b\ngpu: h100-sxm\nrate: 4\nrequests: 80\nprompt_tokens: 600\noutput_tokens: 90\n"
                   "seed: 2\nlength_dist: lognormal\nlength_sigma: 0.8\n")
    b = run("serve", "-c", str(cfg), "--json")
    assert b.returncode == 0, b.stderr
    assert json.loads(b.stdout)["summary"] == d["summary"]


def test_outputs_files_and_rich_summary(tmp_path):
    csv_path, json_path, jl = tmp_path / "r.csv", tmp_path / "s.json", tmp_path / "r.jsonl"
    p = run(*BASE, "--rate", "5", "--requests", "50", "--requests-out", str(csv_path), "--json-out", str(json_path))
    assert p.returncode == 0, p.stderr
    assert "TTFT" in p.stdout  # the rich table
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 50 and "ttft_s" in rows[0]
    assert json.loads(json_path.read_text())["summary"]["completed"] == 50
    p = run(*BASE, "--burst", "--requests", "20", "--requests-out", str(jl), "--json")
    assert p.returncode == 0 and len(jl.read_text().splitlines()) == 20


def test_config_file_and_trace(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps({"arrival_s": i * 0.1, "prompt_tokens": 100 + i, "output_tokens": 20})
                               for i in range(30)) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: llama-3-8b\ngpu: h100-sxm\nscheduler: vllm\ntrace: t.jsonl\nslo_ttft: 1.0\n")
    p = run("serve", "-c", str(cfg), "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["summary"]["requests"] == 30 and d["inputs"]["plan"]["scheduler"] == "vllm"
    p = run("serve", "-c", str(cfg), "--scheduler", "sarathi", "--json")  # flags override the file
    assert json.loads(p.stdout)["inputs"]["plan"]["scheduler"] == "sarathi"


def test_example_config_runs(tmp_path):
    p = run("serve", "-c", str(ROOT / "examples" / "serve-llama3-8b.yaml"), "--requests", "100", "--json-out",
            str(tmp_path / "serve.json"), "--requests-out", str(tmp_path / "r.csv"))
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "serve.json").read_text())["summary"]["completed"] == 100


def test_disagg_flags():
    p = run(*BASE, "--scheduler", "disagg", "--gpus", "2", "--prefill-gpus", "1", "--decode-gpus", "1",
            "--rate", "4", "--requests", "60", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["summary"]["completed"] == 60


@pytest.mark.parametrize("args, field", [
    (["--scheduler", "fifo"], "scheduler"),
    (["--router", "random"], "router"),
    (["--rate", "-2"], "rate"),
    (["--prompt-tokens", "-5"], "prompt_tokens"),
    (["--scheduler", "disagg", "--gpus", "2", "--prefill-gpus", "2", "--decode-gpus", "2"], "prefill_gpus"),
    (["--tp", "3"], "tp"),
    (["--length-dist", "normal"], "length_dist"),
    (["--seed", "-1"], "seed"),
    (["--attainment", "1.5"], "attainment"),
    (["--gpus", "0"], "gpus"),
    (["--pp", "64"], "pp"),
    (["--length-dist", "lognormal", "--length-sigma", "-1"], "length_sigma"),
    (["--max-concurrency", "0"], "max_concurrency"),
    (["--max-concurrency", "4", "--capacity", "--slo-ttft", "1"], "max_concurrency"),
])
def test_bad_input_exits_2_with_one_line(args, field):
    p = run(*BASE, "--requests", "10", "--rate", "1", *args) if "--rate" not in args else run(*BASE, "--requests", "10", *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and field in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_trace_errors(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    p = run(*BASE, "--trace", str(empty))
    assert p.returncode == 2 and "empty" in p.stderr
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"arrival_s": 0, "prompt_tokens": 5, "output_tokens": 5}\n{"arrival_s": 1, "prompt_tokens": "x"\n')
    p = run(*BASE, "--trace", str(bad))
    assert p.returncode == 2 and "line 2" in p.stderr
    badcsv = tmp_path / "b.csv"
    badcsv.write_text("arrival_s,prompt_tokens,output_tokens\n0,5,5\n1,-4,5\n")
    p = run(*BASE, "--trace", str(badcsv))
    assert p.returncode == 2 and "line 3" in p.stderr


def test_max_concurrency_runs_a_closed_loop_client(tmp_path):
    """A burst of 120 requests from a client that keeps 8 out: never more than 8 running, and the
    requests file shows each later request sent when an earlier one came back."""
    out = tmp_path / "r.csv"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_concurrency: 8\n")
    p = run(*BASE, "-c", str(cfg), "--burst", "--requests", "120", "--prompt-tokens", "500", "--output-tokens", "50",
            "--requests-out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["inputs"]["max_concurrency"] == 8 and d["summary"]["completed"] == 120
    assert d["summary"]["peak_running"] <= 8
    rows = list(csv.DictReader(out.open()))
    sent = sorted(float(r["arrival_s"]) for r in rows)
    back = sorted(float(r["finish_s"]) for r in rows)
    assert sent[:8] == [0.0] * 8
    assert all(abs(sent[k] - back[k - 8]) < 1e-9 for k in range(8, 120))
