"""Capacity: the highest Poisson arrival rate whose run still meets the SLOs.

Sarathi-Serve's "capacity" and DistServe's "goodput" are both this number: the largest request
rate at which `attainment` of the requests meet their latency SLOs. The search first brackets
the rate (the saturated throughput of a burst is an upper bound; halve until a rate passes),
then bisects on a log scale to a relative tolerance. Every probe reuses the same seed, so the
curve is monotone up to queueing noise and the answer is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from parasim.errors import InputError


@dataclass(frozen=True)
class CapacityResult:
    requests_per_s: float
    probes: list[tuple[float, bool]]
    result: Any  # the ServingResult at the capacity rate (None if no rate passes)

    def to_dict(self) -> dict[str, Any]:
        return {"capacity_requests_per_s": self.requests_per_s,
                "probes": [{"requests_per_s": r, "meets_slo": ok} for r, ok in self.probes]}


def bisect_rate(run: Callable[[float], Any], meets: Callable[[Any], bool], *, upper: float,
                rel_tol: float = 0.03, max_probes: int = 24) -> CapacityResult:
    """Largest rate in (0, upper] with meets(run(rate)); `run` must be deterministic."""
    if not upper > 0:
        raise InputError("rate", f"capacity search needs a positive upper bound, got {upper}")
    probes: list[tuple[float, bool]] = []

    def probe(rate: float) -> tuple[bool, Any]:
        res = run(rate)
        ok = meets(res)
        probes.append((rate, ok))
        return ok, res

    hi = upper
    ok, r_hi = probe(hi)
    grow = 0
    while ok and grow < 4:  # the bound passed: look above it
        lo_ok, r_lo_ok = hi, r_hi
        hi *= 2.0
        ok, r_hi = probe(hi)
        grow += 1
        if not ok:
            return _refine(probe, probes, lo_ok, r_lo_ok, hi, rel_tol, max_probes)
    if ok:
        return CapacityResult(hi, probes, r_hi)
    lo, r_lo = None, None
    rate = hi
    while lo is None and len(probes) < max_probes:
        rate /= 2.0
        ok, res = probe(rate)
        if ok:
            lo, r_lo = rate, res
        else:
            hi = rate
    if lo is None:
        return CapacityResult(0.0, probes, None)
    return _refine(probe, probes, lo, r_lo, hi, rel_tol, max_probes)


def _refine(probe, probes, lo, r_lo, hi, rel_tol, max_probes) -> CapacityResult:
    """Bisect [lo, hi] on a log scale; lo passes, hi fails."""
    while hi / lo > 1.0 + rel_tol and len(probes) < max_probes:
        mid = float(np.sqrt(lo * hi))
        ok, res = probe(mid)
        if ok:
            lo, r_lo = mid, res
        else:
            hi = mid
    return CapacityResult(lo, probes, r_lo)


def slo_meets(attainment: float) -> Callable[[Any], bool]:
    if not 0.0 < attainment <= 1.0:
        raise InputError("attainment", f"must be in (0, 1], got {attainment}")

    def meets(res: Any) -> bool:
        a = res.summary.get("slo_attainment")
        if a is None:
            raise InputError("slo_ttft", "capacity needs an SLO: give --slo-ttft and/or --slo-tpot")
        return a >= attainment and res.summary["completed"] == res.summary["requests"]

    return meets


def capacity(model, cluster, plan, *, slo, attainment: float = 0.9, requests: int = 1000, seed: int = 0,
             lengths: tuple[np.ndarray, np.ndarray], arrival: str = "poisson", cv: float = 1.0,
             meets: Callable[[Any], bool] | None = None, rel_tol: float = 0.03) -> CapacityResult:
    """Capacity of `plan` for requests with the given (prompt, output) length columns."""
    from parasim.serving.simulate import simulate
    from parasim.serving.workload import Workload

    prompt, output = lengths
    n = min(requests, len(prompt))
    prompt, output = prompt[:n], output[:n]
    rng = np.random.default_rng(seed)
    if arrival == "gamma":
        shape = 1.0 / (cv * cv)
        unit = rng.gamma(shape, 1.0 / shape, size=n)
    else:
        unit = rng.exponential(1.0, size=n)
    unit_t = np.cumsum(unit) - unit[0]  # arrivals at rate 1; scaled per probe

    def run(rate: float):
        wl = Workload.from_columns(unit_t / rate, prompt, output)
        return simulate(model, cluster, plan, wl, slo=slo, seed=seed)

    burst = simulate(model, cluster, plan, Workload.from_columns(np.zeros(n), prompt, output), slo=slo, seed=seed)
    if not burst.feasible or not burst.summary["completed"]:  # nothing runs at any rate
        return CapacityResult(0.0, [], None)
    upper = burst.summary["requests_per_s"] * 1.1
    return bisect_rate(run, meets or slo_meets(attainment), upper=upper, rel_tol=rel_tol)
