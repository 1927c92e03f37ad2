"""Rich rendering of plain result objects: how numbers look lives here, not in the engines."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def console() -> Console:
    return Console(soft_wrap=False, width=max(100, Console().width))


def dumps(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no NaN surprises (NaN/inf become null)."""
    return json.dumps(_clean(obj), sort_keys=True, indent=2)


def as_saved(obj: Any) -> Any:
    """`obj` as a reader of its `dumps` text gets it back (the same values; encoded compactly, which
    json's C encoder does about 10x faster than the indented text)."""
    return json.loads(saved_text(obj))


def saved_text(obj: Any) -> str:
    """The compact JSON text `as_saved` reads back (what a report worker is handed)."""
    return json.dumps(_clean(obj), sort_keys=True)


def _clean(o: Any) -> Any:
    if isinstance(o, float):
        return o if o == o and o not in (float("inf"), float("-inf")) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def print_json(obj: Any) -> None:
    sys.stdout.write(dumps(obj) + "\n")


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1e6 or abs(v) < 1e-3:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, header_style="bold")
    for i, c in enumerate(columns):
        t.add_column(c, no_wrap=i == 0)
    for r in rows:
        t.add_row(*(fmt(v) for v in r))
    return t


def kv_table(title: str, items: Iterable[tuple[str, Any]]) -> Table:
    return table(title, ("metric", "value"), items)
