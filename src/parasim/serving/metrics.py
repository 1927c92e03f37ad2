"""Serving metrics, per request and in summary. Every name carries its unit.

Per request: `ttft_s` (arrival to first token), `tpot_s` ((last - first token) / (output - 1)),
`e2e_s` (arrival to last token), `queueing_s` (arrival to first scheduled), `preemptions`.
Inter-token latencies (`itl_*`) are every gap between consecutive tokens of a request, pooled
over requests (vLLM's "TPOT" histogram is this pool: its mean is per output token). Summary:
mean/p50/p90/p99 of each; `requests_per_s`, `input_tokens_per_s`, `output_tokens_per_s` over the
makespan (first arrival to last token); `slo_attainment` = share of requests meeting every given
SLO (TTFT and per-request TPOT), null without SLOs; `goodput_requests_per_s` = requests meeting
the SLOs per second; `kv_utilization_mean` (time-averaged used/capacity blocks); `gpu_hours`;
`energy_j` (power = idle + (TDP - idle) x busy fraction, per GPU) and `energy_j_per_token` per
output token; `cost_usd_per_m_tokens` per million output tokens at the catalog's $/GPU-hour.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parasim.errors import InputError


@dataclass(frozen=True, kw_only=True)
class SLO:
    ttft_s: float | None = None
    tpot_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tpot_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise InputError(f"slo_{name[:-2]}", f"must be a positive number of seconds, got {v}")

    @property
    def given(self) -> bool:
        return self.ttft_s is not None or self.tpot_s is not None

    @classmethod
    def of(cls, slo: Any) -> SLO:
        if slo is None:
            return cls()
        if isinstance(slo, SLO):
            return slo
        d = dict(slo)
        return cls(ttft_s=d.get("ttft_s", d.get("slo_ttft")), tpot_s=d.get("tpot_s", d.get("slo_tpot")))


def stats(x: np.ndarray, prefix: str) -> dict[str, float | None]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {f"{prefix}_{k}_s": None for k in ("mean", "p50", "p90", "p99")}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {f"{prefix}_mean_s": float(x.mean()), f"{prefix}_p50_s": float(p50), f"{prefix}_p90_s": float(p90),
            f"{prefix}_p99_s": float(p99)}


def weighted_stats(values: np.ndarray, weights: np.ndarray, prefix: str) -> dict[str, float | None]:
    m = weights > 0
    v, w = values[m], weights[m].astype(np.float64)
    if v.size == 0:
        return {f"{prefix}_{k}_s": None for k in ("mean", "p50", "p90", "p99")}
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cw = np.cumsum(w)
    total = cw[-1]
    out = {f"{prefix}_mean_s": float((v * w).sum() / total)}
    for q in (50, 90, 99):
        i = int(np.searchsorted(cw, q / 100.0 * total, side="left"))
        out[f"{prefix}_p{q}_s"] = float(v[min(i, v.size - 1)])
    return out


def request_columns(st, workload) -> dict[str, np.ndarray]:
    arrival = workload.arrival_s
    first = np.frombuffer(st.first_tok, dtype=np.float64)
    last = np.frombuffer(st.finish, dtype=np.float64)
    sched = np.frombuffer(st.first_sched, dtype=np.float64)
    out = workload.output_tokens
    done = last >= 0
    nan = np.nan
    ttft = np.where(first >= 0, first - arrival, nan)
    e2e = np.where(done, last - arrival, nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(done & (out > 1), (last - first) / np.maximum(out - 1, 1), nan)
    queue = np.where(sched >= 0, sched - arrival, nan)
    return {"arrival_s": arrival, "prompt_tokens": workload.prompt_tokens, "output_tokens": out,
            "prefix_id": workload.prefix_id, "prefix_tokens": workload.prefix_tokens, "completed": done,
            "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e, "queueing_s": queue,
            "first_token_s": np.where(first >= 0, first, nan), "finish_s": np.where(done, last, nan),
            "preemptions": np.frombuffer(st.preempt, dtype=np.int64).copy(),
            "instance": np.frombuffer(st.inst, dtype=np.int64).copy()}


def slo_mask(cols: dict[str, np.ndarray], slo: SLO) -> np.ndarray:
    ok = cols["completed"].copy()
    if slo.ttft_s is not None:
        ok &= np.nan_to_num(cols["ttft_s"], nan=np.inf) <= slo.ttft_s
    if slo.tpot_s is not None:
        tp = cols["tpot_s"]
        ok &= np.where(np.isnan(tp), True, tp <= slo.tpot_s)
    return ok


def write_requests(cols: dict[str, np.ndarray], path: str | Path) -> None:
    """Per-request results as CSV or JSONL (by extension); NaN becomes empty / null."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in (".csv", ".jsonl"):
        raise InputError("requests_out", f"file must end in .csv or .jsonl, got '{p.name}'")
    p.parent.mkdir(parents=True, exist_ok=True)
    keys = list(cols)
    lists = {k: cols[k].tolist() for k in keys}
    n = len(lists[keys[0]])

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and v != v else v

    with p.open("w", newline="") as f:
        if ext == ".csv":
            w = csv.writer(f)
            w.writerow(["id", *keys])
            for i in range(n):
                w.writerow([i, *("" if clean(lists[k][i]) is None else lists[k][i] for k in keys)])
        else:
            for i in range(n):
                f.write(json.dumps({"id": i, **{k: clean(lists[k][i]) for k in keys}}, sort_keys=True) + "\n")
