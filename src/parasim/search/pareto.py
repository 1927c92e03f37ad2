"""Pareto fronts: the plans no other plan beats on every objective at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Key = Callable[[Any], float]  # smaller is better (objectives are normalised to minimise)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(rows: Sequence[Any], keys: Sequence[Key]) -> list[Any]:
    """Non-dominated rows, sorted by the first key then the next (stable for ties).

    Sort-and-sweep: after sorting lexicographically, a row is on the front iff no earlier front
    row dominates it. O(n * front) - fine for the thousands of plans a search evaluates.
    """
    scored = sorted(((tuple(k(r) for k in keys), i) for i, r in enumerate(rows)))
    front: list[tuple[tuple[float, ...], int]] = []
    for vals, i in scored:
        if any(dominates(f, vals) or f == vals for f, _ in front):
            continue
        front.append((vals, i))
    return [rows[i] for _, i in front]


def pareto_summary(ranked: Sequence[dict], objectives: Sequence[Any], options: dict) -> dict | None:
    """The `pareto` entry of a search result: the objectives' names and the ranks on their front
    (None when no --pareto was given)."""
    if not objectives:
        return None
    keys = [lambda r, o=o: o.score(r, options) for o in objectives]
    return {"objectives": [o.name for o in objectives], "front": [r["rank"] for r in pareto_front(ranked, keys)]}
