"""Load sweeps: one plan at N offered request rates, and where it stops keeping up (the knee).

The rates are linear from LO to HI, both included. The run at each rate is exactly
`parasim serve --rate R` with the same workload options and seed (generated arrivals at that
rate, the same lengths), so a sweep point can be reproduced on its own. The runs are independent:
they go to worker processes (search.executors), and the result is ordered by rate whatever
order they finish in, so it is the same for any worker count.

The knee uses the stability rule of `--capacity` (search/capacity.py, `stable_check`): a point
passes when it meets the SLOs (if any were given), completes every request, is offered at most
the plan's saturated throughput (a burst run of the same requests, run beside the sweep) and
keeps the median queueing delay within the limit (`SLO.queueing_limit_s`: the one given, else
2 s when no TTFT or E2E SLO bounds the wait; without SLOs, this is what the knee rests on). The
knee is the highest rate of the sweep such that it and every lower rate pass: "stably" means a
pass after a failure does not count. None passes at LO: the knee is null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parasim.search.capacity import stable_check
from parasim.search.executors import default_workers, run as run_items
from parasim.serving.metrics import SLO


def sweep_rates(lo: float, hi: float, n: int) -> list[float]:
    """n rates linear from lo to hi inclusive (the ends exact)."""
    return [lo + (hi - lo) * i / (n - 1) if 0 < i < n - 1 else (lo if i == 0 else hi) for i in range(n)]


@dataclass(frozen=True)
class SweepContext:
    """What every run shares (shipped once per worker)."""

    model: Any
    cluster: Any
    plan: Any
    slo: SLO
    seed: int
    generate_kw: dict[str, Any]  # serving.workload.generate's keywords, but rate and burst
    max_concurrency: int | None


def run_point(ctx: SweepContext, rate: float | None) -> dict[str, Any]:
    """One run at `rate` (None: the burst run); only what the sweep keeps (picklable, small)."""
    from parasim.serving.simulate import simulate
    from parasim.serving.workload import generate

    wl = generate(**ctx.generate_kw, rate=rate if rate is not None else 1.0, burst=rate is None, seed=ctx.seed)
    res = simulate(ctx.model, ctx.cluster, ctx.plan, wl, slo=ctx.slo, seed=ctx.seed,
                   max_concurrency=ctx.max_concurrency if rate is not None else None)
    return {"feasible": res.feasible, "reason": res.reason, "message": res.message, "summary": res.summary,
            "workload": wl.summary(), "inputs": res.inputs, "kv": res.kv}


def knee(points: list[dict[str, Any]]) -> int | None:
    """Index of the last point of the leading run of passing points (None: the first fails)."""
    last = None
    for i, p in enumerate(points):
        if p["fails"]:
            break
        last = i
    return last


def sweep(ctx: SweepContext, rates: list[float], *, max_queueing_p50_s: float | None = None,
          workers: int | None = None) -> dict[str, Any]:
    """The sweep's points (ascending rate), its knee, the burst run's saturated throughput, and
    the inputs of the first run (for the result's `inputs`). Raises KeyboardInterrupt when stopped."""
    items: list[float | None] = [None, *rates]
    out = run_items(run_point, ctx, items, workers=min(workers or default_workers(), len(items)))
    if out.interrupted:
        raise KeyboardInterrupt
    burst, runs = out.results[0], out.results[1:]
    saturated = burst["summary"]["requests_per_s"] if burst["feasible"] and burst["summary"]["completed"] else None
    limit = ctx.slo.queueing_limit_s(max_queueing_p50_s)
    check = stable_check(ctx.slo, saturated_requests_per_s=saturated, queueing_limit_s=limit)
    points = []
    for rate, r in zip(rates, runs):
        fails = check(rate, _Summary(r["summary"])) if r["feasible"] else [r["reason"] or "infeasible"]
        points.append({"rate_requests_per_s": rate, "feasible": r["feasible"], "fails": fails, "passes": not fails,
                       "offered_requests_per_s": r["workload"]["offered_requests_per_s"],
                       "arrival_span_s": r["workload"]["arrival_span_s"], "summary": r["summary"]})
    k = knee(points)
    first_fail = next((p for p in points if p["fails"]), None)
    return {"points": points, "inputs": runs[0]["inputs"], "kv": runs[0]["kv"], "feasible": runs[0]["feasible"],
            "reason": runs[0]["reason"], "message": runs[0]["message"],
            "knee": {"index": k, "rate_requests_per_s": None if k is None else rates[k],
                     "next_rate_requests_per_s": None if first_fail is None else first_fail["rate_requests_per_s"],
                     "next_fails": [] if first_fail is None else first_fail["fails"],
                     "saturated_requests_per_s": saturated, "max_queueing_p50_s": limit,
                     "slos": list(ctx.slo.names)}}


@dataclass(frozen=True)
class _Summary:
    """A run's summary where stable_check expects a ServingResult."""

    summary: dict[str, Any]
