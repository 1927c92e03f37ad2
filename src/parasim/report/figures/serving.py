"""Figures of a `serve` result: latency CDFs, KV-cache use and queue length over time.

They read the result's `distributions` and `series` (written when `--timeline` or `--report` is
given; docs/metrics.md). A result saved without them still gets one figure, the summary's
percentiles, with a caption naming the flag that draws the rest.
"""

from __future__ import annotations

from typing import Any

from parasim.report.figures import Figure, add_unscaled, new_figure, register, to_svg

#: (key, title, what one sample is) of each latency CDF, in the order drawn
LATENCIES = (("ttft", "TTFT", "requests"), ("tpot", "TPOT", "requests"), ("itl", "ITL", "inter-token gaps"),
             ("e2e", "E2E latency", "requests"))
#: margins (left, right, bottom, top; inches) around the axes: room for the tick labels, axis labels and title
ONE_AXES = (0.75, 0.2, 0.55, 0.35)
MORE = "Run with --timeline FILE or --report FILE to draw the latency CDFs, KV-cache use and queue length over time."


@register("serve")
def serving_figures(result: dict[str, Any]) -> list[Figure]:
    if not result.get("feasible", True):
        return []
    dist, series = result.get("distributions"), result.get("series")
    if not dist or not series:
        return [_percentile_bars(result)]
    return [_cdfs(dist, result["inputs"].get("slo") or {}), _kv(series), _queue(series)]


def _cdfs(dist: dict[str, Any], slo: dict[str, Any]) -> Figure:
    fig = new_figure(8.0, 5.6, ONE_AXES, space=(0.25, 0.42))
    axes = fig.subplots(2, 2)
    pct = dist["percent"]
    for ax, (key, title, unit) in zip(axes.flat, LATENCIES):
        ax.set_title(f"{title} ({dist.get(f'{key}_count', 0):,} {unit})", fontsize=10, y=1.0)
        ax.set_xlabel(f"{title} (ms)")
        ax.set_ylabel(f"share of {unit} (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        values = dist.get(f"{key}_s")
        if not values:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.plot([v * 1e3 for v in values], pct, color="tab:blue", drawstyle="steps-post", label="simulated")
        limit = slo.get(f"{key}_s")
        if limit is not None:
            ax.axvline(limit * 1e3, color="tab:red", linestyle="--", label=f"SLO {limit * 1e3:g} ms")
            ax.legend(loc="lower right", fontsize=8)
    caption = ("Cumulative distribution of each latency, from its value at every whole percentile; "
               "a dashed line marks an SLO where one was given. TTFT, TPOT and E2E are per request, "
               "ITL per inter-token gap.")
    return Figure("Latency CDFs", to_svg(fig), caption)


def _time_axis(series: dict[str, Any]) -> list[float]:
    t = series["t_s"]
    return [x - t[0] for x in t] + [t[-1] - t[0] + series["bin_s"]]


def _kv(series: dict[str, Any]) -> Figure:
    from matplotlib.patches import StepPatch

    fig = new_figure(7.0, 3.6, ONE_AXES)
    ax = fig.subplots()
    t = _time_axis(series)
    kv = [v * 100 for v in series["kv_used"]]
    add_unscaled(ax, StepPatch(kv, t, color="tab:purple", fill=True, alpha=0.35))
    add_unscaled(ax, StepPatch(kv, t, color="tab:purple", fill=False))
    ax.set_xlim(t[0], t[-1])
    ax.set_ylim(0, min(100.0, max(1.0, max(kv, default=0.0) * 1.15)))  # a low use stays visible
    ax.set_xlabel("time since the first arrival (s)")
    ax.set_ylabel("KV cache in use (% of blocks)")
    ax.set_title("KV-cache use over time", y=1.0)
    ax.grid(alpha=0.3)
    caption = (f"Blocks in use over the {series['kv_capacity_blocks']:,} blocks of all {series['instances']} "
               f"engine instance(s), averaged over {len(series['t_s'])} bins of {series['bin_s']:.3g} s.")
    return Figure("KV-cache use", to_svg(fig), caption)


def _queue(series: dict[str, Any]) -> Figure:
    from matplotlib.patches import StepPatch

    fig = new_figure(7.0, 3.6, ONE_AXES)
    ax = fig.subplots()
    t = _time_axis(series)
    add_unscaled(ax, StepPatch(series["running"], t, color="tab:green", fill=False), "running")
    add_unscaled(ax, StepPatch(series["waiting"], t, color="tab:orange", fill=False), "waiting")
    ax.axhline(series["max_running"], color="grey", linestyle=":", label=f"max batch ({series['max_running']:,})")
    top = max([series["max_running"], *series["running"], *series["waiting"]])
    ax.set_xlim(t[0], t[-1])
    ax.set_ylim(0, top * 1.05 if top > 0 else 1)
    ax.set_xlabel("time since the first arrival (s)")
    ax.set_ylabel("requests")
    ax.set_title("Running and waiting requests over time", y=1.0)
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    caption = ("Requests in the batch (running) and queued (waiting), summed over engine instances and "
               "averaged over each time bin; a waiting queue that keeps growing means the rate is past capacity.")
    return Figure("Queue length", to_svg(fig), caption)


def _percentile_bars(result: dict[str, Any]) -> Figure:
    s = result["summary"]
    fig = new_figure(7.0, 3.6, ONE_AXES)
    ax = fig.subplots()
    width = 0.25
    for k, q in enumerate(("p50", "p90", "p99")):
        xs = [i + (k - 1) * width for i in range(len(LATENCIES))]
        ys = [(s.get(f"{key}_{q}_s") or 0.0) * 1e3 for key, _, _ in LATENCIES]
        ax.bar(xs, ys, width, label=q)
    ax.set_xticks(range(len(LATENCIES)), [title for _, title, _ in LATENCIES])
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency percentiles", y=1.0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return Figure("Latency percentiles", to_svg(fig), f"p50, p90 and p99 of each latency from the summary. {MORE}")
