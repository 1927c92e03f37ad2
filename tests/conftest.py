"""Shared fixtures: small factories for specs, and a subprocess runner for the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the same examples every time (a red CI must be reproducible); local runs explore.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

from parasim.specs.accelerator import AcceleratorSpec, Efficiency
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

#: The runtime's memory outside weights, activations and KV cache, as docs/serving.md and
#: docs/cost-model.md state it ("1 GB"). Written here, not imported from parasim.cost.memory, so a
#: test of the KV budget fails when the code and its documentation part ways.
DOCUMENTED_RUNTIME_RESERVE_BYTES = 1e9


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m parasim ARGS` the way a user would, capturing both streams."""
    return subprocess.run([sys.executable, "-m", "parasim", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


def make_model(**kw) -> ModelSpec:
    base = dict(name="tiny-llama", family="llama", layers=4, hidden=1024, heads=16, kv_heads=4, head_dim=64,
                ffn_hidden=2816, vocab=32000)
    base.update(kw)
    return ModelSpec(**base)


def make_accelerator(**kw) -> AcceleratorSpec:
    base = dict(id="test-gpu", name="test", vendor="none",
                peak_flops_per_s={"bf16": 1000e12, "fp16": 1000e12, "fp8": 2000e12},
                hbm_bytes=80e9, hbm_bw_bytes_per_s=3e12, link_bw_bytes_per_s=400e9, tdp_w=700, idle_w=100,
                price_usd_per_hour=2.0, efficiency=Efficiency())
    base.update(kw)
    return AcceleratorSpec(**base)


def make_cluster(gpus: int = 8, **kw) -> ClusterSpec:
    acc = kw.pop("accelerator", None) or make_accelerator()
    return ClusterSpec(accelerator=acc, gpus=gpus, **kw)


def check_fixed_length_row(case) -> None:
    """A serving case with fixed prompt and output lengths predicts, and its tokens add up: output rate =
    request rate x output length, and each request's E2E is its TTFT plus (output - 1) gaps, so the means
    add up the same way."""
    from parasim.validation.serving import predict_case

    r = predict_case(case)
    assert r.status == "ok", r.reason
    p, out = r.predicted, case.workload["output_tokens"]
    assert p["output_tokens_per_s"] == pytest.approx(p["requests_per_s"] * out, rel=1e-9)
    assert p["e2e_mean_s"] == pytest.approx(p["ttft_mean_s"] + (out - 1) * p["tpot_mean_s"], rel=1e-6)


def printed_number(pattern: str, text: str) -> float:
    """The number a `vllm bench serve` printout (quoted in a case's source) gives for `pattern`."""
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in the source"
    return float(m.group(1))


def check_printed_totals(case, min_generated_share: float) -> None:
    """A burst row quoted from a `vllm bench serve` printout: the request count is the printed one; the
    printed input total is requests x the fixed prompt length to within re-tokenization (1 %); the
    generated total is at most requests x output length and at least the file's inclusion share of it;
    the measured values are the printed ones (ms -> s); printed generated tokens / duration is the
    printed throughput to the rounding of the duration."""
    src, wl = case.source, case.workload
    n = printed_number(r"Successful requests (\d+)", src)
    assert wl["requests"] == n
    assert printed_number(r"Total input tokens (\d+)", src) == pytest.approx(wl["prompt_tokens"] * n, rel=1e-2)
    generated = printed_number(r"Total generated tokens (\d+)", src)
    assert min_generated_share * wl["output_tokens"] * n <= generated <= wl["output_tokens"] * n
    tput = printed_number(r"Output token throughput ([\d.]+) tok/s", src)
    assert case.measured["output_tokens_per_s"] == tput
    duration_s = printed_number(r"Benchmark duration ([\d.]+) s", src)
    assert generated / duration_s == pytest.approx(tput, rel=2e-3)
    assert case.measured["ttft_mean_s"] == pytest.approx(printed_number(r"Mean TTFT ([\d.]+) ms", src) / 1e3,
                                                         rel=1e-12)
    assert case.measured["tpot_mean_s"] == pytest.approx(printed_number(r"Mean TPOT ([\d.]+) ms", src) / 1e3,
                                                         rel=1e-12)


def check_burst_printout(case) -> None:
    """A `vllm bench serve` burst printout (N requests sent at t = 0, finished by the end of the run,
    duration T) checked against itself: the printed request rate is N / T (both printed to 0.01); the mean
    E2E, mean TTFT + (output - 1) x mean TPOT (exact when every request generated its full output), is at
    most T, since Little's law puts the time-averaged number in the system, N x mean E2E / T, at no more
    than N; no TTFT exceeds the run (P99 TTFT <= T); the median and mean TTFT lie below the P99."""
    src, out = case.source, case.workload["output_tokens"]
    n = printed_number(r"Successful requests (\d+)", src)
    duration_s = printed_number(r"Benchmark duration ([\d.]+) s", src)
    rate = printed_number(r"Request throughput ([\d.]+) req/s", src)
    assert n / (duration_s + 0.005) - 0.005 <= rate <= n / (duration_s - 0.005) + 0.005
    ttft_mean_s = printed_number(r"Mean TTFT ([\d.]+) ms", src) / 1e3
    e2e_mean_s = ttft_mean_s + (out - 1) * printed_number(r"Mean TPOT ([\d.]+) ms", src) / 1e3
    assert n * e2e_mean_s / duration_s <= n
    ttft_p99_s = printed_number(r"P99 TTFT ([\d.]+) ms", src) / 1e3
    assert ttft_p99_s <= duration_s
    assert printed_number(r"Median TTFT ([\d.]+) ms", src) / 1e3 <= ttft_p99_s
    assert ttft_mean_s <= ttft_p99_s


def serve_config(tmp_path: Path, config_text: str, *extra: str) -> subprocess.CompletedProcess:
    """`parasim serve -c` on a config file written from `config_text` (a plan field set in the file,
    where the edge validates it)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_text)
    return subprocess.run([sys.executable, "-m", "parasim", "serve", "-c", str(cfg), *extra], capture_output=True,
                          text=True)


def check_constant_load_arrivals(arrivals_s, *, rate: float, duration_s: float, seed) -> None:
    """A trace's arrivals are inference-perf's "constant" load (ConstantLoadTimer): rate x duration
    exponential gaps from numpy's generator seeded with `seed`, scaled to sum to the duration, the first
    request at 0 (traces written to the millisecond)."""
    import numpy as np

    n = int(rate * duration_s)
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, n)
    gaps *= duration_s / gaps.sum()
    want = np.cumsum(gaps) - gaps[0]
    got = np.asarray(arrivals_s, dtype=float)
    assert len(got) == n
    assert np.max(np.abs(got - want)) <= 0.0005 + 1e-9
    assert got[-1] < duration_s


def quoted_number(pattern: str, text: str) -> float:
    """The number a case's `source` quotes where `pattern` (one group) finds it; a test fails if absent."""
    m = re.search(pattern, text)
    assert m, pattern
    return float(m.group(1))


def check_serve_key_slows_decode(tmp_path, base_yaml: str, key: str, value: str, bad: str) -> None:
    """A serve config key reaches the plan and lowers output throughput against the same config
    without it; a value outside its choices is one line naming the key, exit 2, no traceback."""
    import json

    def serve(extra: str) -> subprocess.CompletedProcess:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(base_yaml + extra)
        return run_cli("serve", "-c", str(cfg), "--json")

    plain, keyed = serve(""), serve(f"{key}: {value}\n")
    assert plain.returncode == 0 and keyed.returncode == 0, keyed.stderr
    out = json.loads(keyed.stdout)
    assert out["inputs"]["plan"][key] == value
    assert out["summary"]["output_tokens_per_s"] < json.loads(plain.stdout)["summary"]["output_tokens_per_s"]
    refused = serve(f"{key}: {bad}\n")
    assert refused.returncode == 2 and key in refused.stderr and "Traceback" not in refused.stderr
