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

from parasim.errors import InputError
from parasim.specs import edge, model_limits
from parasim.specs.accelerator import HBM_GB_BYTES
from parasim.specs.catalog import get_accelerator, get_model, model_from_mapping
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec

KINDS = ("training", "serving")
#: the kind reported for a case whose own `kind` could not be read
UNREADABLE = "unreadable"
OVERRIDES = {"hbm_gb", "hbm_tb_s", "tdp_w", "bf16_tflops", "fp8_tflops", "nvlink_gb_s"}
#: the keys the format (shared/validation/README.md) gives each mapping; others are errors
HARDWARE_KEYS = ("accelerator", "gpus", "gpus_per_node", "inter_node_gbps_per_gpu", "overrides")
SERVING_PLAN_KEYS = ("tp", "pp", "replicas", "weights", "kv_cache", "scheduler", "max_batch")
WORKLOAD_KEYS = ("requests", "prompt_tokens", "output_tokens", "arrival", "trace")
FLOPS_CONVENTIONS = ("hardware", "model")
#: sanity bounds on a case (a typo, not a measured run): GPUs, simulated requests, arrivals per second
MAX_CASE_GPUS = 1_000_000
MAX_CASE_REQUESTS = 10_000_000
MAX_CASE_RATE = 1e6


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


def _cluster(hw: Any, where: str) -> ClusterSpec:
    where = f"{where}.hardware"
    _keys(hw, where, HARDWARE_KEYS)
    if hw.get("accelerator") is None:
        raise InputError(f"{where}.accelerator", "required field is missing")
    acc = get_accelerator(edge.text_value(f"{where}.accelerator", hw["accelerator"]), field=f"{where}.accelerator")
    ov = hw.get("overrides") or {}
    _keys(ov, f"{where}.overrides", OVERRIDES, what="override")
    ov = {k: edge.positive_float(f"{where}.overrides.{k}", v) for k, v in ov.items()}
    changes: dict[str, Any] = {}
    if "hbm_gb" in ov:
        changes["hbm_bytes"] = ov["hbm_gb"] * HBM_GB_BYTES
        changes["visible_memory_bytes"] = None  # the catalogued CUDA-visible total belongs to the catalog's size
    if "hbm_tb_s" in ov:
        changes["hbm_bw_bytes_per_s"] = ov["hbm_tb_s"] * 1e12
    if "tdp_w" in ov:
        changes["tdp_w"] = ov["tdp_w"]
    if "nvlink_gb_s" in ov:
        changes["link_bw_bytes_per_s"] = ov["nvlink_gb_s"] * 1e9
    peaks = dict(acc.peak_flops_per_s)
    if "bf16_tflops" in ov:
        peaks["bf16"] = peaks["fp16"] = ov["bf16_tflops"] * 1e12
    if "fp8_tflops" in ov:
        peaks["fp8"] = ov["fp8_tflops"] * 1e12
    if peaks != acc.peak_flops_per_s:
        changes["peak_flops_per_s"] = peaks
    if changes:
        acc = acc.with_(**changes)
    gpus = edge.positive_int(f"{where}.gpus", hw.get("gpus"), hi=MAX_CASE_GPUS)
    per_node = edge.positive_int(f"{where}.gpus_per_node", hw.get("gpus_per_node"), hi=MAX_CASE_GPUS, allow_none=True)
    nic_gbps = edge.positive_float(f"{where}.inter_node_gbps_per_gpu", hw.get("inter_node_gbps_per_gpu"),
                                   allow_none=True)
    from parasim.specs.catalog import cluster_for

    return cluster_for(acc, gpus, gpus_per_node=per_node or min(gpus, 8),
                       nic_bw_bytes_per_s_per_gpu=None if nic_gbps is None else nic_gbps * 1e9 / 8)


def _keys(d: Any, where: str, allowed: tuple[str, ...] | set[str], *, what: str = "field") -> None:
    """`d` is a mapping whose keys are all in `allowed`."""
    if not isinstance(d, dict):
        raise InputError(where, f"must be a mapping, got {type(d).__name__}")
    unknown = sorted(str(k) for k in d if k not in allowed)
    if unknown:
        raise InputError(f"{where}.{unknown[0]}", f"unknown {what}; allowed: {', '.join(sorted(allowed))}")


def _serving_plan(p: dict, where: str) -> dict[str, Any]:
    """The README's serving plan keys, each null or of its kind."""
    _keys(p, where, SERVING_PLAN_KEYS)
    out = dict(p)
    for k in ("tp", "pp", "replicas", "max_batch"):
        out[k] = edge.positive_int(f"{where}.{k}", p.get(k), allow_none=True, hi=MAX_CASE_GPUS if k != "max_batch"
                                   else MAX_CASE_REQUESTS)
    for k in ("weights", "kv_cache", "scheduler"):
        out[k] = edge.text_value(f"{where}.{k}", p.get(k), allow_none=True)
    return {k: v for k, v in out.items() if k in p}


