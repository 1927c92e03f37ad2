"""Compact views of a recorded run for figures: counters over time and latency distributions.

`series` sums the counters of every engine instance (KV blocks in use over the blocks of all
instances, running and waiting requests over all instances) and averages them over at most
SERIES_POINTS equal time bins, weighting by time: a bin's value is the counter's integral over
the bin divided by its width, so the series' time-weighted mean is the run's (without a prefix
cache, the KV fraction's mean is the summary's `kv_utilization_mean`). `distributions` gives each
latency at every whole percentile, enough to draw its CDF faithfully in 101 points.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parasim.serving.metrics import weighted_percentiles
from parasim.serving.recording import InstanceRecord, Recording

#: most time bins in `series` (a figure's width in pixels is about this)
SERIES_POINTS = 500
COUNTERS = ("kv_blocks", "running", "waiting")
PERCENTS = list(range(101))


def samples(rec: InstanceRecord) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One instance's counter samples in time order: each start, then its end (an iteration's end
    and the next start can share an instant; the start comes second)."""
    s, e = rec.starts, rec.ends
    n = rec.iterations
    t = np.concatenate([s["t_s"], e["t_s"]])
    it = np.concatenate([np.arange(n), np.arange(n)])
    kind = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
    order = np.lexsort((kind, it, t))
    return t[order], {c: np.concatenate([s[c], e[c]])[order] for c in COUNTERS}


def _summed(recording: Recording) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The counters summed over instances as a step function: change times and values after them."""
    times, deltas = [], {c: [] for c in COUNTERS}
    for rec in recording.instances:
        t, vals = samples(rec)
        times.append(t)
        for c in COUNTERS:
            deltas[c].append(np.diff(vals[c], prepend=0))
    if not times:
        return np.zeros(0), {c: np.zeros(0) for c in COUNTERS}
    t = np.concatenate(times)
    order = np.argsort(t, kind="stable")
    return t[order], {c: np.cumsum(np.concatenate(deltas[c])[order]).astype(np.float64) for c in COUNTERS}


def bin_means(t: np.ndarray, v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time-weighted means over [edges[i], edges[i+1]) of the step function that is 0 before t[0]
    and v[k] from t[k] on."""
    if t.size == 0:
        return np.zeros(edges.size - 1)
    area = np.concatenate([[0.0], np.cumsum(v[:-1] * np.diff(t))])
    k = np.searchsorted(t, edges, side="right") - 1
    kk = np.maximum(k, 0)
    integral = np.where(k >= 0, area[kk] + v[kk] * (edges - t[kk]), 0.0)
    # a mean lies within the function's range; the clip only removes the rounding of differencing
    # a growing running integral
    return np.clip(np.diff(integral) / np.diff(edges), min(0.0, v.min()), max(0.0, v.max()))


def series(recording: Recording, t0_s: float, t1_s: float, points: int = SERIES_POINTS) -> dict[str, Any]:
    """Counters over [t0_s, t1_s] in at most `points` bins (t_s: each bin's start, seconds)."""
    n = max(1, min(points, recording.iterations))
    width = max(t1_s - t0_s, 1e-12) / n
    edges = t0_s + width * np.arange(n + 1)
    t, vals = _summed(recording)
    cap = sum(r.kv_capacity_blocks for r in recording.instances)
    means = {c: bin_means(t, vals[c], edges) for c in COUNTERS}
    return {"t_s": edges[:-1].tolist(), "bin_s": width, "kv_used": (means["kv_blocks"] / cap).tolist(),
            "running": means["running"].tolist(), "waiting": means["waiting"].tolist(),
            "kv_capacity_blocks": cap, "instances": len(recording.instances),
            "max_running": sum(r.max_batch for r in recording.instances)}


def distributions(cols: dict[str, np.ndarray], itl: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    """Each latency at 0, 1, ..., 100 % (None when it has no value): TTFT, TPOT and E2E over
    requests (numpy's linear rule, as the summary's percentiles), ITL over every inter-token gap
    (the summary's inverted-CDF rule)."""
    out: dict[str, Any] = {"percent": PERCENTS}
    for name in ("ttft", "tpot", "e2e"):
        x = cols[f"{name}_s"]
        x = x[np.isfinite(x)]
        out[f"{name}_s"] = np.percentile(x, PERCENTS).tolist() if x.size else None
        out[f"{name}_count"] = int(x.size)
    out["itl_s"] = weighted_percentiles(*itl, PERCENTS) if itl is not None else None
    out["itl_count"] = int(itl[1].sum()) if itl is not None else 0
    return out
