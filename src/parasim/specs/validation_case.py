"""The validation case format of shared/validation/README.md, read exactly as specified.

A case file is `{cases: [...]}`; each case names its model (explicit architecture or
`{catalog: NAME}`), hardware (accelerator id, GPU count, GPUs per node, optional NIC speed and
overrides), a training or serving plan, an optional serving workload, and the measured values.
Plans and workloads stay plain mappings here; the training and serving layers turn them into
their own plan objects (and say which defaults they chose for null fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from parasim.errors import InputError
from parasim.specs.accelerator import HBM_GB_BYTES
from parasim.specs.catalog import get_accelerator, get_model, model_from_mapping
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec

KINDS = ("training", "serving")
#: the kind reported for a case whose own `kind` could not be read
UNREADABLE = "unreadable"
OVERRIDES = {"hbm_gb", "hbm_tb_s", "tdp_w", "bf16_tflops", "fp8_tflops", "nvlink_gb_s"}


@dataclass(frozen=True, kw_only=True)
class Case:
    id: str
    source: str
    kind: str
    software: str
    model: ModelSpec
    cluster: ClusterSpec
    plan: dict[str, Any]
    workload: dict[str, Any] | None
    measured: dict[str, Any]
    base_dir: Path = field(default=Path("."), compare=False)


@dataclass(kw_only=True)
class CaseResult:
    """What a simulator predicted for one case. status: ok | infeasible | skipped."""

    status: str
    predicted: dict[str, float] = field(default_factory=dict)
    choices: list[str] = field(default_factory=list)  # defaults chosen for null fields, printed
    reason: str = ""


def _cluster(hw: dict, where: str) -> ClusterSpec:
    if not isinstance(hw, dict) or "accelerator" not in hw:
        raise InputError(f"{where}.hardware.accelerator", "required field is missing")
    acc = get_accelerator(str(hw["accelerator"]), field=f"{where}.hardware.accelerator")
    ov = hw.get("overrides") or {}
    bad = set(ov) - OVERRIDES
    if bad:
        raise InputError(f"{where}.hardware.overrides.{sorted(bad)[0]}", f"unknown override; allowed: {', '.join(sorted(OVERRIDES))}")
    changes: dict[str, Any] = {}
    if "hbm_gb" in ov:
        changes["hbm_bytes"] = float(ov["hbm_gb"]) * HBM_GB_BYTES
    if "hbm_tb_s" in ov:
        changes["hbm_bw_bytes_per_s"] = float(ov["hbm_tb_s"]) * 1e12
    if "tdp_w" in ov:
        changes["tdp_w"] = float(ov["tdp_w"])
    if "nvlink_gb_s" in ov:
        changes["link_bw_bytes_per_s"] = float(ov["nvlink_gb_s"]) * 1e9
    peaks = dict(acc.peak_flops_per_s)
    if "bf16_tflops" in ov:
        peaks["bf16"] = peaks["fp16"] = float(ov["bf16_tflops"]) * 1e12
    if "fp8_tflops" in ov:
        peaks["fp8"] = float(ov["fp8_tflops"]) * 1e12
    if peaks != acc.peak_flops_per_s:
        changes["peak_flops_per_s"] = peaks
    if changes:
        acc = acc.with_(**changes)
    gpus = hw.get("gpus")
    if not isinstance(gpus, int) or gpus <= 0:
        raise InputError(f"{where}.hardware.gpus", f"must be a positive integer, got {gpus!r}")
    from parasim.specs.catalog import cluster_for

    nic = float(hw["inter_node_gbps_per_gpu"]) * 1e9 / 8 if hw.get("inter_node_gbps_per_gpu") else None
    return cluster_for(acc, gpus, gpus_per_node=int(hw.get("gpus_per_node") or min(gpus, 8)),
                       nic_bw_bytes_per_s_per_gpu=nic)


def _model(m: Any, where: str) -> ModelSpec:
    if not isinstance(m, dict):
        raise InputError(f"{where}.model", "must be a mapping (explicit architecture or {catalog: NAME})")
    if "catalog" in m:
        return get_model(str(m["catalog"]), field=f"{where}.model.catalog")
    d = dict(m)
    d.setdefault("name", where.split("[")[-1].rstrip("]") if "[" in where else "case-model")
    return model_from_mapping(d, where=f"{where}.model")


def parse_case(raw: Any, *, index: int, base_dir: Path) -> Case:
    where = f"cases[{index}]"
    if not isinstance(raw, dict):
        raise InputError(where, "each case must be a mapping")
    cid = raw.get("id")
    if not cid:
        raise InputError(f"{where}.id", "required field is missing")
    where = f"case {cid}"
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InputError(f"{where}.kind", f"'{kind}' is not one of {', '.join(KINDS)}")
    for key in ("model", "hardware", "plan", "measured"):
        if not isinstance(raw.get(key), dict):
            raise InputError(f"{where}.{key}", "required mapping is missing")
    model = _model(dict(raw["model"], name=raw["model"].get("name") or cid), where)
    return Case(id=str(cid), source=str(raw.get("source", "")), kind=kind, software=str(raw.get("software", "")),
                model=model, cluster=_cluster(raw["hardware"], where), plan=dict(raw["plan"]),
                workload=dict(raw["workload"]) if isinstance(raw.get("workload"), dict) else None,
                measured=dict(raw["measured"]), base_dir=base_dir)


@dataclass(frozen=True)
class UnreadableCase:
    """A case of a file that could not be read: its id and kind as far as they were given."""

    id: str
    kind: str  # the case's kind, or UNREADABLE
    error: InputError


def load_cases(path: str | Path) -> list[Case]:
    """Every case of a case file; the first unreadable case raises its InputError."""
    out = []
    for item in read_cases(path):
        if isinstance(item, UnreadableCase):
            raise item.error
        out.append(item)
    return out


def read_cases(path: str | Path) -> list[Case | UnreadableCase]:
    """Every case of a case file in file order, a case that cannot be read (unknown catalog name,
    bad field) standing as an UnreadableCase, so a validation run can report it and go on. A file
    that is not a case file at all raises."""
    p = Path(path)
    if not p.is_file():
        raise InputError("FILE", f"no such case file: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise InputError(f"{p.name}{line}", f"malformed YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise InputError(p.name, "a case file is a mapping with one key, `cases`, holding a list")
    out: list[Case | UnreadableCase] = []
    for i, c in enumerate(data["cases"]):
        try:
            out.append(parse_case(c, index=i, base_dir=p.parent))
        except InputError as e:
            raw = c if isinstance(c, dict) else {}
            kind = raw.get("kind") if raw.get("kind") in KINDS else UNREADABLE
            out.append(UnreadableCase(id=str(raw.get("id") or f"cases[{i}]"), kind=kind, error=e))
    return out
