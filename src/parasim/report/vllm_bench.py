"""A serving run as a vLLM benchmark result file (`vllm bench serve --save-result`, formerly
benchmarks/benchmark_serving.py), so dashboards that read those files read parasim's too.

Same key names and units: counts, throughputs per second, latencies in milliseconds as
`mean_<m>_ms`, `median_<m>_ms`, `std_<m>_ms` and `p<q>_<m>_ms` for m in ttft, tpot, itl, e2el.
Same populations: TTFT and E2EL over the completed requests, TPOT over the completed requests
with more than one output token, ITL over every inter-token gap. Differences, by design: the
file has no `date` (the output is deterministic); a metric with no values is null, not 0; ITL
percentiles use the inverted-CDF rule of the weighted gap pool (vLLM interpolates linearly
between raw gaps); `max_output_tokens_per_s` is left out (parasim does not keep per-token
times). Every key is listed in docs/metrics.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parasim import __version__
from parasim.serving.metrics import weighted_percentile

#: Percentiles written for every latency metric (vLLM's default is 99 alone; 90 and 95 are the
#: other two its users most often ask for with --metric-percentiles).
BENCH_PERCENTILES = (90.0, 95.0, 99.0)


def _pword(q: float) -> str:
    return str(int(q)) if float(q) == int(q) else f"{q:g}"


def _plain(prefix: str, x: np.ndarray, percentiles: tuple[float, ...]) -> dict[str, float | None]:
    x = x[np.isfinite(x)]
    keys = [f"mean_{prefix}_ms", f"median_{prefix}_ms", f"std_{prefix}_ms", *(f"p{_pword(q)}_{prefix}_ms" for q in percentiles)]
    if x.size == 0:
        return dict.fromkeys(keys)
    vals = [x.mean(), np.median(x), x.std(), *np.percentile(x, list(percentiles))]
    return {k: float(v) * 1e3 for k, v in zip(keys, vals)}


def _weighted(prefix: str, v: np.ndarray, w: np.ndarray, percentiles: tuple[float, ...]) -> dict[str, float | None]:
    m = w > 0
    v, w = v[m], w[m].astype(np.float64)
    keys = [f"mean_{prefix}_ms", f"median_{prefix}_ms", f"std_{prefix}_ms", *(f"p{_pword(q)}_{prefix}_ms" for q in percentiles)]
    if v.size == 0:
        return dict.fromkeys(keys)
    mean = float((v * w).sum() / w.sum())
    std = float(np.sqrt((w * (v - mean) ** 2).sum() / w.sum()))
    vals = [mean, weighted_percentile(v, w, 50.0), std, *(weighted_percentile(v, w, q) for q in percentiles)]
    return {k: float(x) * 1e3 for k, x in zip(keys, vals)}


def peak_concurrency(start_s: np.ndarray, end_s: np.ndarray) -> int:
    """Most requests in flight at once over half-open [start, end) intervals (an end at the same
    instant as a start frees its slot first)."""
    if start_s.size == 0:
        return 0
    t = np.concatenate([start_s, end_s])
    d = np.concatenate([np.ones(start_s.size, dtype=np.int64), -np.ones(end_s.size, dtype=np.int64)])
    order = np.lexsort((d, t))
    return int(np.cumsum(d[order]).max())


def bench_result(res: Any, *, request_rate: float | str | None, burstiness: float | None,
                 max_concurrency: int | None, percentiles: tuple[float, ...] = BENCH_PERCENTILES) -> dict[str, Any]:
    """The vLLM result-file mapping of a ServingResult. `request_rate` is the offered rate, or
    "inf" for a burst (as vLLM writes it); `burstiness` the gamma shape of the arrivals (1 =
    Poisson), None for a trace."""
    s, cols = res.summary, res.requests
    done = np.asarray(cols["completed"], dtype=bool)
    tpot = np.asarray(cols["tpot_s"], dtype=np.float64)
    out: dict[str, Any] = {
        "backend": "parasim", "model_id": res.inputs["model"], "num_prompts": s["requests"],
        "request_rate": request_rate, "burstiness": burstiness, "max_concurrency": max_concurrency,
        "duration": s["makespan_s"], "completed": s["completed"], "failed": s["requests"] - s["completed"],
        "total_input_tokens": s["input_tokens"], "total_output_tokens": s["output_tokens"],
        "request_throughput": s["requests_per_s"], "request_goodput": s["goodput_requests_per_s"],
        "output_throughput": s["output_tokens_per_s"], "total_token_throughput": s["total_tokens_per_s"],
        "max_concurrent_requests": peak_concurrency(np.asarray(cols["arrival_s"])[done],
                                                    np.asarray(cols["finish_s"])[done]),
        "parasim_version": __version__,
    }
    out |= _plain("ttft", np.asarray(cols["ttft_s"])[done], percentiles)
    out |= _plain("tpot", tpot[done & np.isfinite(tpot)], percentiles)
    if res.itl_gaps is not None:
        out |= _weighted("itl", *res.itl_gaps, percentiles)
    else:
        out |= _weighted("itl", np.zeros(0), np.zeros(0), percentiles)
    out |= _plain("e2el", np.asarray(cols["e2e_s"])[done], percentiles)
    return out
