"""Outputs a script can rely on: `--json-out FILE` on every command that has `--json` writes exactly
what `--json` prints; a file that cannot be written (a directory, a path under a regular file, a
full disk) is exit 1 with the path and the operating system's reason, never a traceback."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_cli

FULL = Path("/dev/full")  # every write fails with ENOSPC
needs_full = pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")

CASE = """cases:
- id: c
  kind: serving
  software: vllm 0.10.1
  model: {catalog: llama-3.1-8b}
  hardware: {accelerator: h100-sxm, gpus: 1}
  plan: {tp: 1}
  workload: {requests: 20, prompt_tokens: 128, output_tokens: 16, arrival: burst}
  measured: {output_tokens_per_s: 1000.0}
"""

COMMANDS = {
    "models": ["models"],
    "gpus": ["gpus"],
    "inspect": ["inspect", "--model", "llama-3-8b", "--gpu", "h100-sxm"],
    "train": ["train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--tp", "2", "--global-batch", "16",
              "--seq-len", "2048"],
    "serve": ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "5", "--requests", "30",
              "--prompt-tokens", "128", "--output-tokens", "16"],
    "plan train": ["plan", "train", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "16", "--global-batch", "32",
                   "--seq-len", "2048", "--zero", "1", "--micro-batch", "1", "--workers", "1"],
    "plan serve": ["plan", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--max-gpus", "1", "--rate", "4",
                   "--prompt-tokens", "256", "--output-tokens", "32", "--requests", "40", "--screen-requests", "40",
                   "--slo-ttft", "1", "--slo-tpot", "0.05", "--schedulers", "sarathi", "--token-budgets", "512",
                   "--max-batches", "64", "--precisions", "bf16", "--workers", "1"],
    "validate": ["validate", "CASES"],
}


@pytest.fixture
def cases(tmp_path):
    f = tmp_path / "cases.yaml"
    f.write_text(CASE)
    return str(f)


def command(name: str, cases: str) -> list[str]:
    return [cases if a == "CASES" else a for a in COMMANDS[name]]


def cannot_write(r, path, reason: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"parasim: error: cannot write {path}") and reason in last, last


@pytest.mark.parametrize("name", list(COMMANDS))
def test_json_out_writes_what_json_prints(name, cases, tmp_path):
    f = tmp_path / "deeper" / "out.json"  # parent folders are created
    r = run_cli(*command(name, cases), "--json", "--json-out", str(f))
    assert r.returncode == 0, r.stderr
    assert f.read_text() == r.stdout
    json.loads(r.stdout)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_json_out_to_a_directory_fails_before_the_work(name, cases, tmp_path):
    r = run_cli(*command(name, cases), "--json-out", str(tmp_path))
    cannot_write(r, tmp_path, os.strerror(errno.EISDIR))
    assert r.stdout == ""  # said at once, before any result


@pytest.mark.parametrize("name", ["models", "train", "serve", "plan train"])
def test_json_out_under_a_regular_file_exits_1(name, cases, tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "out.json"
    cannot_write(run_cli(*command(name, cases), "--json-out", str(target)), target, os.strerror(errno.ENOTDIR))


@needs_full
@pytest.mark.parametrize("name", ["gpus", "inspect", "train", "serve", "plan serve", "validate"])
def test_json_out_on_a_full_disk_exits_1_after_printing_the_answer(name, cases):
    r = run_cli(*command(name, cases), "--json", "--json-out", str(FULL))
    cannot_write(r, FULL, os.strerror(errno.ENOSPC))
    json.loads(r.stdout)  # the answer was computed and printed


@needs_full
def test_emit_yaml_and_markdown_on_a_full_disk_exit_1(cases, tmp_path):
    cannot_write(run_cli(*command("plan train", cases), "--emit-yaml", str(FULL)), FULL, os.strerror(errno.ENOSPC))
    cannot_write(run_cli("validate", cases, "--markdown", str(FULL)), FULL, os.strerror(errno.ENOSPC))
    cannot_write(run_cli("validate", cases, "--markdown", str(tmp_path)), tmp_path, os.strerror(errno.EISDIR))
    cannot_write(run_cli("validate", cases, "--error-table", str(FULL)), FULL, os.strerror(errno.ENOSPC))
    cannot_write(run_cli("validate", cases, "--error-table", str(tmp_path)), tmp_path, os.strerror(errno.EISDIR))


def test_emit_yaml_to_a_directory_exits_1_before_the_search(tmp_path, cases):
    r = run_cli(*command("plan serve", cases), "--emit-yaml", str(tmp_path))
    cannot_write(r, tmp_path, os.strerror(errno.EISDIR))
    assert r.stdout == ""


def test_requests_out_that_cannot_be_written_exits_1(tmp_path, cases):
    d = tmp_path / "r.csv"
    d.mkdir()
    cannot_write(run_cli(*command("serve", cases), "--requests-out", str(d)), d, os.strerror(errno.EISDIR))
    (tmp_path / "f").write_text("x")
    target = tmp_path / "f" / "r.jsonl"
    cannot_write(run_cli(*command("serve", cases), "--requests-out", str(target)), target, os.strerror(errno.ENOTDIR))


def test_train_config_json_out_key_is_relative_to_the_config(tmp_path):
    """`json_out:` in a `parasim train -c` file is the `--json-out` flag, relative to the file."""
    cfg = tmp_path / "sub" / "plan.yaml"
    cfg.parent.mkdir()
    cfg.write_text("model: llama-3-8b\ngpu: h100-sxm\ngpus: 8\ntp: 2\nglobal_batch: 16\nseq_len: 2048\n"
                   "json_out: result.json\n")
    r = run_cli("train", "-c", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    assert (cfg.parent / "result.json").read_text() == r.stdout
