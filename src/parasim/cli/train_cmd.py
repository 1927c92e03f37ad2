"""`parasim train`: not built yet in this checkout (see the open issues)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Nothing to register until the train command lands."""
