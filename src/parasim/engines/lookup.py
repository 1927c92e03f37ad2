"""Which engine profile a software text or an `--engine NAME[==VERSION]` names.

Importing this module registers every profile. A case's free-text `software` is matched against
them in `MATCH_ORDER` (NIM first, as a NIM text may name the TensorRT-LLM it runs; the generic profile
last, as it matches anything)."""

from __future__ import annotations

import re

from parasim.engines.fastgen import FastgenProfile
from parasim.engines.generic import DefaultProfile
from parasim.engines.lmdeploy import LmdeployProfile
from parasim.engines.nim import NimProfile
from parasim.engines.profile import ENGINES, EngineProfile
from parasim.engines.sglang import SglangProfile
from parasim.engines.tgi import TgiProfile
from parasim.engines.trtllm import TrtllmProfile
from parasim.engines.vllm import VllmProfile
from parasim.errors import InputError

MATCH_ORDER: tuple[type[EngineProfile], ...] = (NimProfile, TrtllmProfile, VllmProfile, SglangProfile, TgiProfile,
                                                LmdeployProfile, FastgenProfile, DefaultProfile)

#: other names an `--engine` may use for a profile
ALIASES = {"fastgen": "deepspeed-mii", "deepspeed-fastgen": "deepspeed-mii", "mii": "deepspeed-mii"}

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.\d+)?(?:\.?(?:post|dev|rc|a|b)\d*)?")


def profile_for(software: str) -> type[EngineProfile]:
    """The profile of the first engine whose pattern the software text matches (else the generic one)."""
    return next(cls for cls in MATCH_ORDER if cls.matches(software))


def named_engines() -> tuple[str, ...]:
    """The engines `--engine` accepts (every profile but the generic one)."""
    return tuple(cls.name for cls in MATCH_ORDER if cls.releases is not None)


def known_releases(cls: type[EngineProfile]) -> str:
    (a, b), (c, d) = cls.releases or ((0, 0), (0, 0))
    return f"{cls.name} {a}.{b} - {c}.{d}"


def engine_software(value: object, field: str = "engine") -> tuple[type[EngineProfile], str]:
    """(profile, software text) for `NAME[==VERSION]`, e.g. 'vllm==0.6.0' -> (VllmProfile, 'vllm 0.6.0').
    An unknown engine, a malformed version or a release outside the profile's known range is an
    InputError naming what is known; without a version the profile's current defaults apply."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(field, f"must be NAME[==VERSION], NAME one of {', '.join(named_engines())}")
    name, sep, version = value.strip().partition("==")
    name = name.strip().lower()
    name = ALIASES.get(name, name)
    if name not in named_engines():
        raise InputError(field, f"unknown engine '{name}'; allowed: {', '.join(named_engines())} "
                                "(optionally ==VERSION, e.g. vllm==0.6.0)")
    cls = ENGINES.get(name)
    if not sep:
        return cls, name
    version = version.strip()
    m = _VERSION.fullmatch(version)
    lo, hi = cls.releases or ((0, 0), (0, 0))
    if not m or not lo <= (int(m.group(1)), int(m.group(2))) <= hi:
        raise InputError(field, f"unknown {name} release '{version}'; known: {known_releases(cls)} "
                                f"(or no version: the current defaults)")
    return cls, f"{name} {version}"
