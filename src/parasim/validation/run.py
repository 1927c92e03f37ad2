"""Run validation cases: each case of a case file to its simulator, with its relative errors.

Every case of a case file (shared/validation/README.md format) goes to its predictor: training
cases to `parasim.validation.training.predict_case`, serving cases to
`parasim.validation.serving.predict_case`. For each measured key a simulator predicts, the
relative error is (predicted - measured) / measured. `parasim.report.validation` formats the
reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parasim.errors import InputError
from parasim.specs.profile import Profile
from parasim.specs.validation_case import KINDS, UNREADABLE, Case, CaseResult, read_cases
from parasim.validation.memory import ALL_MEMORY_KEYS, FALSE_OOM, MISSED_OOM

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
    errors: dict[str, float] = field(default_factory=dict)  # time and rate keys
    memory_errors: dict[str, float] = field(default_factory=dict)  # validation.memory.ALL_MEMORY_KEYS
    choices: list[str] = field(default_factory=list)
    reason: str = ""
    file: str = ""
    input_error: bool = False  # skipped because the case itself is unreadable or names something unknown

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "source": self.source, "file": self.file, "status": self.status,
                "predicted": self.predicted, "measured": self.measured, "errors": self.errors,
                "memory_errors": self.memory_errors,
                "choices": self.choices, "reason": self.reason}


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
    errors = {k: (base.predicted[k] - float(v)) / float(v) for k, v in numeric.items()
              if k in base.predicted and float(v) != 0.0}
    # memory is scored apart from time: its own section of the report, its own summary
    base.errors = {k: e for k, e in errors.items() if k not in ALL_MEMORY_KEYS}
    base.memory_errors = {k: e for k, e in errors.items() if k in ALL_MEMORY_KEYS}
    unscored = sorted(k for k in numeric if k not in base.predicted)
    if unscored and base.status in ("ok", FALSE_OOM, MISSED_OOM):
        base.choices.append(f"not predicted (no such {case.kind} metric in parasim): {', '.join(unscored)}")
    return base


def _predictors() -> dict[str, Callable[[Case], CaseResult] | None]:
    from parasim.validation import serving, training  # lazily: numpy and the simulators load only when run

    return {"training": training.predict_case, "serving": serving.predict_case}


def _run_item(context: None, item: tuple[Case, str]) -> CaseReport:  # noqa: ARG001 - executors' task signature
    """One case in a worker process (module-level so a process pool can pickle it by name)."""
    case, file = item
    return run_case(case, _predictors(), file=file)


#: runs `task(None, item)` for every item on `workers` processes and returns the results in item order
#: (raising KeyboardInterrupt if interrupted): the caller's pool, as search.executors sits above this layer
Pool = Callable[[Callable[[None, tuple[Case, str]], CaseReport], list[tuple[Case, str]], int], list[CaseReport]]


def run_files(paths: Iterable[str | Path], kind: str | None = None, workers: int = 1,
              pool: Pool | None = None, profile: Profile | None = None) -> list[CaseReport]:
    """Every case of `paths` (of one kind, if given), in file order. Cases are independent, so
    `workers` > 1 spreads them over the caller's process `pool` (the CLI passes search.executors':
    the same Ctrl-C handling as the planners); the reports come back in the same order, so the output does not depend on the
    worker count. Ctrl-C raises KeyboardInterrupt here, after the pool is stopped: a validation
    run is reported whole or not at all. A `profile` puts its factors on each case's part."""
    if kind is not None and kind not in KINDS:
        raise InputError("kind", f"'{kind}' is not one of {', '.join(KINDS)}")
    if workers < 1:
        raise InputError("workers", f"must be at least 1 (got {workers})")
    read = [(item, str(p)) for p in paths for item in read_cases(p)]
    items = [(c, f) for c, f in read if isinstance(c, Case) and (kind is None or c.kind == kind)]
    if profile is not None:  # `validate --profile`: each case on its part as the profile calibrates it
        from parasim.validation.scope import calibrated

        items = [(calibrated(c, profile), f) for c, f in items]
    # unreadable cases keep their place in file order, as skipped reports naming the problem
    runs = iter(run_cases(items, workers, pool))
    out = []
    for c, f in read:
        if isinstance(c, Case):
            if kind is None or c.kind == kind:
                out.append(next(runs))
        elif kind is None or c.kind in (kind, UNREADABLE):
            out.append(CaseReport(id=c.id, kind=c.kind, source="", status="skipped", reason=str(c.error), file=f,
                                  input_error=True))
    return out


def run_cases(items: list[tuple[Case, str]], workers: int = 1, pool: Pool | None = None) -> list[CaseReport]:
    """Each (case, file) run to its report, in item order, over the caller's `pool` when `workers`
    > 1 (the calibration fits re-run the same cases with other factors)."""
    if workers == 1 or len(items) < 2 or pool is None:
        predictors = _predictors()
        return [run_case(case, predictors, file=f) for case, f in items]
    return pool(_run_item, items, min(workers, len(items)))
