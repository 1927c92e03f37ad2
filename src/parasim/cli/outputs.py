"""Where a command's results go besides stdout: --json-out, --report, --emit-yaml, --requests-out, --markdown.

A path is checked before the work starts: one that is a directory, or lies under a regular file,
can never be written, and saying so after a ten-minute search would waste it (exit 1 at once).
Files are written after the result is printed, so a file that still cannot be written (a full
disk, no permission) costs the file, not the answer: exit 1 with the path and the operating
system's reason (`errors.OutputError`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from parasim.errors import OutputError, write_output
from parasim.report import worker
from parasim.report.tables import as_saved, dumps, saved_text


def check(*paths: str | Path | None) -> None:
    """Fail now for a path that cannot become a writable file (ignores None)."""
    for path in paths:
        if path is None:
            continue
        p = Path(path)
        if p.is_dir():
            raise OutputError(str(p), os.strerror(errno.EISDIR))
        for parent in p.parents:  # the nearest existing ancestor must be a directory
            if parent.exists():
                if not parent.is_dir():
                    raise OutputError(str(p), f"{os.strerror(errno.ENOTDIR)} ({parent} is a file)")
                break


def write_json(path: str | Path, obj: Any) -> None:
    """The same deterministic JSON `--json` prints."""
    write_output(path, dumps(obj) + "\n")


def write_text(path: str | Path, text: str) -> None:
    write_output(path, text)


def write_report(path: str | Path, results: list[dict[str, Any]]) -> None:
    """The HTML report (report/html.py) of `results`, each read back from the JSON text `--json-out`
    writes first: a report drawn at run time is byte for byte the one `parasim report` draws from the
    saved file. Drawn by the process `worker.start` forked at CLI start when there is one (it has
    matplotlib imported by now), else here: matplotlib is imported only when a report is asked for."""
    text = worker.render(saved_text(results))
    if text is None:
        from parasim.report.html import page

        text = page([as_saved(r) for r in results])
    write_output(path, text)
