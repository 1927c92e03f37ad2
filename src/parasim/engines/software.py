"""Which release a serving software text names, and the flags a source text states.

A case's `software` field is free text ("tensorrt-llm 0.11", "vLLM 0.6.0 (defaults)"). The
engine profile (`parasim.engines.lookup.profile_for`) picks the defaults module; the release
picks the flow inside it, since the engines changed their benchmark defaults between releases.
"""

from __future__ import annotations

import re


def release(software: str) -> tuple[int, int] | None:
    """(major, minor) of the first version number in `software`, e.g. 'tensorrt-llm 0.11' -> (0, 11)."""
    m = re.search(r"(\d+)\.(\d+)", software)
    return (int(m.group(1)), int(m.group(2))) if m else None


def release_patch(software: str) -> int:
    """The patch number of the first x.y.z version in `software` (0 when absent)."""
    m = re.search(r"\d+\.\d+\.(\d+)", software)
    return int(m.group(1)) if m else 0


class SourceFlags:
    """Numeric server flags a case's source text may state (`--name value`, `--name=value`), by
    the name an engine's defaults module uses; each pattern is the flag without its dashes."""

    def __init__(self, **patterns: str) -> None:
        self._rx = {k: re.compile(rf"--{rx}\s*[=:]?\s*([0-9.]+)", re.IGNORECASE) for k, rx in patterns.items()}

    def stated(self, text: str) -> dict[str, float]:
        return {k: float(m.group(1)) for k, rx in self._rx.items() if (m := rx.search(text))}
