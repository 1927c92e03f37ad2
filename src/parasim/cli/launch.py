"""The `parasim` program's first lines: with `--report`, fork the report's drawing process before
anything else is imported (report/worker.py), so that importing matplotlib overlaps all of the
run, the CLI's own imports included; then run the CLI (cli/main.py)."""

from __future__ import annotations

import os
import sys


def main() -> None:
    args = sys.argv[1:]
    if any(a == "--report" or a.startswith("--report=") for a in args):
        from parasim.report import worker

        if os.environ.get(worker.ENV, "1") not in ("0", "1"):
            value = repr(os.environ[worker.ENV])[1:-1]
            sys.stderr.write(f"parasim: error: {worker.ENV}: '{value}' is not allowed (0: draw the report in "
                             "the process, 1 or unset: in a process forked at start)\n")
            raise SystemExit(2)
        worker.start(next((a for a in args if not a.startswith("-")), ""))
    from parasim.cli.main import main as cli

    cli()
