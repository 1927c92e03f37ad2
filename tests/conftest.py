"""Shared fixtures: small factories for specs, and a subprocess runner for the CLI."""

from __future__ import annotations

import os
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
