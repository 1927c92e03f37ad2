"""Serving metrics, per request and in summary. Every name carries its unit.

Per request: `ttft_s` (arrival to first token), `tpot_s` ((last - first token) / (output - 1)),
`e2e_s` (arrival to last token), `queueing_s` (arrival to first scheduled), `preemptions`.
Inter-token latencies (`itl_*`) are every gap between consecutive tokens of a request, pooled
over requests (vLLM's "ITL" histogram is this pool: its mean is per output token). Summary:
mean/p50/p90/p99 of each; `requests_per_s`, `input_tokens_per_s`, `output_tokens_per_s` over the
makespan (first arrival to last token); `kv_utilization_mean` (time-averaged used/capacity
blocks); `gpu_hours`; `energy_j` (power = idle + (TDP - idle) x busy fraction x activity, per GPU:
cost.energy, serving.power_phase) and
`energy_j_per_token` per output token; `cost_usd_per_m_tokens` per million output tokens at the
catalog's $/GPU-hour. The SLO keys (`slo_summary`) and every other key are listed with their
units in docs/metrics.md.

SLOs mean what the papers mean. TTFT, TPOT and E2E are per request, as DistServe's attainment
and vLLM's goodput: a request is good when it completes within every one given, and a run meets
them when `attainment` of its requests are good. ITL is over all inter-token gaps, as
Sarathi-Serve's P99 TBT: a run meets it when the `itl_percentile`-th percentile of the pooled gaps
is within it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parasim.errors import InputError
from parasim.specs import edge

#: The per-request SLOs (DistServe, vLLM goodput) and the one over all inter-token gaps (Sarathi-Serve).
PER_REQUEST_SLOS = ("ttft", "tpot", "e2e")
SLO_NAMES = (*PER_REQUEST_SLOS, "itl")
#: Above these an SLO in seconds is surely a value in milliseconds: no streaming client waits 10 s
#: between tokens, and a first token after 10 minutes (or an answer after an hour) is a timeout.
SLO_MAX_S = {"ttft": 600.0, "tpot": 10.0, "itl": 10.0, "e2e": 3600.0}
#: Stability when no TTFT or E2E SLO bounds the wait: the median queueing delay (arrival to first
#: scheduled) must stay within this. Sarathi-Serve's capacity search uses the same bound
#: (microsoft/sarathi-serve, benchmark/capacity_search: scheduling delay at quantile 0.5 <= 2 s).
STABLE_QUEUEING_P50_S = 2.0


def slo_seconds(name: str, value: Any) -> float | None:
    """An SLO value from the edge (a flag or a config key): seconds, positive, finite, and not a
    millisecond figure typed as seconds."""
    v = edge.positive_float(f"slo_{name}", value, allow_none=True)
    if v is not None and v > SLO_MAX_S[name]:
        raise InputError(f"slo_{name}", f"{v:g} s looks like milliseconds: SLOs are in seconds (did you mean "
                                        f"{v / 1e3:g}, i.e. {v:g} ms?); at most {SLO_MAX_S[name]:g} s is read")
    return v


@dataclass(frozen=True, kw_only=True)
class SLO:
    """Latency objectives in seconds (None = not given), the share of requests that must meet the
    per-request ones, and the percentile of all inter-token gaps the ITL one applies to."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    itl_s: float | None = None
    itl_percentile: float = 99.0
    attainment: float = 0.9

    def __post_init__(self) -> None:
        for name in SLO_NAMES:
            slo_seconds(name, getattr(self, f"{name}_s"))
        edge.number("itl_percentile", self.itl_percentile, lo=0, lo_open=True, hi=100)
        edge.number("attainment", self.attainment, lo=0, lo_open=True, hi=1)

    @property
    def given(self) -> bool:
        return any(getattr(self, f"{n}_s") is not None for n in SLO_NAMES)

    @property
    def per_request(self) -> tuple[str, ...]:
        """The per-request SLOs given, in SLO_NAMES order."""
        return tuple(n for n in PER_REQUEST_SLOS if getattr(self, f"{n}_s") is not None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in SLO_NAMES if getattr(self, f"{n}_s") is not None)

    def queueing_limit_s(self, max_queueing_p50_s: float | None = None) -> float | None:
        """The median-queueing bound a stable run keeps: the one given, else STABLE_QUEUEING_P50_S
        when neither a TTFT nor an E2E SLO bounds the wait itself (None: no separate bound)."""
        if max_queueing_p50_s is not None:
            return float(max_queueing_p50_s)
        return None if (self.ttft_s is not None or self.e2e_s is not None) else STABLE_QUEUEING_P50_S

    def to_dict(self) -> dict[str, Any]:
        return {"ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "e2e_s": self.e2e_s, "itl_s": self.itl_s,
                "itl_percentile": self.itl_percentile, "attainment": self.attainment}

    @classmethod
    def of(cls, slo: Any) -> SLO:
        """An SLO, or a mapping with `ttft_s` / `slo_ttft` style keys (and `itl_percentile`, `attainment`)."""
        if slo is None:
            return cls()
        if isinstance(slo, SLO):
            return slo
        d = dict(slo)
        kw: dict[str, Any] = {f"{n}_s": d.get(f"{n}_s", d.get(f"slo_{n}")) for n in SLO_NAMES}
        for k in ("itl_percentile", "attainment"):
            if d.get(k) is not None:
                kw[k] = d[k]
        return cls(**kw)


