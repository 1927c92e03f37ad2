"""`parasim calibrate`: fit a profile of correction factors to the user's own measured runs.

Exit codes: 0 a profile written; 2 bad input, or runs that cannot determine what was asked
(too few runs per factor, a factor they do not move, two they cannot tell apart: the message
says which); 1 when the output cannot be written; 130 on Ctrl-C.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from parasim.cli import limits, outputs
from parasim.report.tables import console, print_json


def calibrate_cmd(
    files: list[Path] = typer.Argument(..., help="Run files in the validation case format (shared/validation/README.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Write the profile (YAML) here."),
    factors: Optional[str] = typer.Option(None, "--factors", help="Comma list of factors to fit (default: every factor the runs determine; a named one they cannot determine is an error): gemm_efficiency, attention_efficiency, memory_efficiency, comm_efficiency, iteration_overhead_s."),
    scope: str = typer.Option("software+gpu", "--scope", help="One set of factors per: software+gpu, software, gpu, or all."),
    refine_steps: int = typer.Option(2, "--refine-steps", help="Gauss-Newton refinements on the real predictions after the linear fit (0-5)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only runs of this kind: training | serving."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (fits, errors before/after, profile)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Processes to run cases on (results do not depend on it)."),
) -> None:
    """Fit correction factors (per software and GPU) to measured runs; print the error before and after."""
    limits.check(limits.CALIBRATE, dict(locals()), names=limits.JSON_NAMES)
    from parasim.cli.validate_cmd import _pool
    from parasim.report.calibration import render_calibration
    from parasim.validation.fit_profile import calibrate_files, profile_yaml

    outputs.check(out)
    names = [n.strip() for n in factors.split(",")] if factors else None
    result = calibrate_files([str(f) for f in files], factors=names, scope=scope, refine=refine_steps, kind=kind,
                             workers=workers, pool=_pool)
    if json_out:
        print_json(result.to_dict())
    else:
        render_calibration(result)
    outputs.write_text(out, profile_yaml(result.profile))
    if not json_out:
        console().print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)
