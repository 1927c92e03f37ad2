"""`parasim report RESULT.json... -o FILE.html`: the HTML report of saved `--json-out` results.

One result is drawn as `--report` would have drawn it at run time (the same bytes); several are a
comparison, side by side. A file that is not a parasim result (missing, a directory, not JSON,
larger than MAX_RESULT_BYTES, not an object, no `command` or one parasim never writes) is refused
with one line naming it and exit 2, before anything is drawn; so is a result whose figures cannot
be drawn from it (a hand-edited file that lost the keys they read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from parasim.cli import limits, outputs
from parasim.errors import InputError
from parasim.specs import edge

#: a saved result larger than this is not one parasim wrote (a planner's full ranking is a few MiB)
MAX_RESULT_BYTES = 256 * 1024**2


def read_result(path: str | Path, field: str = "results") -> dict[str, Any]:
    """One saved result, checked to be a parasim command's JSON object."""
    p = Path(path)
    if p.is_file() and p.stat().st_size > MAX_RESULT_BYTES:
        raise InputError(field, f"{p.name} is {p.stat().st_size / 1024**2:,.0f} MiB; a parasim result is at most "
                                f"{MAX_RESULT_BYTES // 1024**2} MiB")
    data = edge.load_json(edge.read_text(p, field, what="JSON result"), f"{field}: {p.name}")
    from parasim.report.headline import RESULT_COMMANDS

    allowed = ", ".join(RESULT_COMMANDS)
    if not isinstance(data, dict):
        raise InputError(field, f"{p.name} holds a JSON {type(data).__name__}, not a parasim result (an object "
                                f"with a `command` key: {allowed}); give a file written by --json-out")
    command = data.get("command")
    if command not in RESULT_COMMANDS:
        what = "has no `command` key" if command is None else f"has `command` {str(command)[:60]!r}"
        raise InputError(field, f"{p.name} {what}, so it is not a parasim result; `command` is one of {allowed} "
                                "(give a file written by --json-out)")
    if "parasim_version" not in data:  # every command's result carries it; a bare {"command": ...} draws nothing
        raise InputError(field, f"{p.name} has no `parasim_version`, so it was not written by parasim's --json-out "
                                "(give a file written by --json-out)")
    return data


def figures(result: dict[str, Any], name: str) -> list:
    """The result's figures; a figure set that cannot read a (hand-edited) result is that file's fault."""
    from parasim.report.figures import figures_for

    try:
        return figures_for(result)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError) as e:
        raise InputError("results", f"{name}: a '{result['command']}' result without what its figures read "
                                    f"({type(e).__name__}: {str(e)[:120]}); give the file as --json-out wrote it") from None


def report_cmd(
    results: list[Path] = typer.Argument(..., help="Results saved with --json-out (train, serve, plan train, plan serve); several = a comparison, one column each."),
    out: Path = typer.Option(..., "--out", "-o", help="HTML file to write (self-contained: open it offline, no JavaScript needed)."),
) -> None:
    """Draw the HTML report of saved results: inputs, plan, expected error, headline metrics and figures."""
    v = limits.check(limits.REPORT, {"results": results, "out": out})
    if len(v["results"]) > limits.MAX_COMPARED:
        raise InputError("results", f"{len(v['results'])} files given; at most {limits.MAX_COMPARED} are compared side by side")
    outputs.check(out)
    loaded = [read_result(p) for p in v["results"]]
    names = [Path(p).name for p in v["results"]]
    drawn = [figures(r, n) for r, n in zip(loaded, names)]
    from parasim.errors import write_output
    from parasim.report.html import page

    write_output(out, page(loaded, names, drawn))
    n = sum(map(len, drawn))
    what = "report" if len(loaded) == 1 else f"comparison of {len(loaded)} results"
    typer.echo(f"wrote {out}: {what}, {n} figure{'s' * (n != 1)}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
