"""How a prediction's `expected_error` (validation.expected_error) reads in a table: one row per
metric class, the headline first."""

from __future__ import annotations

from typing import Any

from parasim.validation.expected_error import SERVING_METRICS


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


def rows(e: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Table rows for an `expected_error` object, one per metric class (none for None)."""
    if not e:
        return []
    by = e.get("by_metric") or {e["metric"]: e}
    order = [e["metric"], *(m for m in SERVING_METRICS if m != e["metric"]), *sorted(by)]
    return [(f"expected error ({m})", text(by[m])) for m in dict.fromkeys(order) if m in by]
