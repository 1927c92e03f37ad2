"""Bring your own model folder and trace, through the CLI the way a user runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

DATA = Path(__file__).parent / "data" / "traces"
TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1024, "intermediate_size": 2816,
        "num_attention_heads": 16, "num_key_value_heads": 4, "num_hidden_layers": 4, "vocab_size": 32000,
        "max_position_embeddings": 4096}
SERVE = ["serve", "--gpu", "h100-sxm", "--json"]


@pytest.fixture
def project(tmp_path):
    """A user's folder: a checkpoint folder and the sample traces, side by side."""
    (tmp_path / "tiny-ckpt").mkdir()
    (tmp_path / "tiny-ckpt" / "config.json").write_text(json.dumps(TINY))
    for f in DATA.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


@pytest.mark.parametrize("trace, fmt, requests", [("vidur.csv", "vidur", 4), ("azure_2023.csv", "azure", 4),
                                                   ("azure_2024.csv", "azure", 4), ("burstgpt.csv", "burstgpt", 4)])
def test_serve_reads_each_format(project, trace, fmt, requests):
    r = run_cli(*SERVE, "--model", "tiny-ckpt", "--trace", trace, cwd=project)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["inputs"]["model"] == "tiny-ckpt"
    wl = out["inputs"]["workload"]
    assert wl["requests"] == requests and wl["trace"]["format"] == fmt and out["summary"]["completed"] == requests
    assert f"trace {trace} ({fmt})" in r.stderr  # the t = 0 origin (and any skipped rows) is printed


def test_trace_columns_flag_and_config_key(project):
    r = run_cli(*SERVE, "--model", "llama-3-8b", "--trace", "gateway_ms.csv", cwd=project)
    assert r.returncode == 2 and "--trace-columns" in r.stderr and "Traceback" not in r.stderr
    mapping = "arrival=sent_ms,prompt=input_len,output=output_len,arrival_unit=ms"
    r = run_cli(*SERVE, "--model", "llama-3-8b", "--trace", "gateway_ms.csv", "--trace-columns", mapping, cwd=project)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["inputs"]["workload"]["arrival_span_s"] == pytest.approx(1.0)
    sub = project / "configs"
    sub.mkdir()
    (sub / "serve.yaml").write_text("model: ../tiny-ckpt\ngpu: h100-sxm\ntrace: ../gateway_ms.csv\n"
                                    "trace_columns: {arrival: sent_ms, prompt: input_len, output: output_len, "
                                    "arrival_unit: ms}\n")
    r = run_cli("serve", "-c", str(sub / "serve.yaml"), "--json", cwd=Path("/"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["inputs"]["model"] == "tiny-ckpt" and out["inputs"]["workload"]["requests"] == 3


def test_request_longer_than_the_context(tmp_path):
    trace = tmp_path / "long.csv"
    trace.write_text("Timestamp,Request tokens,Response tokens\n0,1000,100\n1,4000,200\n")
    r = run_cli(*SERVE, "--model", "llama-2-7b", "--trace", str(trace))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "long.csv line 3" in r.stderr and "max_seq_len 4,096" in r.stderr
    r = run_cli(*SERVE, "--model", "llama-3-8b", "--trace", str(trace))  # 8K context: both fit
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("body", ["arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,NaN,5\n",
                                  "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,1e20,5\n"])
def test_hostile_trace_exits_2_naming_file_and_line(tmp_path, body):
    trace = tmp_path / "bad.csv"
    trace.write_text(body)
    r = run_cli(*SERVE, "--model", "llama-3-8b", "--trace", str(trace))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "bad.csv line 3" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_plan_serve_emits_a_config_that_runs_from_anywhere(project):
    out_yaml = project / "out" / "best.yaml"
    out_yaml.parent.mkdir()
    r = run_cli("plan", "serve", "--model", "tiny-ckpt", "--gpu", "h100-sxm", "--max-gpus", "2", "--slo-ttft", "5",
                "--slo-tpot", "0.5", "--trace", "burstgpt.csv", "--workers", "1", "--screen-requests", "3",
                "--refine", "2", "--emit-yaml", str(out_yaml), cwd=project)
    assert r.returncode == 0, r.stderr
    assert "skipped 1 row with 0 output tokens" in r.stderr
    cfg = yaml.safe_load(out_yaml.read_text())
    assert cfg["model"] == str((project / "tiny-ckpt").resolve()) and cfg["trace"] == str(project / "burstgpt.csv")
    r = run_cli("serve", "-c", str(out_yaml), "--json", cwd=Path("/"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"]["completed"] == 4
    mapped = project / "out" / "mapped.yaml"
    r = run_cli("plan", "serve", "--model", "tiny-ckpt", "--gpu", "h100-sxm", "--max-gpus", "1", "--slo-ttft", "5",
                "--slo-tpot", "0.5", "--trace", "gateway_ms.csv", "--trace-columns",
                "arrival=sent_ms,prompt=input_len,output=output_len,arrival_unit=ms", "--workers", "1",
                "--screen-requests", "3", "--refine", "1", "--emit-yaml", str(mapped), cwd=project)
    assert r.returncode == 0, r.stderr
    assert "arrival_unit=ms" in yaml.safe_load(mapped.read_text())["trace_columns"]
    r = run_cli("serve", "-c", str(mapped), "--json", cwd=Path("/"))
    assert r.returncode == 0, r.stderr


def test_plan_train_emits_the_model_folder_not_its_name(project):
    out_yaml = project / "train.yaml"
    r = run_cli("plan", "train", "--model", "tiny-ckpt", "--gpu", "h100-sxm", "--gpus", "8", "--seq-len", "2048",
                "--global-batch", "64", "--workers", "1", "--emit-yaml", str(out_yaml), cwd=project)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(out_yaml.read_text())["model"] == str((project / "tiny-ckpt").resolve())
    r = run_cli("train", "-c", str(out_yaml), "--json", cwd=Path("/"))
    assert r.returncode == 0, r.stderr
