"""The failure and checkpoint assumptions of the catalog (data/reliability.yaml), each with the
flag that overrides it and its source: goodput is only as good as these, so they are data a
reader can check, not constants buried in the model."""

from __future__ import annotations

from functools import cache
from typing import Any

from parasim.specs.shipped import load_shipped


@cache
def _entries() -> dict[str, dict[str, Any]]:
    return dict(load_shipped("reliability.yaml")["assumptions"])


def defaults() -> dict[str, Any]:
    """Assumption name -> its catalog value."""
    return {k: e["value"] for k, e in _entries().items()}


def sources() -> dict[str, str]:
    """Assumption name -> where its value comes from (printed in docs, kept with the result)."""
    return {k: " ".join(str(e["source"]).split()) for k, e in _entries().items()}
