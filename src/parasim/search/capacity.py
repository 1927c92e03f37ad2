"""Capacity: the highest Poisson arrival rate a plan serves within its SLOs, stably.

Sarathi-Serve's "capacity" and DistServe's "goodput" are both this number: the largest request
rate at which the latency SLOs hold (per-request TTFT/TPOT/E2E for `attainment` of the
requests, the ITL percentile over all tokens). Both also require the system to keep up: a rate
the plan cannot sustain lets the queue grow for as long as requests arrive, and a TPOT or ITL
SLO alone never notices (decode steps stay fast while requests wait minutes to start). So a rate
passes only when the run is also stable:

1. the rate is at most the plan's saturated request throughput, measured by a burst run of the
   same requests (all at t = 0: the queue never empties, so it is the most the plan serves;
   above it the served rate cannot track the offered one);
2. queueing stays bounded: the median queueing delay (arrival to first scheduled) is at most
   `max_queueing_p50_s` - by default 2 s, Sarathi-Serve's bound, when no TTFT or E2E SLO bounds
   the wait (`SLO.queueing_limit_s`);
3. every request completes.

The search bisects (0, saturated throughput] on a log scale to a relative tolerance; every
probe reuses the same arrivals scaled to its rate and the same seed, so the answer is
reproducible, and the run at the capacity is exactly `parasim serve --rate <capacity>`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parasim.errors import InputError
from parasim.serving.metrics import SLO, missed_slos

#: Why a probe failed, besides the SLO names (ttft, tpot, e2e, itl).
SATURATED = "saturated_throughput"
QUEUEING = "queueing"
INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class CapacityResult:
    requests_per_s: float
    probes: list[tuple[float, bool, list[str]]]  # (rate, passed, why it failed)
    result: Any  # the ServingResult at the capacity rate (None if no rate passes)
    saturated_requests_per_s: float | None = None  # the burst run's request throughput
    queueing_limit_s: float | None = None
    burst: Any = field(default=None, repr=False)  # the burst ServingResult
    lowest: Any = field(default=None, repr=False)  # the ServingResult of the lowest rate probed

    @property
    def binding(self) -> list[str]:
        """What stops a higher rate: why the lowest failing probe above the capacity failed, or
        the saturated throughput when the capacity is that bound itself."""
        above = [(r, why) for r, ok, why in self.probes if not ok and r > self.requests_per_s]
        if above:
            return min(above)[1]
        if self.requests_per_s > 0 and self.saturated_requests_per_s is not None:
            return [SATURATED]
        return []

    def to_dict(self) -> dict[str, Any]:
        return {"capacity_requests_per_s": self.requests_per_s, "binding": self.binding,
                "saturated_requests_per_s": self.saturated_requests_per_s,
                "max_queueing_p50_s": self.queueing_limit_s,
                "probes": [{"requests_per_s": r, "meets_slo": ok, "fails": why} for r, ok, why in self.probes]}


def _why(verdict: bool | list[str]) -> list[str]:
    if isinstance(verdict, bool):
        return [] if verdict else ["slo"]
    return list(verdict)


def bisect_rate(run: Callable[[float], Any], meets: Callable[[Any], bool | list[str]], *, upper: float,
                rel_tol: float = 0.03, max_probes: int = 24, grow: int = 4, min_rate: float = 0.0) -> CapacityResult:
    """Largest rate in (0, upper] with meets(run(rate)) (or above it, doubling at most `grow`
    times, when `upper` is a guess rather than a bound); `run` must be deterministic. `meets`
    returns a bool, or the list of reasons the run fails (empty: it passes). Halving stops below
    `min_rate` (the answer is then 0)."""
    if not upper > 0:
        raise InputError("rate", f"capacity search needs a positive upper bound, got {upper}")
    probes: list[tuple[float, bool, list[str]]] = []
    lowest: dict[str, Any] = {}

    def probe(rate: float) -> tuple[bool, Any]:
        res = run(rate)
        why = _why(meets(res))
        probes.append((rate, not why, why))
        if not lowest or rate < lowest["rate"]:
            lowest.update(rate=rate, res=res)
        return not why, res

    hi = upper
    ok, r_hi = probe(hi)
    grown = 0
    while ok and grown < grow:  # the guess passed: look above it
        lo_ok, r_lo_ok = hi, r_hi
        hi *= 2.0
        ok, r_hi = probe(hi)
        grown += 1
        if not ok:
            return _refine(probe, probes, lo_ok, r_lo_ok, hi, rel_tol, max_probes, lowest)
    if ok:
        return CapacityResult(hi, probes, r_hi, lowest=lowest["res"])
    lo, r_lo = None, None
    rate = hi
    while lo is None and len(probes) < max_probes and rate / 2.0 >= min_rate:
        rate /= 2.0
        ok, res = probe(rate)
        if ok:
            lo, r_lo = rate, res
        else:
            hi = rate
    if lo is None:
        return CapacityResult(0.0, probes, None, lowest=lowest["res"])
    return _refine(probe, probes, lo, r_lo, hi, rel_tol, max_probes, lowest)


def _refine(probe, probes, lo, r_lo, hi, rel_tol, max_probes, lowest) -> CapacityResult:
    """Bisect [lo, hi] on a log scale; lo passes, hi fails."""
    while hi / lo > 1.0 + rel_tol and len(probes) < max_probes:
        mid = float(np.sqrt(lo * hi))
        ok, res = probe(mid)
        if ok:
            lo, r_lo = mid, res
        else:
            hi = mid
    return CapacityResult(lo, probes, r_lo, lowest=lowest["res"])


def slo_meets(attainment: float | None = None) -> Callable[[Any], bool]:
    """A check that a run meets its SLOs (`summary["slo_met"]`: the SLO the run was simulated
    with, attainment included) and completed every request; `attainment`, when given, overrides
    the SLO's own share for the per-request SLOs."""
    if attainment is not None and not 0.0 < attainment <= 1.0:
        raise InputError("attainment", f"must be in (0, 1], got {attainment}")

    def meets(res: Any) -> bool:
        s = res.summary
        if s.get("slo_met") is None:
            raise InputError("slo", "capacity needs an SLO: give --slo-ttft, --slo-tpot, --slo-itl and/or --slo-e2e")
        if attainment is None or s.get("slo_attainment") is None:
            ok = bool(s["slo_met"])
        else:
            itl_ok = s.get("slo_ratio_itl") is None or s["slo_ratio_itl"] <= 1.0
            ok = s["slo_attainment"] >= attainment and itl_ok
        return ok and s["completed"] == s["requests"]

    return meets


