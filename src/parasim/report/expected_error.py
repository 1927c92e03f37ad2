"""How a prediction's `expected_error` (validation.expected_error) reads in a table: one row per
metric class, the headline first."""

from __future__ import annotations

from typing import Any

from parasim.validation.metric_classes import SERVING_METRICS


def text(e: dict[str, Any]) -> str:
    """'±5.3 % p50, ±12.1 % p90 (120 published runs; nearest category: dtype relaxed)', or the
    sentence saying the prediction is outside everything validated."""
    if e["status"] == "unvalidated":
        return e["note"]
    bars = f"±{e['p50_abs_pct']:.1f} % p50, ±{e['p90_abs_pct']:.1f} % p90"
    if e["status"] == "profile":
        return f"{bars} (calibration profile, out of fold, {e['runs']} runs)"
    where = "this category" if e["status"] == "validated" else f"nearest category: {', '.join(e['relaxed'])} relaxed"
    return f"{bars} ({e['runs']} published runs; {where})"


def by_metric(e: dict[str, Any]) -> dict[str, Any]:
    """metric class -> its expected error, the headline class first, then the serving classes in
    their order, then any other (a training result carries one class, a serving result one per
    class). Reads a hand-edited result as far as it can: an unnamed class is "headline"."""
    metric = e.get("metric") if isinstance(e.get("metric"), str) else None
    by = e["by_metric"] if isinstance(e.get("by_metric"), dict) else {metric or "headline": e}
    order = [*(m for m in (metric, *SERVING_METRICS) if m in by), *sorted(by)]
    return {m: by[m] for m in dict.fromkeys(order)}


def rows(e: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Table rows for an `expected_error` object, one per metric class (none for None)."""
    if not e:
        return []
    return [(f"expected error ({m})", text(x)) for m, x in by_metric(e).items()]
