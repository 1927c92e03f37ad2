"""Fitting a calibration profile (specs.profile) to measured runs, and checking it out of sample.

Method (docs/calibration.md): predict every run at the catalog and once more with each factor
stepped (the sensitivity of log(prediction) to the factor, by a finite step); solve a ridge
least-squares in log space, which is a Gaussian prior pulling each factor toward the catalog;
clip to the factor's bounds; then (`refine` > 0) Gauss-Newton steps that re-predict the runs at
the new point. The sensitivities do not depend on which runs a fit uses, so a cross-validation
computes them once per case and reuses them in every fold.

A fit refuses what the runs cannot determine: fewer than MIN_RUNS_PER_FACTOR runs per free
factor, a factor no run moves, a factor whose effect the runs cannot tell apart from another's.
Named explicitly (`factors=`), such a factor is an InputError; by default it is dropped, and
the fit says so in its notes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parasim.errors import InputError
from parasim.specs.profile import ADDITIVE, FACTORS, Entry, Factors, Profile, bounds, log_bounds
from parasim.specs.validation_case import Case
from parasim.validation.run import CaseReport, Pool, run_cases
from parasim.validation.scope import SCOPES, scope_of, software_key, with_factors  # noqa: F401 - re-exported

#: a free factor needs at least this many runs (the brief's and the usual rule of thumb: two
#: observations per parameter leave as many degrees of freedom as parameters for the residual)
MIN_RUNS_PER_FACTOR = 2
#: finite step for the sensitivities, in fit coordinates: a multiplier 10 % down (down, so a cap at
#: an efficiency of 1 never hides the step), an additive overhead 1 ms up
STEP = {"multiplier": math.log(0.9), "additive": 1e-3}
#: prior (regularisation): the catalog is taken as right within ~30 % per multiplier (one sigma in
#: log space) and within 1 ms per iteration for the host overhead; a run's log-error as ~10 %
PRIOR_SIGMA = {"multiplier": 0.3, "additive": 1e-3}
RESIDUAL_SIGMA = 0.10
#: a factor whose one-prior-sigma change moves the runs' log predictions by less than this
#: (weighted RMS: 0.3 %) is not determined by them
MOVE_TOL = 3e-3
#: a factor whose sensitivities are this close to parallel to a kept factor's (|cos|) is collinear
COLLINEAR_COS = 0.995
#: the factors a fit tries by default, per kind (training has no engine iteration)
DEFAULT_FACTORS = {"training": tuple(f for f in FACTORS if f not in ADDITIVE), "serving": FACTORS}


def _kind(name: str) -> str:
    return "additive" if name in ADDITIVE else "multiplier"


def movable(case: Case, name: str) -> bool:
    """Whether the factor can change this case at all (no step run is spent where it cannot)."""
    if name in ADDITIVE:
        return case.kind == "serving"
    if name == "comm_efficiency":
        return case.cluster.gpus > 1
    return True


def to_value(name: str, x: float) -> float:
    """Fit coordinate -> factor value (log multiplier -> multiplier)."""
    return x if name in ADDITIVE else math.exp(x)


@dataclass
class Observed:
    """One run: its catalog report and d log(prediction) / d(fit coordinate) per factor and metric."""

    case: Case
    file: str
    base: CaseReport
    sens: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def scored(self) -> bool:
        return self.base.status == "ok" and bool(self.base.errors)


def _log_ratio(step: CaseReport, base: CaseReport, metric: str) -> float:
    a, b = step.predicted.get(metric), base.predicted.get(metric)
    if step.status != "ok" or not a or not b or a <= 0 or b <= 0:
        return 0.0
    return math.log(a / b)


def observe(cases: Sequence[tuple[Case, str]], names: Sequence[str] | dict[str, Sequence[str]], *, workers: int = 1,
            pool: Pool | None = None, base: dict[tuple[str, str], CaseReport] | None = None) -> list[Observed]:
    """Every case at the catalog (or its report from `base`, keyed by (file, id)) and its
    sensitivities to each of `names` (or, a mapping, the names of its kind) it can move: one run
    per (case, factor), all on the pool. A factor not stepped has no sensitivity (not fitted)."""
    base = base or {}
    todo = [(c, f) for c, f in cases if (f, c.id) not in base]
    for (c, f), r in zip(todo, run_cases(todo, workers, pool)):
        base[(f, c.id)] = r
    obs = [Observed(c, f, base[(f, c.id)]) for c, f in cases]
    per_kind = names if isinstance(names, dict) else {k: names for k in DEFAULT_FACTORS}
    steps = [(o, n) for o in obs for n in per_kind.get(o.case.kind, ()) if o.scored and movable(o.case, n)]
    items = [(with_factors(o.case, Factors({n: to_value(n, STEP[_kind(n)])})), o.file) for o, n in steps]
    for (o, n), rep in zip(steps, run_cases(items, workers, pool)):
        o.sens[n] = {m: _log_ratio(rep, o.base, m) / STEP[_kind(n)] for m in o.base.errors}
    return obs


@dataclass
class Fit:
    """One scope's fitted factors, what was dropped and why, and the errors before/after."""

    scope: tuple[str, str]
    runs: list[str]
    factors: dict[str, float]
    notes: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    def entry(self, extra: dict[str, Any] | None = None) -> Entry:
        fit = {"runs": len(self.runs), "run_ids": self.runs, "before": self.before, "after": self.after,
               **(extra or {})}
        return Entry(software=self.scope[0], accelerator=self.scope[1], factors=dict(self.factors), fit=fit)