def _workload(w: Any, where: str) -> dict[str, Any] | None:
    """A serving workload: a trace (optionally its first `requests`), or `requests` of fixed
    `prompt_tokens` / `output_tokens` arriving in a burst or as a seeded Poisson process."""
    if w is None:
        return None
    _keys(w, where, WORKLOAD_KEYS)
    out: dict[str, Any] = {"requests": edge.positive_int(f"{where}.requests", w.get("requests"), hi=MAX_CASE_REQUESTS,
                                                         allow_none=True)}
    if w.get("trace") is not None:
        out["trace"] = edge.text_value(f"{where}.trace", w["trace"])
        extra = [k for k in ("prompt_tokens", "output_tokens", "arrival") if w.get(k) is not None]
        if extra:
            raise InputError(f"{where}.{extra[0]}", "the trace gives each request's arrival and lengths; drop it")
        return out
    if out["requests"] is None:
        raise InputError(f"{where}.requests", "required without a trace")
    for k in ("prompt_tokens", "output_tokens"):
        out[k] = edge.positive_int(f"{where}.{k}", w.get(k), hi=model_limits.limit("context"))
    arrival = "burst" if w.get("arrival") is None else w["arrival"]
    if isinstance(arrival, dict):
        _keys(arrival, f"{where}.arrival", ("poisson_rate", "seed"))
        arrival = {"poisson_rate": edge.positive_float(f"{where}.arrival.poisson_rate", arrival.get("poisson_rate"),
                                                       hi=MAX_CASE_RATE),
                   "seed": edge.number(f"{where}.arrival.seed", arrival.get("seed", 0), integer=True, lo=0,
                                       hi=2**63 - 1)}
    elif arrival != "burst":
        raise InputError(f"{where}.arrival", f"must be 'burst' or {{poisson_rate: R, seed: S}}, got {arrival!r}")
    out["arrival"] = arrival
    return out


def _free_text(where: str, v: Any) -> str:
    """`source` / `software`: text (a bare YAML number such as a year reads as its text); "" when absent."""
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise InputError(where, f"must be text, got {v!r}")
    return str(v)


def _measured(m: Any, where: str) -> dict[str, Any]:
    """Measured values: finite numbers > 0, `flops_convention` hardware | model, `fits` a boolean."""
    if not isinstance(m, dict) or not m:
        raise InputError(where, "required: a mapping of one or more measured values")
    out: dict[str, Any] = {}
    for k, v in m.items():
        key = edge.text_value(f"{where}.{k}", k)
        if key == "flops_convention":
            out[key] = edge.text_value(f"{where}.{key}", v, choices=FLOPS_CONVENTIONS)
        elif key == "fits":
            out[key] = edge.boolean(f"{where}.{key}", v)
        else:
            out[key] = edge.number(f"{where}.{key}", v, lo=0, lo_open=True)  # as written (137 stays an int)
    if set(out) <= {"flops_convention", "fits"} and "fits" not in out:
        raise InputError(where, "holds no measured value (flops_convention only says how tflops_per_gpu counts)")
    return out


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
    if cid is None or cid == "":
        raise InputError(f"{where}.id", "required field is missing")
    if isinstance(cid, bool) or not isinstance(cid, (str, int)):
        raise InputError(f"{where}.id", f"must be a string, got {cid!r}")
    cid = str(cid)
    where = f"case {cid}"
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InputError(f"{where}.kind", f"'{kind}' is not one of {', '.join(KINDS)}")
    for key in ("model", "hardware", "plan", "measured"):
        if not isinstance(raw.get(key), dict):
            raise InputError(f"{where}.{key}", "required mapping is missing")
    source, software = (_free_text(f"{where}.{k}", raw.get(k)) for k in ("source", "software"))
    model = _model(dict(raw["model"], name=raw["model"].get("name") or cid), where)
    plan = _serving_plan(raw["plan"], f"{where}.plan") if kind == "serving" else dict(raw["plan"])
    return Case(id=cid, source=source, kind=kind, software=software, model=model,
                cluster=_cluster(raw["hardware"], where), plan=plan,
                workload=_workload(raw.get("workload"), f"{where}.workload"),
                measured=_measured(raw["measured"], f"{where}.measured"), base_dir=base_dir)


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
    data = edge.load_yaml_file(p, "FILE", what="case file")
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
