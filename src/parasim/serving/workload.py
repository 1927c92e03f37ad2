"""Requests: read from a trace (JSONL or CSV, `serving.traces`) or drawn from a seeded generator.

A workload is columns, not objects (a million requests are five numpy arrays): arrival time,
prompt tokens, output tokens, and the optional shared prefix (id and length, -1/0 when none).
Generators own their `numpy.random.Generator`; nothing touches global random state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parasim.errors import InputError
from parasim.serving.requests import Request, Workload, as_workload
from parasim.serving.traces import MAX_TRACE_TOKENS, read_trace
from parasim.specs.length_file import read_lengths

#: one import for callers: the columns (`serving.requests`), a trace read (`serving.traces`), the generator
__all__ = ["ARRIVALS", "LENGTH_DISTS", "LENGTH_SIGMA", "Request", "Workload", "as_workload", "generate",
           "read_length_distribution", "read_trace"]

ARRIVALS = ("poisson", "gamma")
LENGTH_DISTS = ("fixed", "lognormal")
#: Default sigma of lognormal lengths (of the underlying normal): a spread typical of chat
#: workloads' prompt and output lengths without an extreme tail (p99 ~ 2.8 x the mean).
LENGTH_SIGMA = 0.5


# --- generator ------------------------------------------------------------------------------------
def read_length_distribution(path: str | Path, *, field: str) -> tuple[np.ndarray, np.ndarray]:
    """A file of lengths: one integer per line, or `length,weight` per line; `#` comments allowed
    (specs.length_file: every bad line is an error naming the file and line)."""
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
