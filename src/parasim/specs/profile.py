"""A calibration profile: the user's own correction factors, scoped by software and GPU.

The shipped catalog states what a part achieves in published measurements; a profile says how
far the user's own stack sits from it, as a few named factors fitted on the user's runs
(`parasim calibrate`). It is read at the edge like every other file (each value bounded, errors
name the field) and applied to an accelerator when a command resolves it: the catalog itself is
never changed. docs/calibration.md describes the factors, their bounds and how they are fitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from parasim.errors import InputError
from parasim.specs import edge
from parasim.specs.accelerator import AcceleratorSpec

#: the one version of the profile file format this reader knows
FORMAT = 1
#: multipliers on catalog efficiencies are kept within these bounds: a factor outside them says the
#: run measured something else (another precision, a throttled part), not an efficiency
MULTIPLIER_BOUNDS = (0.3, 1.5)
#: an additive per-iteration host overhead (seconds): a little below the engine's own (the engine
#: constant may be too pessimistic) up to 50 ms (a Python server far slower than any engine profile)
OVERHEAD_BOUNDS_S = (-2e-3, 5e-2)
#: factor name -> the Efficiency fields it multiplies (an additive factor has none)
MULTIPLIERS: dict[str, tuple[str, ...]] = {
    "gemm_efficiency": ("gemm", "gemm_fp8", "gemm_fp4"),
    "attention_efficiency": ("attention",),
    "memory_efficiency": ("memory",),
    "comm_efficiency": ("nvlink_busbw", "network_busbw"),
}
ADDITIVE = ("iteration_overhead_s",)
FACTORS = (*MULTIPLIERS, *ADDITIVE)
WILDCARD = "*"


def bounds(name: str) -> tuple[float, float]:
    return OVERHEAD_BOUNDS_S if name in ADDITIVE else MULTIPLIER_BOUNDS


def neutral(name: str) -> float:
    """The value that leaves the catalog as it is."""
    return 0.0 if name in ADDITIVE else 1.0


@dataclass(frozen=True)
class Factors:
    """Resolved factors for one (software, accelerator); a missing name is neutral."""

    values: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float:
        return self.values.get(name, neutral(name))

    @property
    def neutral(self) -> bool:
        return all(v == neutral(k) for k, v in self.values.items())

    def apply(self, acc: AcceleratorSpec) -> AcceleratorSpec:
        """`acc` with its efficiencies multiplied (each capped at 1: no factor makes a part beat
        its peak) and the additive host overhead carried on its efficiency."""
        if self.neutral:
            return acc
        eff, changes = acc.efficiency, {}
        for name, fields in MULTIPLIERS.items():
            f = self.get(name)
            for attr in fields:
                base = getattr(eff, attr)
                if f != 1.0 and base is not None:
                    changes[attr] = min(1.0, base * f)
        extra = self.get("iteration_overhead_s")
        if extra:
            changes["calibrated_iteration_overhead_s"] = extra
        return acc.with_(efficiency=replace(eff, **changes))


@dataclass(frozen=True)
class Entry:
    """The factors for one scope; `fit` records how they were obtained (runs, residual error)."""

    software: str
    accelerator: str
    factors: dict[str, float]
    fit: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"software": self.software, "accelerator": self.accelerator,
                               "factors": {k: self.factors[k] for k in FACTORS if k in self.factors}}
        if self.fit:
            out["fit"] = self.fit
        return out


@dataclass(frozen=True)
class Profile:
    entries: tuple[Entry, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def softwares(self) -> list[str]:
        return sorted({e.software for e in self.entries if e.software != WILDCARD})

    def factors_for(self, software: str | None, accelerator: str) -> Factors:
        """The factors for a run of `software` on `accelerator`: every matching entry, the more
        specific overriding the less (`*`/`*`, then `*`/GPU, then software/`*`, then both), per
        factor. With `software` None (a command that does not name it) a profile for a single
        software is taken as that software's; one for several is ambiguous and an error."""
        if software is None:
            names = self.softwares()
            if len(names) > 1 and any(e.accelerator in (WILDCARD, accelerator) for e in self.entries
                                      if e.software != WILDCARD):
                raise InputError("profile", f"holds factors for several software ({', '.join(names)}) and this "
                                            "command does not say which ran (serve: --engine); split the profile")
            software = names[0] if names else WILDCARD
        out: dict[str, float] = {}
        rank = lambda e: (e.software != WILDCARD, e.accelerator != WILDCARD)  # noqa: E731
        for e in sorted(self.entries, key=rank):
            if e.software in (WILDCARD, software) and e.accelerator in (WILDCARD, accelerator):
                out.update(e.factors)
        return Factors(out)

    def out_of_fold(self, software: str | None, accelerator: str) -> dict[str, Any] | None:
        """The calibrated out-of-fold |error| `calibrate` recorded for the most specific entry that
        applies to `software` on `accelerator` (None when that entry's scope had too few runs)."""
        software = software if software is not None else (self.softwares() or [WILDCARD])[0]
        rank = lambda e: (e.software != WILDCARD, e.accelerator != WILDCARD)  # noqa: E731
        for e in sorted(self.entries, key=rank, reverse=True):
            if e.software in (WILDCARD, software) and e.accelerator in (WILDCARD, accelerator):
                oof = e.fit.get("out_of_fold") if isinstance(e.fit, dict) else None
                return oof if isinstance(oof, dict) else None
        return None

    def calibration(self, software: str | None):
        """catalog part -> the part with this profile's factors for `software` on it (for
        specs.catalog.use_calibration)."""
        return lambda acc: self.factors_for(software, acc.id).apply(acc)

    def to_mapping(self) -> dict[str, Any]:
        return {"parasim_profile": FORMAT, **self.meta, "entries": [e.to_mapping() for e in self.entries]}


