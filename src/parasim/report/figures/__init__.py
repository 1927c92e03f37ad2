"""Figures drawn from a command's JSON result, as SVG text, for the HTML report (#19).

A figure set is a function `result dict -> list[Figure]`, registered under the result's
`command` ("train", "serve", "serve-sweep", "plan train", "plan serve"). Figures read only the
JSON a command prints (`--json` / `--json-out`), so `parasim report RESULT.json` draws the same
figures from a saved result as `--report` does at run time. Each kind's figures live in their own
module (training.py, serving.py, sweep.py, plan.py) and register themselves here.

SVG is written deterministically (no date, fixed hash salt, Agg backend) so the same result
gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One drawn figure: a title, its SVG text (no XML prolog), and a caption that says what to look for."""

    title: str
    svg: str
    caption: str = ""


FigureSet = Callable[[dict[str, Any]], list[Figure]]
_SETS: dict[str, FigureSet] = {}


def register(command: str) -> Callable[[FigureSet], FigureSet]:
    """Decorator: `fn` draws the figures for results whose `command` is `command`."""

    def add(fn: FigureSet) -> FigureSet:
        if command in _SETS:
            raise ValueError(f"figures for '{command}' are already registered")
        _SETS[command] = fn
        return fn

    return add


def commands() -> tuple[str, ...]:
    _load()
    return tuple(_SETS)


def figures_for(result: dict[str, Any]) -> list[Figure]:
    """The figures for one result ([] for a command with no figure set)."""
    _load()
    fn = _SETS.get(str(result.get("command", "")))
    return fn(result) if fn is not None else []


def _load() -> None:
    """Import the per-kind modules so they register (lazily: matplotlib is slow to import)."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def prepare(command: str = "") -> None:
    """Import matplotlib, its SVG writer and every figure set (and, for `train`, the training
    timeline the Gantt reads): what a report worker does while the run it will draw for still
    simulates (report/worker.py). Drawing a throw-away figure as well was measured to save nothing
    on the first real one (fonts load in a few ms), so it does not."""
    import matplotlib.backends.backend_svg  # noqa: F401
    import matplotlib.figure  # noqa: F401

    _load()
    if command == "train":
        import parasim.training.timeline  # noqa: F401


def new_figure(width_in: float = 7.0, height_in: float = 3.6, margins_in: tuple[float, float, float, float] | None = None,
               space: tuple[float, float] = (0.2, 0.2)):
    """A matplotlib Figure (no pyplot state: safe in threads and tests). With `margins_in` (left, right,
    bottom, top, in inches) and `space` (matplotlib's wspace, hspace: the gaps between subplots as a
    share of their width, height) the axes sit where they say: the SVG
    is drawn once. Without, a constrained layout fits them to their labels, at the price of a second
    drawing pass (half of a figure's time): kept for labels whose length the data decides."""
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure as MplFigure

    if margins_in is None:
        fig = MplFigure(figsize=(width_in, height_in), layout="constrained")
    else:
        left, right, bottom, top = margins_in
        fig = MplFigure(figsize=(width_in, height_in))
        fig.subplots_adjust(left=left / width_in, right=1 - right / width_in, bottom=bottom / height_in,
                            top=1 - top / height_in, wspace=space[0], hspace=space[1])
    FigureCanvasSVG(fig)
    return fig


def add_unscaled(ax, artist, label: str | None = None):
    """Add `artist` to `ax` without fitting the data limits to it (the caller sets the limits):
    `Axes.add_patch` walks every segment of a patch's path in Python to fit them, which for a
    step curve of 500 bins or a stage's few hundred Gantt bars costs more than drawing them."""
    if label is not None:
        artist.set_label(label)
    ax.add_artist(artist)
    return artist


def bars_patch(spans: list[tuple[float, float]], y: float, height: float, colour: str):
    """One patch of all the horizontal bars (start, duration) at [y, y + height): a single SVG path
    instead of one element per bar."""
    import numpy as np
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    xy = np.asarray(spans, dtype=float).reshape(-1, 2)
    x0, x1 = xy[:, 0], xy[:, 0] + xy[:, 1]
    y0, y1 = np.full_like(x0, y), np.full_like(x0, y + height)
    polys = np.stack([np.stack(c, axis=1) for c in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))], axis=1)
    return PathPatch(Path.make_compound_path_from_polys(polys), facecolor=colour, linewidth=0)


def to_svg(fig) -> str:
    """Deterministic SVG text of a matplotlib figure (no metadata date, fixed ids). Text stays text
    (`svg.fonttype: none`: the browser sets it in its sans-serif): a third smaller and faster to write
    than glyph outlines, and a reader can search and copy the labels."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "parasim", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "parasim"})
    text = buf.getvalue()
    start = text.find("<svg")
    return text[start:] if start >= 0 else text
