"""`parasim validate`: predicted vs measured for every case of one or more case files.

Exit codes: 0 when at least one case ran (an unreadable case is reported as skipped, with why);
2 when none could (no case of the asked kind, or every case unreadable); 1 when --json-out,
--markdown or --error-table cannot be written; 130 on Ctrl-C (one line; a validation is reported whole or not at all).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from parasim.cli import limits, outputs
from parasim.errors import InputError
from parasim.report.tables import console, print_json, table


def validate_cmd(
    file: Path = typer.Argument(..., help="Case file in the shared/validation format."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only cases of this kind: training | serving."),
    extra: Optional[list[Path]] = typer.Option(None, "--extra", help="More case files (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (cases + summary)."),
    json_file: Optional[Path] = typer.Option(None, "--json-out", help="Also write the JSON object to FILE."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the report as markdown to this file."),
    error_table: Optional[Path] = typer.Option(None, "--error-table", help="Also write the p50/p90 |error| per category (kind, metric, GPU generation, framework, size, dtype) as YAML: the table `train`, `serve` and `plan` quote as expected_error (docs/expected-error.md)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Processes to run cases on (results do not depend on it)."),
    profile: Optional[Path] = typer.Option(None, "--profile", help="Calibration profile (parasim calibrate -o): each case runs on its GPU with the profile's factors for its software."),
    cv: Optional[int] = typer.Option(None, "--cv", help="K: also check calibration out of sample per file: K-fold calibrated out-of-fold error, and the error of the rest after calibrating on 3 runs (docs/calibration.md)."),
    cv_factors: Optional[str] = typer.Option(None, "--cv-factors", help="Comma list of the factors --cv fits, each NAME or KIND:NAME (that kind only), e.g. gemm_efficiency,training:attention_efficiency (default: every factor of the cases' kinds; each costs one more run per case)."),
) -> None:
    """Run every case, report predicted, measured and relative error, and the summary per kind."""
    limits.check(limits.VALIDATE, dict(locals()), names=limits.JSON_NAMES)

    from parasim.report.validation import summarize, to_json, to_markdown
    from parasim.validation.run import run_files

    paths = [str(file)] + [str(p) for p in (extra or [])]
    outputs.check(json_file, markdown, error_table)
    prof = _profile(profile, cv)
    factors = _cv_factors(cv_factors, cv)
    reports = run_files(paths, kind=kind, workers=workers, pool=_pool, profile=prof)
    if not reports:
        raise InputError("kind" if kind else "file", f"no {kind + ' ' if kind else ''}case in {', '.join(paths)}: "
                                                     "nothing to validate")
    # a case that cannot be read or names something unknown is skipped and said on stderr; the
    # run fails (exit 2) only when no case could be run at all
    bad = [r for r in reports if r.input_error]
    for r in bad:
        level = "error" if len(bad) == len(reports) else "warning: case skipped"
        sys.stderr.write(f"parasim: {level}: {r.reason}\n")
    if bad and len(bad) == len(reports):
        raise SystemExit(2)
    checks = _cross_validate(paths, reports, cv, factors, workers) if cv else None
    data = to_json(reports, paths) if (json_out or json_file) else None
    if data is not None and prof is not None:
        data["profile"] = str(profile)
    if data is not None and checks is not None:
        data["cross_validation"] = {"k": cv, "files": [c.to_dict() for c in checks]}
    if json_out:
        print_json(data)
    else:
        render(reports, summarize(reports))
        if checks is not None:
            from parasim.report.calibration import render_cv

            render_cv(checks, cv)
    if json_file:
        outputs.write_json(json_file, data)
    if markdown is not None:
        text = to_markdown(reports, paths)
        if checks is not None:
            from parasim.report.calibration import cv_markdown

            text = _insert_after_summary(text, cv_markdown(checks, cv))
        outputs.write_text(markdown, text)
        if not json_out:
            console().print(f"wrote {markdown}")
    if error_table is not None:
        from parasim.validation.expected_error import dump_table, table_from_reports

        outputs.write_text(error_table, dump_table(table_from_reports(reports, paths)))
        if not json_out:
            console().print(f"wrote {error_table}")


def render(reports, summary: dict) -> None:
    rows = []
    for r in reports:
        keys = [k for k in r.measured if k != "flops_convention"]
        if not r.errors and not r.memory_errors:
            rows.append((r.id, r.kind, r.status, ", ".join(keys), None, None, r.reason or None))
        for k in keys:
            err = r.errors.get(k, r.memory_errors.get(k))
            if err is not None:
                rows.append((r.id, r.kind, r.status, k, r.predicted[k], r.measured[k], f"{100 * err:+.1f} %"))
    con = console()
    con.print(table("parasim validate", ("case", "kind", "status", "metric", "predicted", "measured", "error / reason"), rows))
    srows = [(k, s["n"], s["ok"], s["infeasible"], s["skipped"],
              *(None if s[x] is None else f"{100 * s[x]:.1f} %" for x in ("median_abs_error", "p90_abs_error", "max_abs_error")))
             for k, s in summary.items()]
    con.print(table("summary (|error|)", ("kind", "scored", "ok", "infeasible", "skipped", "median", "p90", "max"), srows))
    _render_memory(reports)


def _render_memory(reports) -> None:
    """The memory summary per file (report.validation.memory_stats), when any case measured memory."""
    from parasim.report.validation import memory_summary_by_file

    by_file = memory_summary_by_file(reports)
    if not by_file:
        return
    pct = lambda v: None if v is None else f"{100 * v:.1f} %"  # noqa: E731
    rows = [(f, s["cases"], pct(s["median_abs_error"]), pct(s["p90_abs_error"]), pct(s["max_abs_error"]),
             s["false_oom"], s["missed_oom"]) for f, s in by_file.items()]
    console().print(table("memory (|error|)", ("file", "cases", "median", "p90", "max", "false OOM", "missed OOM"),
                          rows))


def _profile(path: Optional[Path], cv: Optional[int]):
    if path is None:
        return None
    if cv:
        raise InputError("profile", "--cv fits its own factors from the catalog in every fold; run it without --profile")
    from parasim.specs.profile import load_profile

    return load_profile(path)


def _cv_factors(text: Optional[str], cv: Optional[int]) -> Optional[list[str]]:
    if text is None:
        return None
    if not cv:
        raise InputError("cv-factors", "only with --cv K")
    from parasim.validation.calibrate import factors_by_kind

    items = [n.strip() for n in text.split(",")]
    try:
        factors_by_kind(items)  # checked here, before any case runs
    except InputError as e:
        raise InputError("cv-factors", e.message) from None
    return items


def _cross_validate(paths, reports, k: int, factors, workers: int):
    from parasim.validation.crossval import cross_validate

    return cross_validate(paths, reports, k, factors=factors, workers=workers, pool=_pool)


def _insert_after_summary(text: str, section: str) -> str:
    """The cross-validation section goes after the summary tables, before the per-case tables."""
    at = text.find("\n## ", text.find("## Summary") + 1)
    return text + section if at < 0 else text[:at] + "\n" + section.rstrip("\n") + "\n" + text[at:]


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)


def _pool(task, items, workers):
    """validation.run's process pool: search.executors' local pool (Ctrl-C stops it, then raises)."""
    from parasim.search.executors import run_local

    outcome = run_local(task, None, items, workers=workers)
    if outcome.interrupted:
        raise KeyboardInterrupt
    return outcome.results
