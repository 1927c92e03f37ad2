"""Arithmetic every layer shares (the lowest layer: imports nothing from parasim)."""

from __future__ import annotations


def cdiv(a, b):
    """Ceiling division, ceil(a / b), exact for integers of any size (no float round trip); works
    elementwise on numpy integer arrays and on floats as `//` does. Blocks for tokens, tiles for
    rows, nodes for GPUs."""
    return -(-a // b)


def quantile(xs, q: float) -> float:
    """Linear-interpolated quantile of a sorted, non-empty sequence (numpy's default method): the
    one rule behind every median and p90 of |error| the validation reports quote."""
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
