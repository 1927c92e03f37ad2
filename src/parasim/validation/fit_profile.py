"""`parasim calibrate`: the user's measured runs -> a profile, with the evidence for it.

Runs every case of the files at the catalog, fits each scope's factors (calibrate.fit_group,
with Gauss-Newton refinements on the real predictions), re-predicts, and, where a scope has
enough runs for it, estimates the calibrated error out of sample by K-fold cross-validation
inside the scope (stored in the profile for the error bars of later predictions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from parasim import __version__
from parasim.errors import InputError
from parasim.specs.profile import Profile
from parasim.specs.validation_case import Case, read_cases
from parasim.validation import calibrate as cal
from parasim.validation.crossval import by_kind_metric, errors_of, held_out, quantiles, rerun
from parasim.validation.run import Pool, run_files

#: folds of the in-scope cross-validation, and the fewest runs a scope needs for it (two per fold)
OOF_FOLDS = 5
OOF_MIN_RUNS = 2 * OOF_FOLDS


@dataclass
class Calibration:
    fits: list[cal.Fit]
    profile: Profile | None
    before: dict[str, Any] = field(default_factory=dict)  # "kind metric" -> |error| quantiles
    after: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"parasim_version": __version__, "before": self.before, "after": self.after,
                "fits": [{"software": f.scope[0], "accelerator": f.scope[1], "runs": len(f.runs),
                          "factors": f.factors, "notes": f.notes, "before": f.before, "after": f.after}
                         for f in self.fits],
                "skipped": self.skipped,
                "profile": self.profile.to_mapping() if self.profile else None}


def _rounded(q: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in q.items()}


def _oof(obs: Sequence[cal.Observed], names: Sequence[str], scope: str, workers: int,
         pool: Pool | None) -> dict[str, Any] | None:
    """The scope's calibrated out-of-fold |error| (K folds inside it), when it has the runs."""
    obs = [o for o in obs if o.scored]
    if len(obs) < OOF_MIN_RUNS:
        return None
    reps = rerun(held_out(obs, OOF_FOLDS, names, scope), workers, pool)
    q = quantiles(errors_of(reps))
    return {"k": OOF_FOLDS, "runs": len(obs), "p50_abs_error": round(q["median_abs_error"], 6),
            "p90_abs_error": round(q["p90_abs_error"], 6)}


def calibrate_files(paths: Sequence[str], *, factors: Sequence[str] | None = None, scope: str = "software+gpu",
                    refine: int = 2, kind: str | None = None, workers: int = 1,
                    pool: Pool | None = None) -> Calibration:
    """Fit a profile to every scored case of `paths` (InputError when none can be fitted)."""
    if scope not in cal.SCOPES:
        raise InputError("scope", f"'{scope}' is not one of {', '.join(cal.SCOPES)}")
    factors = cal.check_factors(factors)
    reports = run_files(paths, kind=kind, workers=workers, pool=pool)
    skipped = [f"{r.id}: {r.reason or r.status}" for r in reports if not (r.status == "ok" and r.errors)]
    base = {(r.file, r.id): r for r in reports if r.status == "ok" and r.errors}
    cases = [(c, str(p)) for p in paths for c in read_cases(p)
             if isinstance(c, Case) and (str(p), c.id) in base]
    if not cases:
        raise InputError("runs", f"no case of {', '.join(map(str, paths))} produced a prediction to fit against")
    names = cal.names_for([cal.Observed(c, f, base[(f, c.id)]) for c, f in cases], factors)
    obs = cal.observe(cases, names, workers=workers, pool=pool, base=base)
    fits, after, extra = [], {}, {}
    for key, g in cal.groups(obs, scope).items():
        fit, reps = cal.fit_group(g, names, key, explicit=bool(factors), refine=refine, workers=workers, pool=pool)
        fit.before = _rounded(quantiles(errors_of([o.base for o in g])))
        fit.after = _rounded(quantiles(errors_of(reps)))
        after.update({(o.file, o.case.id): r for o, r in zip(g, reps)})
        if fit.factors and (oof := _oof(g, list(fit.factors), scope, workers, pool)):
            extra[key] = {"out_of_fold": oof}
        fits.append(fit)
    meta = {"parasim_version": __version__, "fitted_on": [str(p) for p in paths], "scope": scope,
            "method": "ridge least-squares in log space toward the catalog, clipped to bounds, "
                      f"{refine} Gauss-Newton refinement(s) (docs/calibration.md)"}
    profile = cal.profile_of(fits, meta, extra)
    if profile is None:
        notes = "; ".join(n for f in fits for n in f.notes) or "no factor could be fitted"
        raise InputError("runs", f"nothing could be fitted: {notes}")
    return Calibration(fits=fits, profile=profile, skipped=skipped,
                       before={k: _rounded(v) for k, v in by_kind_metric(list(base.values())).items()},
                       after={k: _rounded(v) for k, v in by_kind_metric(list(after.values())).items()})


def profile_yaml(profile: Profile) -> str:
    """The profile as YAML, with a header saying what it is and how it was made."""
    import yaml

    head = ["# parasim calibration profile: factors on the catalog's efficiencies, fitted to measured runs",
            f"# by `parasim calibrate` (parasim {__version__}). Use it with --profile on train, serve, plan",
            "# and validate. Each entry's `fit` records the runs it was fitted on and its error before and",
            "# after (|predicted - measured| / measured); docs/calibration.md explains the factors."]
    return "\n".join(head) + "\n" + yaml.safe_dump(profile.to_mapping(), sort_keys=False, width=120)
