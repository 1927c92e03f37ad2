"""Requests: read from a trace (JSONL or CSV, `serving.traces`) or drawn from a seeded generator.

A workload is columns, not objects (a million requests are five numpy arrays): arrival time,
prompt tokens, output tokens, and the optional shared prefix (id and length, -1/0 when none).
Generators own their `numpy.random.Generator`; nothing touches global random state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parasim.errors import InputError

ARRIVALS = ("poisson", "gamma")
LENGTH_DISTS = ("fixed", "lognormal")
#: Default sigma of lognormal lengths (of the underlying normal): a spread typical of chat
#: workloads' prompt and output lengths without an extreme tail (p99 ~ 2.8 x the mean).
LENGTH_SIGMA = 0.5


@dataclass(frozen=True, kw_only=True)
class Request:
    """One request as a record (for building small workloads by hand and in tests)."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_id: int = -1
    prefix_tokens: int = 0


@dataclass(frozen=True, eq=False)
class Workload:
    arrival_s: np.ndarray  # float64, sorted ascending
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    prefix_id: np.ndarray  # int64, -1 = no shared prefix
    prefix_tokens: np.ndarray  # int64, 0..prompt_tokens
    trace: dict[str, Any] | None = None  # where a trace came from (serving.traces.read_trace)

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @classmethod
    def from_columns(cls, arrival_s: Any, prompt_tokens: Any, output_tokens: Any, prefix_id: Any = None,
                     prefix_tokens: Any = None, *, where: str = "workload") -> Workload:
        a = np.asarray(arrival_s, dtype=np.float64).reshape(-1)
        p = np.asarray(prompt_tokens, dtype=np.int64).reshape(-1)
        o = np.asarray(output_tokens, dtype=np.int64).reshape(-1)
        n = a.shape[0]
        pid = np.full(n, -1, np.int64) if prefix_id is None else np.asarray(prefix_id, dtype=np.int64).reshape(-1)
        pt = np.zeros(n, np.int64) if prefix_tokens is None else np.asarray(prefix_tokens, dtype=np.int64).reshape(-1)
        if n == 0:
            raise InputError(where, "no requests (empty workload)")
        if not (p.shape[0] == o.shape[0] == pid.shape[0] == pt.shape[0] == n):
            raise InputError(where, "columns have different lengths")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise InputError(f"{where}.arrival_s", "must be finite and >= 0")
        if np.any(p < 1):
            raise InputError(f"{where}.prompt_tokens", f"must be >= 1, got {int(p.min())}")
        if np.any(o < 1):
            raise InputError(f"{where}.output_tokens", f"must be >= 1, got {int(o.min())}")
        if np.any(pt < 0) or np.any(pt > p):
            raise InputError(f"{where}.prefix_tokens", "must be between 0 and prompt_tokens")
        pt = np.where(pid >= 0, pt, 0)
        order = np.argsort(a, kind="stable")
        if np.any(order != np.arange(n)):
            a, p, o, pid, pt = a[order], p[order], o[order], pid[order], pt[order]
        return cls(a, p, o, pid, pt)

    @classmethod
    def from_requests(cls, requests: Iterable[Request | Mapping[str, Any]]) -> Workload:
        rows = [r if isinstance(r, Request) else Request(**dict(r)) for r in requests]
        return cls.from_columns([r.arrival_s for r in rows], [r.prompt_tokens for r in rows],
                                [r.output_tokens for r in rows], [r.prefix_id for r in rows],
                                [r.prefix_tokens for r in rows])

    def head(self, n: int) -> Workload:
        return Workload(self.arrival_s[:n], self.prompt_tokens[:n], self.output_tokens[:n],
                        self.prefix_id[:n], self.prefix_tokens[:n], self.trace)

    def summary(self) -> dict[str, Any]:
        span = float(self.arrival_s[-1] - self.arrival_s[0])
        return {"requests": len(self), "prompt_tokens_mean": float(self.prompt_tokens.mean()),
                "output_tokens_mean": float(self.output_tokens.mean()), "arrival_span_s": span,
                "offered_requests_per_s": (len(self) - 1) / span if span > 0 else None,
                "shared_prefix_requests": int((self.prefix_id >= 0).sum())} | (
                    {"trace": self.trace} if self.trace else {})


def as_workload(requests: Workload | Iterable[Request | Mapping[str, Any]]) -> Workload:
    return requests if isinstance(requests, Workload) else Workload.from_requests(requests)


# --- traces ---------------------------------------------------------------------------------------
def read_trace(path: str | Path, **kwargs: Any) -> Workload:
    """A trace file as a Workload; the formats and rules are `serving.traces.read_trace`'s."""
    from parasim.serving.traces import read_trace as read

    return read(path, **kwargs)


# --- generator ------------------------------------------------------------------------------------
def read_length_distribution(path: str | Path, *, field: str) -> tuple[np.ndarray, np.ndarray]:
    """A file of lengths: one integer per line, or `length,weight` per line; `#` comments allowed
    (specs.length_file: every bad line is an error naming the file and line)."""
    from parasim.serving.traces import MAX_TRACE_TOKENS
    from parasim.specs.length_file import read_lengths

    values, weights = read_lengths(path, field, hi=MAX_TRACE_TOKENS, weighted=True)
    wa = np.asarray(weights, dtype=np.float64)
    return np.asarray(values, dtype=np.int64), wa / wa.sum()


