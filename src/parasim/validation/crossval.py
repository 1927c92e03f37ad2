"""Out-of-sample evidence for calibration: K-fold cross-validation and a 3-run calibration per file.

For every input file, its scored cases (in file order) are split into K folds by position modulo
K; each fold is predicted by the real simulator with factors fitted (calibrate.linear_fit, scope
software + GPU) on the other K-1 folds only. Separately, two 3-run checks: three runs of the file
(the first, the middle and the last scored case) fitted with one scope per software, the rest of
the file predicted with them; and, as a user calibrates (on their own engine and GPU), three runs
of each (software, GPU) of the file (its first, middle and last) fitted for that scope alone, the
rest of that GPU's runs predicted with them. The sensitivities are computed once per case and
shared by every fit; each held-out case is re-run once per check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from parasim.mathx import quantile
from parasim.specs.profile import FACTORS, Factors
from parasim.specs.validation_case import Case, read_cases
from parasim.validation.calibrate import (Observed, factors_by_kind, groups, linear_fit, names_for_kinds, observe,
                                          scope_of, with_factors)
from parasim.validation.run import CaseReport, Pool, run_cases

#: the scope each check fits in (docs/calibration.md)
CV_SCOPE, FEW_SCOPE, FEW_GPU_SCOPE = "software+gpu", "software", "software+gpu"
FEW_RUNS = 3


def fold_of(index: int, k: int) -> int:
    """Deterministic split: the i-th scored case of a file is in fold i mod k."""
    return index % k


def few_runs(n: int) -> list[int]:
    """Positions of the FEW_RUNS runs a file is calibrated on: first, middle, last (none when the
    file has no run left to predict)."""
    return sorted({0, (n - 1) // 2, n - 1}) if n > FEW_RUNS else []


def quantiles(errors: Sequence[float]) -> dict[str, Any]:
    """n, median and p90 of |error| (linear interpolation), None when empty."""
    xs = sorted(abs(e) for e in errors)
    if not xs:
        return {"errors": 0, "median_abs_error": None, "p90_abs_error": None}
    return {"errors": len(xs), "median_abs_error": quantile(xs, 0.5), "p90_abs_error": quantile(xs, 0.9)}


@dataclass
class FileCheck:
    """One file's evidence: errors at the catalog, out of fold, and after calibrating on 3 runs."""

    file: str
    k: int
    scored: int
    catalog: dict[str, Any] = field(default_factory=dict)
    out_of_fold: dict[str, Any] = field(default_factory=dict)
    few: dict[str, Any] = field(default_factory=dict)  # the rest of the file, after FEW_RUNS runs
    few_catalog: dict[str, Any] = field(default_factory=dict)  # the same rest at the catalog
    few_runs: list[str] = field(default_factory=list)
    few_gpu: dict[str, Any] = field(default_factory=dict)  # the rest of each GPU's runs, after 3 of them
    few_gpu_catalog: dict[str, Any] = field(default_factory=dict)  # the same rest at the catalog
    few_gpu_runs: dict[str, list[str]] = field(default_factory=dict)  # "software / gpu" -> its 3 runs' ids
    case_errors: dict[str, dict[str, float]] = field(default_factory=dict)  # id -> out-of-fold errors
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "k": self.k, "scored_cases": self.scored, "catalog": self.catalog,
                "calibrated_out_of_fold": self.out_of_fold, "calibrated_on_3": self.few,
                "catalog_on_the_rest": self.few_catalog, "calibration_runs": self.few_runs,
                "calibrated_on_3_per_gpu": self.few_gpu, "catalog_on_the_rest_per_gpu": self.few_gpu_catalog,
                "calibration_runs_per_gpu": self.few_gpu_runs,
                "out_of_fold_errors": self.case_errors, "notes": self.notes}


def _fits(train: Sequence[Observed], names: Sequence[str], scope: str) -> dict[tuple[str, str], Factors]:
    out = {}
    for key, g in groups(train, scope).items():
        fit = linear_fit(g, names, key)[0]
        if fit.factors:
            out[key] = Factors(fit.factors)
    return out


def held_out(obs: Sequence[Observed], k: int, names: Sequence[str],
             scope: str = CV_SCOPE) -> list[tuple[Observed, Factors | None]]:
    """Each run with the factors fitted without its fold ((run, None) where its scope got none);
    empty when there are fewer runs than folds. A run's own fold never enters its fit."""
    held: list[tuple[Observed, Factors | None]] = []
    if len(obs) >= k:
        for j in range(k):
            train = [o for i, o in enumerate(obs) if fold_of(i, k) != j]
            fits = _fits(train, names, scope)
            held += [(o, fits.get(scope_of(o.case, scope))) for i, o in enumerate(obs) if fold_of(i, k) == j]
    return held


def _plan(obs: Sequence[Observed], k: int, names: Sequence[str]) -> tuple[list, list, list[str]]:
    """(held-out pairs, 3-run pairs, the 3 runs' ids): (Observed, Factors or None) to re-run."""
    held = held_out(obs, k, names)
    pick = few_runs(len(obs))
    fits = _fits([obs[i] for i in pick], names, FEW_SCOPE) if pick else {}
    few = [(o, fits.get(scope_of(o.case, FEW_SCOPE))) for i, o in enumerate(obs) if i not in pick] if pick else []
    return held, few, [obs[i].case.id for i in pick]


