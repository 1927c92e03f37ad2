"""Figures of a load sweep (`parasim serve --sweep-rate`): latency percentiles, throughput and
goodput against the offered rate, with the knee and the SLOs drawn in."""

from __future__ import annotations

from typing import Any

from parasim.report.figures import Figure, new_figure, register, to_svg

#: (summary key prefix, title, SLO key in inputs.slo, scale to the axis unit, unit)
LATENCIES = (("ttft", "TTFT", "ttft_s", 1e3, "ms"), ("tpot", "TPOT", "tpot_s", 1e3, "ms"),
             ("e2e", "E2E latency", "e2e_s", 1.0, "s"))
PERCENTILES = (("p50", "-"), ("p90", "--"), ("p99", ":"))


def _series(points: list[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    """(rates, values) of the points where the summary has `key` (a plan that ran)."""
    xs, ys = [], []
    for p in points:
        v = p["summary"].get(key)
        if v is not None:
            xs.append(p["rate_requests_per_s"])
            ys.append(v * scale)
    return xs, ys


def _mark_knee(ax, knee: dict[str, Any], gid: str) -> None:
    if knee.get("rate_requests_per_s") is not None:
        ax.axvline(knee["rate_requests_per_s"], color="tab:red", lw=1.2, alpha=0.8, gid=gid,
                   label=f"knee {knee['rate_requests_per_s']:.4g} req/s")


def latency_figure(out: dict[str, Any]) -> Figure:
    points, slo = out["points"], out["inputs"].get("slo") or {}
    fig = new_figure(10.0, 3.6)
    axes = fig.subplots(1, len(LATENCIES))
    for ax, (name, title, slo_key, scale, unit) in zip(axes, LATENCIES):
        for pct, style in PERCENTILES:
            xs, ys = _series(points, f"{name}_{pct}_s", scale)
            ax.plot(xs, ys, style, marker="o", ms=3, label=pct)
        if slo.get(slo_key) is not None:
            ax.axhline(slo[slo_key] * scale, color="black", lw=1, alpha=0.6, label=f"SLO {slo[slo_key] * scale:g} {unit}",
                       gid=f"slo-{name}")
        _mark_knee(ax, out["knee"], f"knee-{name}")
        ax.set_title(title)
        ax.set_xlabel("offered rate (requests/s)")
        ax.set_ylabel(f"{title} ({unit})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Latency percentiles vs offered rate")
    return Figure("Latency vs offered rate", to_svg(fig),
                  "TTFT, TPOT and end-to-end latency (p50, p90, p99) at each swept rate; the red line is the "
                  "knee, the black line the SLO. Past the knee queueing grows and TTFT rises first.")


def throughput_figure(out: dict[str, Any]) -> Figure:
    points = out["points"]
    fig = new_figure(6.5, 3.8)
    ax = fig.subplots()
    rates = [p["rate_requests_per_s"] for p in points]
    ax.plot(rates, rates, color="grey", lw=1, ls="--", label="served = offered")
    ax.plot(*_series(points, "requests_per_s"), marker="o", label="throughput (completed req/s)")
    if any(p["summary"].get("goodput_requests_per_s") is not None for p in points):
        ax.plot(*_series(points, "goodput_requests_per_s"), marker="s", label="goodput (req/s within SLO)")
    sat = out["knee"].get("saturated_requests_per_s")
    if sat:
        ax.axhline(sat, color="tab:purple", lw=1, ls=":", label=f"burst throughput {sat:.4g} req/s")
    _mark_knee(ax, out["knee"], "knee")
    ax.set_xlabel("offered rate (requests/s)")
    ax.set_ylabel("requests/s")
    ax.set_title("Throughput and goodput vs offered rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return Figure("Throughput and goodput vs offered rate", to_svg(fig),
                  "Completed and SLO-meeting requests per second at each swept rate; they track the offered rate "
                  "(dashed) until the plan saturates.")


@register("serve-sweep")
def sweep_figures(out: dict[str, Any]) -> list[Figure]:
    if not out.get("feasible") or not out.get("points"):
        return []
    return [latency_figure(out), throughput_figure(out)]
