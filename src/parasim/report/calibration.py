"""Calibration reports: the fitted factors, the error before and after, and the cross-validation
tables of `validate --cv` (formatting only; validation.fit_profile and validation.crossval compute)."""

from __future__ import annotations

from typing import Any

from parasim.report.tables import console, table
from parasim.report.validation import abs_pct


#: the factors as the table shows them (the profile and JSON use the full names)
SHORT = {"gemm_efficiency": "gemm", "attention_efficiency": "attn", "memory_efficiency": "mem",
         "comm_efficiency": "comm", "iteration_overhead_s": "iter"}


def _short(name: str, value: float) -> str:
    if name == "iteration_overhead_s":
        return f"iter{1e3 * value:+.2f}ms"
    return f"{SHORT.get(name, name)}*{value:.3g}"


def render_calibration(result: Any) -> None:
    """`parasim calibrate`'s tables: one row per scope, then |error| per kind and metric."""
    con = console()
    rows = []
    for f in result.fits:
        facs = " ".join(_short(k, v) for k, v in f.factors.items()) or "none"
        rows.append((f"{f.scope[0]} / {f.scope[1]}", len(f.runs), facs, abs_pct(f.before.get("median_abs_error")),
                     abs_pct(f.after.get("median_abs_error")), "; ".join(f.notes) or None))
    con.print(table("parasim calibrate: factors per scope (* the catalog; iter: + host time per iteration)", ("software / gpu", "runs", "factors",
                                                                "median before", "median after", "notes"), rows))
    keys = sorted(set(result.before) | set(result.after))
    erows = [(k, result.before.get(k, {}).get("errors"),
              *(abs_pct(d.get(k, {}).get(q)) for d in (result.before, result.after)
                for q in ("median_abs_error", "p90_abs_error"))) for k in keys]
    con.print(table("|error| on the fitted runs (in sample)", ("kind metric", "errors", "median before", "p90 before",
                                                               "median after", "p90 after"), erows))


def cv_rows(checks: list[Any]) -> list[tuple]:
    """Per file: scored cases, catalog / out-of-fold medians and p90s, then each 3-run check (per
    file, per GPU): the rest's median at the catalog, its median and p90 after the 3 runs."""
    rows = []
    for c in checks:
        rows.append((c.file, c.scored, *(abs_pct(d.get(q)) for d in (c.catalog, c.out_of_fold)
                                          for q in ("median_abs_error", "p90_abs_error")),
                     *(abs_pct(d.get(q)) for cat, after in ((c.few_catalog, c.few), (c.few_gpu_catalog, c.few_gpu))
                       for d, q in ((cat, "median_abs_error"), (after, "median_abs_error"), (after, "p90_abs_error")))))
    return rows


CV_COLUMNS = ("file", "cases", "catalog median", "catalog p90", "out-of-fold median", "out-of-fold p90",
              "rest at catalog, median", "rest after 3 runs, median", "rest after 3 runs, p90",
              "per GPU: rest at catalog, median", "per GPU: rest after 3 runs, median", "per GPU: rest after 3 runs, p90")


#: the same columns, short enough for a terminal
CV_SHORT = ("file", "cases", "catalog med", "p90", "out-of-fold med", "p90", "rest: catalog med", "3-run med", "p90",
            "per GPU rest: catalog med", "3-run med", "p90")


def render_cv(checks: list[Any], k: int) -> None:
    console().print(table(f"calibration out of sample ({k}-fold; and the rest of each file after fitting 3 runs)",
                          CV_SHORT, cv_rows(checks)))


def cv_markdown(checks: list[Any], k: int) -> str:
    """The cross-validation section of docs/VALIDATION.md."""
    lines = ["", "## Calibration out of sample", "",
             f"Each file's scored cases, split by position into {k} folds: each fold predicted with factors "
             "fitted (`parasim calibrate`'s method, one scope per software and GPU) on the other folds only. "
             "\"After 3 runs\": factors fitted (one scope per software) on the file's first, middle and last "
             "case, the rest of the file predicted with them (beside the same rest at the catalog). "
             "\"Per GPU\": as a user calibrates, on their own engine and GPU: each (software, GPU) of the file "
             "with more than 3 runs fitted on its own first, middle and last run, the rest of that GPU's runs "
             "predicted with them (the rests pooled over the file's GPUs). See docs/calibration.md.", "",
             "| " + " | ".join(CV_COLUMNS) + " |", "|" + "---|" * len(CV_COLUMNS)]
    for row in cv_rows(checks):
        lines.append("| `" + str(row[0]) + "` | " + " | ".join(str(v) for v in row[1:]) + " |")
    notes = [f"- `{c.file}`: {n}" for c in checks for n in c.notes]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"