def _plan_per_gpu(obs: Sequence[Observed], names: Sequence[str]) -> tuple[list, dict[str, list[str]]]:
    """The user's 3-run check: per (software, GPU) of the file with more than FEW_RUNS runs, its
    first, middle and last run fitted for that scope alone; (the rest of its runs, their factors)
    to re-run, and "software / gpu" -> the 3 runs' ids. A GPU with too few runs has no check."""
    pairs: list[tuple[Observed, Factors | None]] = []
    runs: dict[str, list[str]] = {}
    for key, g in groups(obs, FEW_GPU_SCOPE).items():
        pick = few_runs(len(g))
        if not pick:
            continue
        f = _fits([g[i] for i in pick], names, FEW_GPU_SCOPE).get(key)
        pairs += [(o, f) for i, o in enumerate(g) if i not in pick]
        runs[f"{key[0]} / {key[1]}"] = [g[i].case.id for i in pick]
    return pairs, runs


def rerun(pairs: list[tuple[Observed, Factors | None]], workers: int, pool: Pool | None) -> list[CaseReport]:
    """Each pair's case re-run with its factors (one pool call); unfitted ones keep the catalog's.
    A case that comes twice with the same factors (a one-GPU file's two 3-run checks) runs once."""
    keys = [None if f is None else (o.file, o.case.id, tuple(sorted(f.values.items()))) for o, f in pairs]
    index: dict[tuple, int] = {}
    todo = []
    for (o, f), key in zip(pairs, keys):
        if key is not None and key not in index:
            index[key] = len(todo)
            todo.append((with_factors(o.case, f), o.file))
    runs = run_cases(todo, workers, pool)
    return [o.base if key is None else runs[index[key]] for (o, _), key in zip(pairs, keys)]


def errors_of(reports: Sequence[CaseReport]) -> list[float]:
    return [e for r in reports for e in r.errors.values()]


def cross_validate(paths: Sequence[str], reports: Sequence[CaseReport], k: int, *, factors: Sequence[str] | None = None,
                   workers: int = 1, pool: Pool | None = None) -> list[FileCheck]:
    """Per file of `paths`: K-fold out-of-fold and 3-run calibrated errors beside the catalog's.
    `reports` are the catalog runs of the same files (reused, keyed by file and case id);
    `factors` are names or KIND:NAME (calibrate.factors_by_kind), by default every factor."""
    base = {(r.file, r.id): r for r in reports if r.status == "ok"}
    cases = [(c, str(p)) for p in paths for c in read_cases(p) if isinstance(c, Case)]
    cases = [(c, f) for c, f in cases if (f, c.id) in base and base[(f, c.id)].errors]
    by_kind = factors_by_kind(factors or names_for_kinds({c.kind for c, _ in cases}))
    names = [f for f in FACTORS if any(f in v for v in by_kind.values())]
    obs = observe(cases, by_kind, workers=workers, pool=pool, base=base)
    checks, pairs = [], []
    for p in dict.fromkeys(str(p) for p in paths):
        fobs = [o for o in obs if o.file == p and o.scored]
        check = FileCheck(file=p, k=k, scored=len(fobs), catalog=quantiles(errors_of([o.base for o in fobs])))
        held, few, check.few_runs = _plan(fobs, k, names)
        few_gpu, check.few_gpu_runs = _plan_per_gpu(fobs, names)
        if not held:
            check.notes.append(f"{len(fobs)} scored case(s), fewer than {k} folds: no cross-validation")
        checks.append(check)
        pairs.append((held, few, few_gpu))
    flat = [x for parts in pairs for part in parts for x in part]
    done = iter(rerun(flat, workers, pool))
    for check, (held, few, few_gpu) in zip(checks, pairs):
        held_reps = [next(done) for _ in held]
        few_reps = [next(done) for _ in few]
        gpu_reps = [next(done) for _ in few_gpu]
        if few_gpu:
            check.few_gpu = quantiles(errors_of(gpu_reps))
            check.few_gpu_catalog = quantiles(errors_of([o.base for o, _ in few_gpu]))
        if held:
            check.out_of_fold = quantiles(errors_of(held_reps))
            check.case_errors = {o.case.id: dict(r.errors) for (o, _), r in zip(held, held_reps)}
        if few:
            check.few = quantiles(errors_of(few_reps))
            check.few_catalog = quantiles(errors_of([o.base for o, _ in few]))
    return checks


def by_kind_metric(reports: Sequence[CaseReport]) -> dict[str, dict[str, Any]]:
    """|error| quantiles per "kind metric" (e.g. "serving output_tokens_per_s"), sorted by name."""
    errs: dict[str, list[float]] = {}
    for r in reports:
        for m, e in r.errors.items():
            errs.setdefault(f"{r.kind} {m}", []).append(e)
    return {key: quantiles(v) for key, v in sorted(errs.items())}
