"""`serve --bench-json FILE`: vLLM's benchmark result keys and units (milliseconds), so dashboards
that read `vllm bench serve --save-result` files read parasim's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from parasim.report.vllm_bench import peak_concurrency
from tests.conftest import run_cli

SERVE = ["serve", "--model", "mistral-7b", "--gpu", "a100-sxm-80gb", "--prompt-tokens", "256", "--output-tokens", "32"]
VLLM_KEYS = {"completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput", "request_goodput",
             "output_throughput", "total_token_throughput", "duration", "num_prompts", "request_rate", "burstiness",
             "max_concurrency", "max_concurrent_requests", "model_id", "backend"} | {
    f"{stat}_{m}_ms" for stat in ("mean", "median", "std", "p90", "p95", "p99") for m in ("ttft", "tpot", "itl", "e2el")}


def _run(tmp_path, *args):
    bench = tmp_path / "bench.json"
    r = run_cli(*SERVE, *args, "--json", "--bench-json", str(bench))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), json.loads(bench.read_text()), bench.read_bytes()


def test_burst_bench_file_has_vllm_keys_in_milliseconds(tmp_path):
    out, b, _ = _run(tmp_path, "--burst", "--requests", "8")
    s = out["summary"]
    assert VLLM_KEYS <= set(b)
    # 8 requests at t = 0 on an engine that runs up to 256 at once: all 8 are in flight together
    assert b["max_concurrent_requests"] == 8 and b["request_rate"] == "inf" and b["max_concurrency"] is None
    assert b["num_prompts"] == 8 and b["completed"] + b["failed"] == 8
    assert b["total_input_tokens"] == 8 * 256 and b["total_output_tokens"] == 8 * 32
    assert b["duration"] == s["makespan_s"]
    assert b["total_token_throughput"] == pytest.approx(8 * (256 + 32) / b["duration"])
    assert b["request_throughput"] == pytest.approx(8 / b["duration"])
    assert b["request_goodput"] is None  # no SLO given, as vLLM writes it without --goodput
    for ms, sec in (("mean_ttft_ms", "ttft_mean_s"), ("median_tpot_ms", "tpot_p50_s"), ("p99_e2el_ms", "e2e_p99_s"),
                    ("p99_itl_ms", "itl_p99_s"), ("p90_ttft_ms", "ttft_p90_s"), ("mean_itl_ms", "itl_mean_s")):
        assert b[ms] == pytest.approx(1e3 * s[sec]), ms
    # TPOT is per request (output - 1 gaps each): all requests have 31 gaps here, so mean TPOT = mean ITL
    assert b["mean_tpot_ms"] == pytest.approx(b["mean_itl_ms"])


def test_goodput_and_rate_follow_the_run(tmp_path):
    out, b, raw = _run(tmp_path, "--rate", "3", "--requests", "30", "--arrival", "gamma", "--cv", "2",
                       "--slo-ttft", "0.2", "--slo-tpot", "0.05")
    assert b["request_rate"] == 3 and b["burstiness"] == pytest.approx(0.25)  # vLLM's burstiness is the gamma shape 1/cv^2
    assert b["request_goodput"] == out["summary"]["goodput_requests_per_s"]
    again = _run(tmp_path, "--rate", "3", "--requests", "30", "--arrival", "gamma", "--cv", "2",
                 "--slo-ttft", "0.2", "--slo-tpot", "0.05")[2]
    assert raw == again  # deterministic byte for byte


def test_unwritable_bench_file_is_exit_1(tmp_path):
    r = run_cli(*SERVE, "--rate", "2", "--requests", "5", "--bench-json", str(tmp_path))
    assert r.returncode == 1 and "cannot write" in r.stderr


@pytest.mark.parametrize("start, end, peak", [
    ([0.0, 1.0], [1.0, 2.0], 1),          # one ends as the next starts: never two at once
    ([0.0, 1.0], [2.0, 3.0], 2),
    ([0.0, 0.0, 0.0], [5.0, 1.0, 2.0], 3),
    ([], [], 0),
])
def test_peak_concurrency_over_half_open_intervals(start, end, peak):
    assert peak_concurrency(np.array(start), np.array(end)) == peak
