"""Which scope of a calibration profile a validation case falls in, and the case with factors on.

A profile's entries are scoped by (software, accelerator id). A case names its software as free
text; the serving engines' profiles (parasim.engines) already say which engine a text names, and
a training stack is known by the first word of its text.
"""

from __future__ import annotations

import re
from dataclasses import replace

from parasim.specs.profile import WILDCARD, Factors, Profile
from parasim.specs.validation_case import Case

SCOPES = ("software+gpu", "software", "gpu", "all")


def software_key(case: Case) -> str:
    """The software a case ran, as a profile scopes it: the serving engine's profile name
    (tensorrt-llm, vllm, ...), else the first word of its free text (llm-foundry, megatron-lm)."""
    if case.kind == "serving":
        from parasim.validation.category import OTHER, serving_engine

        name = serving_engine(case.software)
        if name != OTHER:
            return name
    m = re.match(r"[a-z0-9][a-z0-9._+-]*", case.software.strip().lower())
    return m.group(0) if m else WILDCARD


def scope_of(case: Case, scope: str) -> tuple[str, str]:
    sw, acc = software_key(case), case.cluster.accelerator.id
    return {"software+gpu": (sw, acc), "software": (sw, WILDCARD), "gpu": (WILDCARD, acc),
            "all": (WILDCARD, WILDCARD)}[scope]


def with_factors(case: Case, factors: Factors) -> Case:
    """The case run on its part with `factors` applied (its own hardware overrides kept)."""
    if factors.neutral:
        return case
    cl = case.cluster
    return replace(case, cluster=replace(cl, accelerator=factors.apply(cl.accelerator)))


def calibrated(case: Case, profile: Profile | None) -> Case:
    """The case with `profile`'s factors for its software and part (itself without a profile)."""
    if profile is None:
        return case
    return with_factors(case, profile.factors_for(software_key(case), case.cluster.accelerator.id))