def _lengths(rng: np.random.Generator, n: int, fixed: int | None, dist: str | Path | None, field: str) -> np.ndarray:
    if dist is not None:
        values, probs = read_length_distribution(dist, field=field)
        return values[rng.choice(values.shape[0], size=n, p=probs)]
    if fixed is None:
        raise InputError(field, "give a fixed length or a distribution file")
    if fixed < 1:
        raise InputError(field, f"must be >= 1, got {fixed}")
    return np.full(n, int(fixed), dtype=np.int64)


def _lognormal_lengths(rng: np.random.Generator, n: int, mean: int, sigma: float, cap: int | None) -> np.ndarray:
    """Lognormal integers with arithmetic mean `mean` (before rounding and clipping to [1, cap])."""
    x = rng.lognormal(np.log(mean) - sigma * sigma / 2, sigma, size=n)
    return np.clip(np.rint(x), 1, max(1, cap) if cap is not None else None).astype(np.int64)


def generate(*, requests: int, rate: float | None = None, seed: int = 0, arrival: str = "poisson",
             cv: float = 1.0, burst: bool = False, prompt_tokens: int | None = 512, output_tokens: int | None = 128,
             prompt_dist: str | Path | None = None, output_dist: str | Path | None = None,
             length_dist: str = "fixed", length_sigma: float = LENGTH_SIGMA,
             max_total_tokens: int | None = None) -> Workload:
    """`requests` requests at `rate` per second (Poisson, or gamma inter-arrivals with coefficient of
    variation `cv`), or all at t = 0 with `burst`.

    Lengths: `fixed` (`prompt_tokens`/`output_tokens`, or files of lengths `prompt_dist`/
    `output_dist`), or `lognormal` with `prompt_tokens`/`output_tokens` as the means and
    `length_sigma` the sigma of the underlying normal. Lognormal lengths come from their own
    generator (seeded from `seed`), so arrivals are the same as with fixed lengths; with
    `max_total_tokens` (the model's context) a prompt is at most `max_total_tokens - 1` and its
    output at most what is left."""
    if requests is None or requests < 1:
        raise InputError("requests", f"must be a positive integer, got {requests}")
    if arrival not in ARRIVALS:
        raise InputError("arrival", f"'{arrival}' is not one of {', '.join(ARRIVALS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError("seed", f"must be an integer >= 0, got {seed!r}")
    if length_dist not in LENGTH_DISTS:
        raise InputError("length_dist", f"'{length_dist}' is not one of {', '.join(LENGTH_DISTS)}")
    rng = np.random.default_rng(seed)
    if burst:
        arr = np.zeros(requests)
    else:
        if rate is None or not rate > 0 or not np.isfinite(rate):
            raise InputError("rate", f"must be a positive number of requests per second, got {rate}")
        if arrival == "poisson":
            gaps = rng.exponential(1.0 / rate, size=requests)
        else:
            if not cv > 0:
                raise InputError("cv", f"must be > 0, got {cv}")
            shape = 1.0 / (cv * cv)
            gaps = rng.gamma(shape, 1.0 / (rate * shape), size=requests)
        arr = np.cumsum(gaps) - gaps[0]  # first request at t = 0
    if length_dist == "fixed":
        p = _lengths(rng, requests, prompt_tokens, prompt_dist, "prompt_dist" if prompt_dist else "prompt_tokens")
        o = _lengths(rng, requests, output_tokens, output_dist, "output_dist" if output_dist else "output_tokens")
        return Workload.from_columns(arr, p, o)
    if prompt_dist is not None or output_dist is not None:
        raise InputError("length_dist", "lognormal lengths are drawn around prompt_tokens/output_tokens; "
                                        "drop prompt_dist/output_dist (or use length_dist: fixed)")
    if not (isinstance(length_sigma, (int, float)) and length_sigma > 0 and np.isfinite(length_sigma)):
        raise InputError("length_sigma", f"must be a positive number, got {length_sigma!r}")
    for name, v in (("prompt_tokens", prompt_tokens), ("output_tokens", output_tokens)):
        if v is None or v < 1:
            raise InputError(name, f"lognormal needs a mean >= 1, got {v}")
    if max_total_tokens is not None and max_total_tokens < 2:
        raise InputError("max_total_tokens", f"must be >= 2, got {max_total_tokens}")
    lrng = np.random.default_rng([seed, 1])
    p = _lognormal_lengths(lrng, requests, int(prompt_tokens), float(length_sigma),
                           None if max_total_tokens is None else max_total_tokens - 1)
    o = _lognormal_lengths(lrng, requests, int(output_tokens), float(length_sigma), max_total_tokens)
    if max_total_tokens is not None:
        o = np.minimum(o, np.maximum(1, max_total_tokens - p))
    return Workload.from_columns(arr, p, o)
