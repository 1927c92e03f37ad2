"""Run validation cases, summarise the errors per kind, and write them as JSON or markdown.

Every case of a case file (shared/validation/README.md format) goes to its simulator: training
cases to `parasim.training.case.predict_case`, serving cases to `parasim.serving.case.predict_case`
(imported lazily; while it does not exist they are reported as skipped). For each measured key a
simulator predicts, the relative error is (predicted - measured) / measured; the summary per kind
holds the count of cases with errors and the median, p90 and max of |error| over all their keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parasim import __version__
from parasim.errors import InputError
from parasim.specs.validation_case import KINDS, UNREADABLE, Case, CaseResult, read_cases

#: the kinds reports are grouped by: the case kinds, then cases whose kind could not be read
REPORT_KINDS = (*KINDS, UNREADABLE)

#: measured keys that are not numbers to score: how tflops count, and whether the run fit
NON_METRIC_KEYS = ("flops_convention", "fits")


@dataclass(kw_only=True)
class CaseReport:
    id: str
    kind: str
    source: str
    status: str
    predicted: dict[str, float] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    choices: list[str] = field(default_factory=list)
    reason: str = ""
    file: str = ""
    input_error: bool = False  # skipped because the case itself is unreadable or names something unknown

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "source": self.source, "file": self.file, "status": self.status,
                "predicted": self.predicted, "measured": self.measured, "errors": self.errors,
                "choices": self.choices, "reason": self.reason}


def _serving_predictor() -> Callable[[Case], CaseResult] | None:
    try:
        from parasim.serving.case import predict_case  # type: ignore[import-not-found]
    except ImportError:
        return None
    return predict_case


def _training_predictor() -> Callable[[Case], CaseResult]:
    from parasim.training.case import predict_case

    return predict_case


def run_case(case: Case, predictors: dict[str, Callable[[Case], CaseResult] | None], file: str = "") -> CaseReport:
    measured = {k: v for k, v in case.measured.items()}
    numeric = {k: v for k, v in measured.items() if k not in NON_METRIC_KEYS and isinstance(v, (int, float))}
    base = CaseReport(id=case.id, kind=case.kind, source=case.source, status="skipped", measured=measured, file=file)
    fn = predictors.get(case.kind)
    if fn is None:
        base.reason = f"{case.kind} simulator not available"
        return base
    try:
        res = fn(case)
    except InputError as e:  # a bad field the simulator found: this case is skipped, the run goes on
        base.reason, base.input_error = str(e), True
        return base
    base.status, base.choices, base.reason = res.status, list(res.choices), res.reason
    # a simulator skips a case only for a bad field it found (a trace line, a plan value): the
    # case's input, so that `validate` with no case run is exit 2, never 0 with nothing scored
    base.input_error = res.status == "skipped"
    if base.input_error and not base.reason.startswith(f"case {case.id}"):
        base.reason = f"case {case.id}: {base.reason}"
    base.predicted = {k: float(v) for k, v in res.predicted.items()}
    base.errors = {k: (base.predicted[k] - float(v)) / float(v) for k, v in numeric.items()
                   if k in base.predicted and float(v) != 0.0}
    unscored = sorted(k for k in numeric if k not in base.predicted)
    if unscored and base.status == "ok":
        base.choices.append(f"not predicted (no such {case.kind} metric in parasim): {', '.join(unscored)}")
    return base


def _predictors() -> dict[str, Callable[[Case], CaseResult] | None]:
    return {"training": _training_predictor(), "serving": _serving_predictor()}


def _run_item(context: None, item: tuple[Case, str]) -> CaseReport:  # noqa: ARG001 - executors' task signature
    """One case in a worker process (module-level so a process pool can pickle it by name)."""
    case, file = item
    return run_case(case, _predictors(), file=file)


def run_files(paths: Iterable[str | Path], kind: str | None = None, workers: int = 1) -> list[CaseReport]:
    """Every case of `paths` (of one kind, if given), in file order. Cases are independent, so
    `workers` > 1 spreads them over a process pool (search.executors: the same Ctrl-C handling as
    the planners); the reports come back in the same order, so the output does not depend on the
    worker count. Ctrl-C raises KeyboardInterrupt here, after the pool is stopped: a validation
    run is reported whole or not at all."""
    if kind is not None and kind not in KINDS:
        raise InputError("kind", f"'{kind}' is not one of {', '.join(KINDS)}")
    if workers < 1:
        raise InputError("workers", f"must be at least 1 (got {workers})")
    read = [(item, str(p)) for p in paths for item in read_cases(p)]
    items = [(c, f) for c, f in read if isinstance(c, Case) and (kind is None or c.kind == kind)]
    if workers == 1 or len(items) < 2:
        predictors = _predictors()
        done = [run_case(case, predictors, file=f) for case, f in items]
    else:
        from parasim.search.executors import run_local

        outcome = run_local(_run_item, None, items, workers=min(workers, len(items)))
        if outcome.interrupted:
            raise KeyboardInterrupt
        done = outcome.results
    # unreadable cases keep their place in file order, as skipped reports naming the problem
    runs = iter(done)
    out = []
    for c, f in read:
        if isinstance(c, Case):
            if kind is None or c.kind == kind:
                out.append(next(runs))
        elif kind is None or c.kind in (kind, UNREADABLE):
            out.append(CaseReport(id=c.id, kind=c.kind, source="", status="skipped", reason=str(c.error), file=f,
                                  input_error=True))
    return out


def _quantile(xs: list[float], q: float) -> float:
    """Linear-interpolated quantile of a sorted list."""
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(reports: list[CaseReport]) -> dict[str, dict[str, Any]]:
    """Per kind: n (cases with at least one error), counts by status, median/p90/max |error|."""
    out: dict[str, dict[str, Any]] = {}
    for kind in REPORT_KINDS:
        rs = [r for r in reports if r.kind == kind]
        if rs:
            out[kind] = _stats(rs)
    return out


def summarize_by_file(reports: list[CaseReport]) -> dict[str, dict[str, dict[str, Any]]]:
    """The same summary per input file (issue targets are stated per file)."""
    files = sorted({r.file for r in reports})
    return {f: summarize([r for r in reports if r.file == f]) for f in files}


def _stats(rs: list[CaseReport]) -> dict[str, Any]:
    errs = sorted(abs(e) for r in rs for e in r.errors.values())
    return {"n": sum(1 for r in rs if r.errors), "errors": len(errs),
            "ok": sum(r.status == "ok" for r in rs), "infeasible": sum(r.status == "infeasible" for r in rs),
            "skipped": sum(r.status == "skipped" for r in rs),
            "median_abs_error": _quantile(errs, 0.5) if errs else None,
            "p90_abs_error": _quantile(errs, 0.9) if errs else None,
            "max_abs_error": errs[-1] if errs else None}


def to_json(reports: list[CaseReport], inputs: list[str]) -> dict[str, Any]:
    return {"parasim_version": __version__, "inputs": inputs, "cases": [r.to_dict() for r in reports],
            "summary": summarize(reports), "summary_by_file": summarize_by_file(reports)}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f} %"


def _num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def to_markdown(reports: list[CaseReport], inputs: list[str]) -> str:
    lines = ["# Validation", "",
             f"_Generated by `parasim validate` (parasim {__version__}); do not edit by hand. "
             "Regenerate with `make validation` (it names the input files: the shared cases and the "
             "project's own `validation/*.yaml`)._", "",
             "Inputs: " + ", ".join(f"`{p}`" for p in inputs) + ".", "",
             "Error = (predicted - measured) / measured. Summary over every measured key of every case "
             "that produced a prediction.", "", "## Summary", "",
             "| kind | cases with errors | ok | infeasible | skipped | median abs error | p90 abs error | max abs error |",
             "|---|---|---|---|---|---|---|---|"]
    f = lambda v: "-" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    for kind, s in summarize(reports).items():
        lines.append(f"| {kind} | {s['n']} | {s['ok']} | {s['infeasible']} | {s['skipped']} | "
                     f"{f(s['median_abs_error'])} | {f(s['p90_abs_error'])} | {f(s['max_abs_error'])} |")
    lines += ["", "By input file:", "", "| file | kind | cases with errors | median abs error | p90 abs error | max abs error |",
              "|---|---|---|---|---|---|"]
    for file, by_kind in summarize_by_file(reports).items():
        for kind, s in by_kind.items():
            lines.append(f"| `{file}` | {kind} | {s['n']} | {f(s['median_abs_error'])} | {f(s['p90_abs_error'])} | "
                         f"{f(s['max_abs_error'])} |")
    for kind in REPORT_KINDS:
        rs = [r for r in reports if r.kind == kind]
        if not rs:
            continue
        lines += ["", f"## {kind.capitalize()} cases", "", "| case | status | metric | predicted | measured | error |",
                  "|---|---|---|---|---|---|"]
        notes: dict[str, list[str]] = {}  # note text -> ids, in order of first appearance
        for r in rs:
            keys = [k for k in r.measured if k not in NON_METRIC_KEYS]
            if not r.errors:
                lines.append(f"| {r.id} | {r.status} | {', '.join(keys)} | - | "
                             f"{', '.join(_num(r.measured[k]) for k in keys)} | - |")
            for k in keys:
                if k in r.errors:
                    lines.append(f"| {r.id} | {r.status} | {k} | {_num(r.predicted[k])} | {_num(r.measured[k])} | "
                                 f"{_pct(r.errors[k])} |")
            if r.reason or r.choices:
                notes.setdefault("; ".join(([r.reason] if r.reason else []) + r.choices), []).append(r.id)
        if notes:
            # cases of one table share most choices: each distinct text once, with the cases it covers
            lines += ["", "Choices and reasons (each text once, after the cases it applies to):", "",
                      *(f"- **{', '.join(ids)}**: {text}" for text, ids in notes.items())]
    return "\n".join(lines) + "\n"