def stable_check(slo: SLO, *, saturated_requests_per_s: float | None,
                 queueing_limit_s: float | None) -> Callable[[float, Any], list[str]]:
    """(rate, result) -> the reasons the run at `rate` fails: the SLOs it misses, then the
    stability rules (module docstring). Empty: it passes."""
    def check(rate: float, res: Any) -> list[str]:
        s = res.summary
        why = missed_slos(s)
        if s["completed"] < s["requests"]:
            why.append(INCOMPLETE)
        if saturated_requests_per_s is not None and rate > saturated_requests_per_s:
            why.append(SATURATED)
        q = s.get("queueing_p50_s")
        if queueing_limit_s is not None and (q is None or q > queueing_limit_s):
            why.append(QUEUEING)
        return why

    return check


def capacity(model, cluster, plan, *, slo, attainment: float | None = None, requests: int = 1000, seed: int = 0,
             lengths: tuple[np.ndarray, np.ndarray], arrival: str = "poisson", cv: float = 1.0,
             meets: Callable[[Any], bool | list[str]] | None = None, rel_tol: float = 0.03,
             max_queueing_p50_s: float | None = None) -> CapacityResult:
    """Capacity of `plan` for requests with the given (prompt, output) length columns.

    `slo` (an SLO or a mapping) must hold at least one SLO; `attainment`, when given, replaces
    its share. `meets`, when given, replaces the SLO check (the stability rules still apply)."""
    from parasim.serving.simulate import simulate
    from parasim.serving.workload import Workload

    slo = SLO.of(slo)
    if attainment is not None:
        slo = SLO(**{**slo.to_dict(), "attainment": attainment})
    if not slo.given and meets is None:
        raise InputError("slo", "capacity needs an SLO: give --slo-ttft, --slo-tpot, --slo-itl and/or --slo-e2e")
    prompt, output = lengths
    n = min(requests, len(prompt))
    prompt, output = prompt[:n], output[:n]
    # the arrival draws of `serving.workload.generate` for this seed, scaled per probe with the same
    # arithmetic, so the run at rate r is bit for bit `parasim serve --rate r`
    rng = np.random.default_rng(seed)
    if arrival == "gamma":
        shape = 1.0 / (cv * cv)
        draws, scale = rng.standard_gamma(shape, size=n), lambda rate: 1.0 / (rate * shape)
    else:
        draws, scale = rng.standard_exponential(size=n), lambda rate: 1.0 / rate

    def run(rate: float):
        gaps = scale(rate) * draws
        arrivals = np.cumsum(gaps) - gaps[0]
        return simulate(model, cluster, plan, Workload.from_columns(arrivals, prompt, output), slo=slo, seed=seed)

    limit = slo.queueing_limit_s(max_queueing_p50_s)
    burst = simulate(model, cluster, plan, Workload.from_columns(np.zeros(n), prompt, output), slo=slo, seed=seed)
    if not burst.feasible or not burst.summary["completed"]:  # nothing runs at any rate
        return CapacityResult(0.0, [], None, None, limit, burst)
    saturated = float(burst.summary["requests_per_s"])
    stable = stable_check(slo, saturated_requests_per_s=saturated, queueing_limit_s=limit)
    current: dict[str, float] = {}  # the rate of the run being checked (bisect_rate checks right after running)

    def run_at(rate: float):
        current["rate"] = rate
        return run(rate)

    def check(res: Any) -> list[str]:
        why = stable(current["rate"], res)
        if meets is not None:  # a custom SLO check replaces the SLO names
            why = [w for w in why if w not in ("ttft", "tpot", "e2e", "itl")] + _why(meets(res))
        return why

    # below 1/1024 of the saturated rate requests hardly overlap: a lower rate would not pass either
    found = bisect_rate(run_at, check, upper=saturated, rel_tol=rel_tol, grow=0, min_rate=saturated / 1024)
    return CapacityResult(found.requests_per_s, found.probes, found.result, saturated, limit, burst, found.lowest)
