"""The `parasim` program's first lines: with `--report`, fork the report's drawing process before
anything else is imported (report/worker.py), so that importing matplotlib overlaps all of the
run, the CLI's own imports included; then run the CLI (cli/main.py)."""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if any(a == "--report" or a.startswith("--report=") for a in args):
        from parasim.report import worker

        worker.start(next((a for a in args if not a.startswith("-")), ""))
    from parasim.cli.main import main as cli

    cli()
