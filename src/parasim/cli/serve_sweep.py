"""`parasim serve --sweep-rate LO:HI:N`: the options a sweep refuses, and its JSON result.

A sweep sets the arrival rate itself, so every option that fixes the arrivals some other way
(`--rate`, `--burst`, a trace's own arrival times, `--capacity`'s search) conflicts with it, and
the per-run outputs (`--requests-out`, `--bench-json`) would have to pick one run of many.
"""

from __future__ import annotations

from typing import Any

from parasim import __version__
from parasim.errors import InputError

#: option -> why it cannot go with --sweep-rate
CONFLICTS = {
    "rate": "the sweep sets the rate (LO:HI:N); drop --rate",
    "capacity": "--capacity searches one rate, the sweep tabulates N; run them separately",
    "burst": "a burst has no arrival rate to sweep; drop --burst",
    "trace": "a trace brings its own arrival times; sweep generated arrivals (--prompt-tokens/--output-tokens "
             "or --prompt-dist/--output-dist for its lengths)",
    "trace_columns": "maps a --trace, which a sweep does not take",
    "requests_out": "per-request results are one run's; run `parasim serve --rate R` for the rate you want them at",
    "bench_json": "a benchmark result file is one run's; run `parasim serve --rate R --bench-json FILE`",
    "timeline": "a timeline is one run's; run `parasim serve --rate R --timeline FILE` for the rate you want to see",
}


def check_sweep_options(opts: dict[str, Any]) -> None:
    """One clear message for an option that conflicts with --sweep-rate (or --workers without it)."""
    if opts.get("sweep_rate") is None:
        raise InputError("workers", "applies to --sweep-rate only (a single run is one process)")
    for key, why in CONFLICTS.items():
        if opts.get(key):
            raise InputError(key, f"conflicts with --sweep-rate: {why}")


def sweep_result(opts: dict[str, Any], model, cluster, plan, slo, generate_kw: dict[str, Any]) -> dict[str, Any]:
    """The sweep's JSON result (docs/serving.md, Load sweeps), but the engine notes and the expected
    error, which serve_cmd adds as it does for one run."""
    from parasim.search.sweep import SweepContext, sweep, sweep_rates

    lo, hi, n = opts["sweep_rate"]
    mc = opts.get("max_concurrency")
    ctx = SweepContext(model=model, cluster=cluster, plan=plan, slo=slo, seed=int(opts["seed"]),
                       generate_kw=generate_kw, max_concurrency=int(mc) if mc is not None else None)
    rates = sweep_rates(lo, hi, n)
    res = sweep(ctx, rates, max_queueing_p50_s=opts.get("max_queueing_p50"), workers=opts.get("workers"))
    inputs = dict(res["inputs"])
    w = inputs["workload"]
    inputs["workload"] = {k: w[k] for k in ("requests", "prompt_tokens_mean", "output_tokens_mean",
                                           "shared_prefix_requests")} | {"arrival": opts["arrival"],
                                                                         "cv": opts["cv"] if opts["arrival"] == "gamma" else None}
    inputs["sweep_rate"] = {"lo_requests_per_s": lo, "hi_requests_per_s": hi, "n": n, "spacing": "linear",
                            "rates_requests_per_s": rates}
    return {"command": "serve-sweep", "parasim_version": __version__, "feasible": res["feasible"],
            "reason": res["reason"], "message": res["message"], "inputs": inputs, "kv": res["kv"],
            "points": res["points"], "knee": res["knee"]}