def stats(x: np.ndarray, prefix: str) -> dict[str, float | None]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {f"{prefix}_{k}_s": None for k in ("mean", "p50", "p90", "p99")}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {f"{prefix}_mean_s": float(x.mean()), f"{prefix}_p50_s": float(p50), f"{prefix}_p90_s": float(p90),
            f"{prefix}_p99_s": float(p99)}


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float | None:
    """The q-th percentile (0 < q <= 100) of `values` each counted `weights` times: the smallest
    value whose cumulative weight reaches q % of the total (the inverted-CDF rule); None if empty."""
    out = weighted_percentiles(values, weights, [q])
    return None if out is None else out[0]


def _sorted_weighted(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The values of positive weight in ascending order (stable), their weights, and the cumulative weights."""
    m = weights > 0
    v = values[m]
    order = np.argsort(v, kind="stable")
    w = weights[m].astype(np.float64)[order]
    return v[order], w, np.cumsum(w)


def _at(v: np.ndarray, cw: np.ndarray, qs) -> list[float]:
    i = np.searchsorted(cw, np.asarray(qs, dtype=np.float64) / 100.0 * cw[-1], side="left")
    return v[np.minimum(i, v.size - 1)].astype(np.float64).tolist()


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs) -> list[float] | None:
    """`weighted_percentile` at each of `qs` (0 gives the smallest value), with one sort."""
    v, _, cw = _sorted_weighted(values, weights)
    return _at(v, cw, qs) if v.size else None


def weighted_stats(values: np.ndarray, weights: np.ndarray, prefix: str) -> dict[str, float | None]:
    """Weighted mean and p50/p90/p99, from one sort (millions of inter-token gaps in a long run)."""
    v, w, cw = _sorted_weighted(values, weights)
    if not v.size:
        return {f"{prefix}_{k}_s": None for k in ("mean", "p50", "p90", "p99")}
    out = {f"{prefix}_mean_s": float((v * w).sum() / cw[-1])}  # summed in sorted order, as before
    out.update(zip((f"{prefix}_p{q}_s" for q in (50, 90, 99)), _at(v, cw, (50, 90, 99))))
    return out


def request_columns(st, workload) -> dict[str, np.ndarray]:
    arrival = workload.arrival_s
    first = np.frombuffer(st.first_token_s, dtype=np.float64)
    last = np.frombuffer(st.finish_s, dtype=np.float64)
    sched = np.frombuffer(st.first_scheduled_s, dtype=np.float64)
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
            "preemptions": np.frombuffer(st.preemptions, dtype=np.int64).copy(),
            "instance": np.frombuffer(st.instance, dtype=np.int64).copy()}


def _judged(cols: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Each request's value for a per-request SLO as the SLO judges it: +inf when it did not
    complete; a one-token output's TPOT (undefined) counts as 0, as vLLM's goodput counts it."""
    v = cols[f"{name}_s"]
    if name == "tpot":
        v = np.where(np.isnan(v), 0.0, v)
    return np.where(cols["completed"] & ~np.isnan(v), v, np.inf)


def slo_mask(cols: dict[str, np.ndarray], slo: SLO) -> np.ndarray:
    """Requests that completed within every per-request SLO given."""
    ok = cols["completed"].copy()
    for name in slo.per_request:
        ok &= _judged(cols, name) <= getattr(slo, f"{name}_s")
    return ok


def _at_attainment(values: np.ndarray, attainment: float) -> float:
    """The smallest v such that a share of at least `attainment` of the values is <= v (the share
    compared as the attainment itself is, so v <= SLO exactly when that SLO alone is attained)."""
    n = values.size
    v = np.sort(values)
    m = min(n, max(1, int(np.ceil(attainment * n))))
    while m > 1 and (m - 1) / n >= attainment:
        m -= 1
    while m < n and m / n < attainment:
        m += 1
    return float(v[m - 1])


def slo_summary(slo: SLO, cols: dict[str, np.ndarray] | None = None,
                itl: tuple[np.ndarray, np.ndarray] | None = None, makespan_s: float | None = None) -> dict[str, Any]:
    """The SLO keys of a summary (all null without SLOs; `cols` None: nothing ran).

    `slo_attainment`: share of all requests that completed within every per-request SLO;
    `goodput_requests_per_s`: those requests per second of makespan (vLLM's request goodput); both
    null when only the ITL SLO is given. `slo_itl_observed_s`: the ITL at `itl_percentile`.
    `slo_ratio_<name>`: the tail each SLO is judged on over the SLO (per-request: the value at the
    attainment share; ITL: its percentile), > 1 when that SLO alone is missed (inf, null in JSON,
    when nothing completed). `slo_binding`: the SLO with the largest ratio. `slo_met`: the run meets
    the joint attainment and the ITL percentile."""
    out: dict[str, Any] = {"slo_attainment": None, "goodput_requests_per_s": None, "slo_met": None,
                           "slo_binding": None, "slo_itl_observed_s": None,
                           **{f"slo_ratio_{n}": None for n in SLO_NAMES}}
    if not slo.given:
        return out
    out["slo_met"] = False
    if slo.per_request:
        out["slo_attainment"] = out["goodput_requests_per_s"] = 0.0
    ratios = {n: np.inf for n in slo.names}
    if cols is not None and len(cols["completed"]):
        met = True
        if slo.per_request:
            ok = slo_mask(cols, slo)
            out["slo_attainment"] = float(ok.sum() / ok.size)
            out["goodput_requests_per_s"] = float(ok.sum() / makespan_s)
            met = out["slo_attainment"] >= slo.attainment
            for n in slo.per_request:
                ratios[n] = _at_attainment(_judged(cols, n), slo.attainment) / getattr(slo, f"{n}_s")
        if slo.itl_s is not None:
            obs = weighted_percentile(*itl, slo.itl_percentile) if itl is not None else None
            out["slo_itl_observed_s"] = obs
            if obs is None:  # no gaps: every completed request had one output token (met), or none completed
                met = met and bool(cols["completed"].any())
                ratios["itl"] = 0.0 if cols["completed"].any() else np.inf
            else:
                met = met and obs <= slo.itl_s
                ratios["itl"] = obs / slo.itl_s
        out["slo_met"] = bool(met)
    out["slo_binding"] = max(ratios, key=lambda n: ratios[n])
    out.update({f"slo_ratio_{n}": float(r) for n, r in ratios.items()})
    return out


def missed_slos(summary: dict[str, Any]) -> list[str]:
    """The SLOs a run's summary (as `simulate` returns it, ratios still inf where unknown) misses:
    each whose ratio is over 1; when only their joint attainment fails, the binding one."""
    if summary.get("slo_met") in (None, True):
        return []
    out = [n for n in SLO_NAMES if (r := summary.get(f"slo_ratio_{n}")) is not None and r > 1.0]
    return out or [summary["slo_binding"]]


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