def factor_value(where: str, name: str, value: Any) -> float:
    lo, hi = bounds(name)
    return edge.finite_float(f"{where}.{name}", value, lo=lo, hi=hi)


def _entry(raw: Any, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise InputError(where, "must be a mapping (software, accelerator, factors)")
    unknown = sorted(str(k) for k in raw if k not in ("software", "accelerator", "factors", "fit"))
    if unknown:
        raise InputError(f"{where}.{unknown[0]}", "unknown key; allowed: accelerator, factors, fit, software")
    software = edge.text_value(f"{where}.software", raw.get("software", WILDCARD)).strip().lower()
    acc = edge.text_value(f"{where}.accelerator", raw.get("accelerator", WILDCARD)).strip().lower()
    if acc != WILDCARD:
        from parasim.specs.catalog import get_accelerator

        acc = get_accelerator(acc, field=f"{where}.accelerator").id
    facs = raw.get("factors")
    if not isinstance(facs, dict) or not facs:
        raise InputError(f"{where}.factors", f"required: a mapping of one or more of {', '.join(FACTORS)}")
    values: dict[str, float] = {}
    for k, v in facs.items():
        if k not in FACTORS:
            raise InputError(f"{where}.factors.{k}", f"unknown factor; allowed: {', '.join(FACTORS)}")
        values[k] = factor_value(f"{where}.factors", k, v)
    fit = raw.get("fit") or {}
    if not isinstance(fit, dict):
        raise InputError(f"{where}.fit", "must be a mapping (what the fit recorded)")
    return Entry(software=software, accelerator=acc, factors=values, fit=fit)


#: most entries a profile may hold (one per software and GPU is a few dozen)
MAX_ENTRIES = 10_000


def profile_from_mapping(data: Any, where: str) -> Profile:
    if not isinstance(data, dict) or "entries" not in data:
        raise InputError(where, "a profile is a mapping with `parasim_profile: 1` and `entries` (parasim calibrate "
                                "writes one)")
    fmt = data.get("parasim_profile")
    if fmt != FORMAT:
        raise InputError(f"{where}: parasim_profile", f"must be {FORMAT} (the format this parasim reads), got {fmt!r}")
    raw = data["entries"]
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{where}: entries", "must be a non-empty list")
    if len(raw) > MAX_ENTRIES:
        raise InputError(f"{where}: entries", f"{len(raw):,} entries; at most {MAX_ENTRIES:,} are read")
    entries = tuple(_entry(e, f"{where}: entries[{i}]") for i, e in enumerate(raw))
    seen: set[tuple[str, str]] = set()
    for i, e in enumerate(entries):
        if (e.software, e.accelerator) in seen:
            raise InputError(f"{where}: entries[{i}]", f"a second entry for {e.software} / {e.accelerator}")
        seen.add((e.software, e.accelerator))
    meta = {k: v for k, v in data.items() if k not in ("parasim_profile", "entries")}
    return Profile(entries=entries, meta=meta)


def load_profile(path: str | Path) -> Profile:
    """A profile file (YAML), every value checked; errors name the file and the field."""
    p = Path(path)
    return profile_from_mapping(edge.load_yaml_file(p, "profile", what="profile"), p.name)


def log_bounds(name: str) -> tuple[float, float]:
    """Bounds in the fit's coordinates: log of a multiplier, seconds for an additive factor."""
    lo, hi = bounds(name)
    return (lo, hi) if name in ADDITIVE else (math.log(lo), math.log(hi))
