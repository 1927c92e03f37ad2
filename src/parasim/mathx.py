"""Integer arithmetic every layer shares (the lowest layer: imports nothing from parasim)."""

from __future__ import annotations


def cdiv(a, b):
    """Ceiling division, ceil(a / b), exact for integers of any size (no float round trip); works
    elementwise on numpy integer arrays and on floats as `//` does. Blocks for tokens, tiles for
    rows, nodes for GPUs."""
    return -(-a // b)