def _rows(obs: Sequence[Observed], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S, r, w): sensitivities in prior-scaled coordinates, log residuals, weights (each run 1)."""
    S, r, w = [], [], []
    for o in obs:
        errs = o.base.errors
        for m, e in errs.items():
            S.append([o.sens.get(n, {}).get(m, 0.0) * PRIOR_SIGMA[_kind(n)] for n in names])
            r.append(-math.log1p(e))
            w.append(1.0 / len(errs))
    return np.array(S, dtype=float).reshape(len(r), len(names)), np.array(r), np.array(w)


def select(obs: Sequence[Observed], names: Sequence[str], explicit: bool) -> tuple[list[str], list[str]]:
    """The factors these runs determine, and a note per factor dropped (explicit: an InputError
    instead). Determined: moved by the runs and not collinear with a factor kept before it (most
    influential first), at most (runs // MIN_RUNS_PER_FACTOR) of them. When more are determined
    than the runs allow, the set kept is the one that explains the runs best (the lowest value of
    the objective solve() minimises), not merely the most influential: with 3 runs and one factor,
    the one factor whose pattern over the runs matches what they measured."""
    n_runs = len(obs)
    S, r, w = _rows(obs, names)
    sw = S * np.sqrt(w)[:, None]  # per prior sigma of each factor, weighted
    rms = np.sqrt((sw ** 2).sum(axis=0) / max(1.0, w.sum())) if len(w) else np.zeros(len(names))
    order = sorted(range(len(names)), key=lambda j: (-rms[j], names[j]))
    free: list[str] = []
    basis: list[np.ndarray] = []
    notes: list[str] = []
    for j in order:
        n, col = names[j], sw[:, j]
        why = None
        if rms[j] < MOVE_TOL:
            why = "the runs do not move it (zero sensitivity)"
        elif not _extend_basis(basis, col):
            why = "its effect on these runs cannot be told apart from a factor already fitted (collinear)"
        else:
            free.append(n)
        if why:
            if explicit:
                raise InputError("factors", f"cannot fit {n}: {why}; drop it from --factors or add runs")
            notes.append(f"{n} not fitted: {why}")
    cap = n_runs // MIN_RUNS_PER_FACTOR
    kept = _best_set(obs, free, cap) if len(free) > cap else free
    for n in free:
        if n not in kept:
            why = (f"{n_runs} run(s) determine at most {cap} factor(s) ({MIN_RUNS_PER_FACTOR} runs per factor); "
                   "the ones that explain the runs best were kept")
            if explicit:
                raise InputError("factors", f"cannot fit {n}: {why}; drop it from --factors or add runs")
            notes.append(f"{n} not fitted: {why}")
    return kept, notes


def _best_set(obs: Sequence[Observed], free: Sequence[str], size: int) -> list[str]:
    """Of the determined factors `free` (most influential first), the `size` of them whose fit
    leaves the lowest objective (residuals and prior, as solve() weighs them); ties go to the more
    influential. Sets whose factors the runs cannot tell apart from each other are not tried."""
    if size <= 0:
        return []
    best: tuple[float, list[str]] | None = None
    for combo in itertools.combinations(free, size):
        names = list(combo)
        S, r, w = _rows(obs, names)
        if not _independent(S * np.sqrt(w)[:, None]):
            continue
        u = solve(obs, names) / PRIOR_SIGMA_VEC(names)
        value = float(w @ (r - S @ u) ** 2) / RESIDUAL_SIGMA ** 2 + float((u ** 2).sum())
        if best is None or value < best[0] - 1e-12:
            best = (value, names)
    return best[1] if best else list(free[:size])


def _extend_basis(basis: list[np.ndarray], col: np.ndarray) -> bool:
    """Add `col`'s part orthogonal to the orthonormal `basis` to it, unless `col` is collinear
    (|cos| > COLLINEAR_COS) with the basis's span: then leave the basis as it is and say False."""
    resid = col.copy()
    for b in basis:
        resid -= (resid @ b) * b
    if np.linalg.norm(resid) < math.sqrt(1 - COLLINEAR_COS ** 2) * np.linalg.norm(col):
        return False
    basis.append(resid / np.linalg.norm(resid))
    return True


def _independent(sw: np.ndarray) -> bool:
    """No column of `sw` collinear with the span of the ones before it (`_extend_basis`)."""
    basis: list[np.ndarray] = []
    return all(_extend_basis(basis, col) for col in sw.T)


def PRIOR_SIGMA_VEC(names: Sequence[str]) -> np.ndarray:  # noqa: N802 - a vector of the table above
    return np.array([PRIOR_SIGMA[_kind(n)] for n in names])


def solve(obs: Sequence[Observed], names: Sequence[str], x0: np.ndarray | None = None,
          resid: np.ndarray | None = None) -> np.ndarray:
    """One ridge / Gauss-Newton step in fit coordinates, clipped to the bounds: minimise
    sum w (r - S dx)^2 / RESIDUAL_SIGMA^2 + sum ((x0 + dx) / PRIOR_SIGMA)^2. `resid` replaces the
    catalog residuals (after re-predicting at x0)."""
    S, r, w = _rows(obs, names)
    if resid is not None:
        r = resid
    sig = PRIOR_SIGMA_VEC(names)
    u0 = np.zeros(len(names)) if x0 is None else x0 / sig
    A = (S.T * w) @ S / RESIDUAL_SIGMA ** 2 + np.eye(len(names))
    b = (S.T * w) @ r / RESIDUAL_SIGMA ** 2 - u0
    u = u0 + np.linalg.solve(A, b)
    lo, hi = np.array([log_bounds(n) for n in names]).T
    return np.clip(u * sig, lo, hi)


def factors_of(names: Sequence[str], x: np.ndarray) -> dict[str, float]:
    return {n: round(to_value(n, float(v)), 6) for n, v in zip(names, x)}


def _residuals(obs: Sequence[Observed], reports: Sequence[CaseReport]) -> np.ndarray:
    """Log residuals of re-predicted runs, in _rows' order (a failed re-prediction counts as the catalog's)."""
    out = []
    for o, rep in zip(obs, reports):
        for m, e in o.base.errors.items():
            out.append(-math.log1p(rep.errors.get(m, e)))
    return np.array(out)


def linear_fit(obs: Sequence[Observed], names: Sequence[str], scope: tuple[str, str], *,
               explicit: bool = False) -> tuple[Fit, list[str], np.ndarray]:
    """The one-step (linearised) fit of one scope's scored runs: (fit, factors kept, coordinates)."""
    obs = [o for o in obs if o.scored]
    fit = Fit(scope=scope, runs=[o.case.id for o in obs], factors={})
    if len(obs) < MIN_RUNS_PER_FACTOR:
        msg = f"{len(obs)} scored run(s) for {scope[0]} / {scope[1]}: at least {MIN_RUNS_PER_FACTOR} per factor"
        if explicit:
            raise InputError("runs", msg)
        fit.notes.append(f"nothing fitted: {msg}")
        return fit, [], np.zeros(0)
    kept, fit.notes = select(obs, names, explicit)
    x = solve(obs, kept) if kept else np.zeros(0)
    fit.factors = factors_of(kept, x)
    return fit, kept, x


def fit_group(obs: Sequence[Observed], names: Sequence[str], scope: tuple[str, str], *, explicit: bool = False,
              refine: int = 0, workers: int = 1, pool: Pool | None = None) -> tuple[Fit, list[CaseReport]]:
    """Fit one scope's factors on its runs; returns the fit and the runs re-predicted with it
    (the catalog reports when nothing could be fitted)."""
    obs = [o for o in obs if o.scored]
    fit, kept, x = linear_fit(obs, names, scope, explicit=explicit)
    if not kept:
        return fit, [o.base for o in obs]
    reports = _predict(obs, kept, x, workers, pool)
    w, sig = _rows(obs, kept)[2], PRIOR_SIGMA_VEC(kept)

    def objective(xs: np.ndarray, reps: list[CaseReport]) -> float:  # what solve() minimises
        return float(w @ _residuals(obs, reps) ** 2) / RESIDUAL_SIGMA ** 2 + float(((xs / sig) ** 2).sum())

    for _ in range(refine):  # Gauss-Newton on the real predictions; a step that does not help is not taken
        x_new = solve(obs, kept, x0=x, resid=_residuals(obs, reports))
        again = _predict(obs, kept, x_new, workers, pool)
        if objective(x_new, again) >= objective(x, reports):
            break
        x, reports = x_new, again
    fit.factors = factors_of(kept, x)
    return fit, reports


def _predict(obs: Sequence[Observed], names: Sequence[str], x: np.ndarray, workers: int,
             pool: Pool | None) -> list[CaseReport]:
    f = Factors(factors_of(names, x))
    return run_cases([(with_factors(o.case, f), o.file) for o in obs], workers, pool)


def groups(obs: Sequence[Observed], scope: str) -> dict[tuple[str, str], list[Observed]]:
    out: dict[tuple[str, str], list[Observed]] = {}
    for o in obs:
        out.setdefault(scope_of(o.case, scope), []).append(o)
    return dict(sorted(out.items()))


def names_for(obs: Sequence[Observed], factors: Sequence[str] | None) -> list[str]:
    """The factors to try for these runs: the named ones, else the defaults of their kinds."""
    if factors:
        return list(factors)
    return names_for_kinds({o.case.kind for o in obs})


def names_for_kinds(kinds: set[str]) -> list[str]:
    return [f for f in FACTORS if any(f in DEFAULT_FACTORS[k] for k in kinds)]


def profile_of(fits: Sequence[Fit], meta: dict[str, Any] | None = None,
               extra: dict[tuple[str, str], dict[str, Any]] | None = None) -> Profile | None:
    """A profile of the fits that fitted something (None when none did)."""
    entries = tuple(f.entry((extra or {}).get(f.scope)) for f in fits if f.factors)
    return Profile(entries=entries, meta=dict(meta or {})) if entries else None


def factors_by_kind(items: Sequence[str]) -> dict[str, list[str]]:
    """`NAME` (every kind it applies to) or `KIND:NAME` (that kind only) -> kind -> factor names."""
    out: dict[str, list[str]] = {k: [] for k in DEFAULT_FACTORS}
    for item in items:
        kind, sep, name = item.rpartition(":")
        if sep and kind not in DEFAULT_FACTORS:
            raise InputError("factors", f"'{kind}' in '{item}' is not one of {', '.join(DEFAULT_FACTORS)}")
        check_factors([name])
        for k in ([kind] if sep else list(DEFAULT_FACTORS)):
            if name in DEFAULT_FACTORS[k] and name not in out[k]:
                out[k].append(name)
    return out


def check_factors(names: Sequence[str] | None) -> list[str] | None:
    if not names:
        return None
    bad = [n for n in names if n not in FACTORS]
    if bad:
        raise InputError("factors", f"unknown factor '{bad[0]}'; allowed: {', '.join(FACTORS)}")
    if len(set(names)) != len(names):
        raise InputError("factors", "names a factor twice")
    return list(names)


def bounds_text() -> str:
    return ", ".join(f"{n} in [{bounds(n)[0]:g}, {bounds(n)[1]:g}]" for n in FACTORS)
