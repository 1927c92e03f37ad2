"""The shipped catalogs (package data): models, accelerators, node presets.

Names are looked up as people write them: case does not matter, and a model may be named by its
Hugging Face id (`meta-llama/Llama-3.1-70B-Instruct` is `llama-3.1-70b`: the organisation and the
fine-tune tokens -instruct/-chat/-hf/-base/-it are dropped, since fine-tunes keep the base shapes)
or by an alias its catalog entry lists. A name that still matches nothing is an error listing the
close matches; `--model` also accepts a path to a Hugging Face config.json or a parasim model YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cache
import re
from pathlib import Path
from typing import Any

from parasim.errors import InputError, unknown_name
from parasim.specs.accelerator import (HBM_GB_BYTES, HOST_CPUS, SCALE_UP_KINDS, AcceleratorSpec, Efficiency,
                                       memory_bound_power_fraction_of)
from parasim.specs.cluster import ClusterSpec, NodePreset
from parasim.specs.hf_config import load_model_file
from parasim.specs.model import ModelSpec
from parasim.specs.model_mapping import model_from_mapping
from parasim.specs.shipped import load_shipped
from parasim.units import GIB


#: hyphen-separated tokens that name a fine-tune or packaging of a checkpoint, not its shapes
_VARIANT_TOKENS = {"instruct", "chat", "hf", "base", "it"}


def canonical_model_name(name: str) -> str:
    """The catalog key a written model name stands for: lower case, without a Hugging Face
    organisation, a leading 'meta-' or fine-tune tokens; 'llama3' is 'llama-3'."""
    n = str(name).strip().lower().rsplit("/", 1)[-1].removeprefix("meta-")
    n = re.sub(r"^llama-?(\d)", r"llama-\1", n)
    return "-".join(t for t in n.split("-") if t not in _VARIANT_TOKENS)


def _entries() -> list[dict]:
    return load_shipped("models.yaml")["models"]


@cache
def models() -> dict[str, ModelSpec]:
    return {m["name"]: model_from_mapping({k: v for k, v in m.items() if k != "aliases"},
                                          where=f"models.yaml:{m['name']}") for m in _entries()}


@cache
def _model_index() -> dict[str, str]:
    """canonical_model_name(name or alias) -> catalog name."""
    index: dict[str, str] = {}
    for m in _entries():
        for written in (m["name"], *(m.get("aliases") or ())):
            index[canonical_model_name(written)] = m["name"]
    return index


def accelerator_from_mapping(d: dict) -> AcceleratorSpec:
    d = dict(d)
    peaks = {k: float(v) * 1e12 for k, v in (d.pop("peak_tflops") or {}).items() if v}
    eff = Efficiency(**(d.pop("efficiency", None) or {}))
    scale_up = d.get("scale_up", "nvlink")
    if scale_up not in SCALE_UP_KINDS:
        raise InputError(f"accelerators.yaml:{d.get('id')}.scale_up",
                         f"'{scale_up}' is not one of {', '.join(SCALE_UP_KINDS)}")
    host_cpu = d.get("host_cpu", "x86")
    if host_cpu not in HOST_CPUS:
        raise InputError(f"accelerators.yaml:{d.get('id')}.host_cpu",
                         f"{host_cpu!r} is not one of {', '.join(HOST_CPUS)}")
    hbm = float(d["hbm_gb"]) * HBM_GB_BYTES
    visible = d.get("memory_visible_gib")
    if visible is not None and not (isinstance(visible, (int, float)) and 0 < visible * GIB <= hbm):
        raise InputError(f"accelerators.yaml:{d.get('id')}.memory_visible_gib",
                         f"must be a number of GiB above 0 and at most hbm_gb ({d['hbm_gb']}), got {visible!r}")
    return AcceleratorSpec(
        id=d["id"], name=d["name"], vendor=d.get("vendor", ""), form_factor=d.get("form_factor", ""),
        generation=str(d.get("generation") or ""), scale_up=scale_up, host_cpu=host_cpu, link_peers=int(d.get("link_peers") or 0),
        peak_flops_per_s=peaks, hbm_bytes=hbm,
        visible_memory_bytes=None if visible is None else float(visible) * GIB,
        hbm_bw_bytes_per_s=float(d["hbm_tb_s"]) * 1e12, link_bw_bytes_per_s=float(d["link_gb_s"]) * 1e9,
        tdp_w=float(d["tdp_w"]), rated_tdp_w=float(d["tdp_w"]), idle_w=float(d["idle_w"]), price_usd_per_hour=float(d["price_usd_per_hour"]),
        efficiency=eff, sources=dict(d.get("sources") or {}),
        memory_bound_power_fraction=memory_bound_power_fraction_of(
            d.get("power"), idle_w=float(d["idle_w"]), tdp_w=float(d["tdp_w"]), where=f"accelerators.yaml:{d.get('id')}"))


@cache
def accelerators() -> dict[str, AcceleratorSpec]:
    return {a["id"]: accelerator_from_mapping(a) for a in load_shipped("accelerators.yaml")["accelerators"]}


@cache
def node_presets() -> dict[str, NodePreset]:
    return {n["id"]: NodePreset(**n) for n in load_shipped("clusters.yaml")["presets"]}


#: the running command's calibration (`use_calibration`): catalog part -> the part as the user's
#: profile says it runs; None = the catalog as shipped
_CALIBRATION: Callable[[AcceleratorSpec], AcceleratorSpec] | None = None


@contextmanager
def use_calibration(fn: Callable[[AcceleratorSpec], AcceleratorSpec] | None) -> Iterator[None]:
    """While inside, every accelerator a command resolves by name (`get_accelerator`, and the
    planners' `default_cluster`) passes through `fn` (a `--profile`'s factors, specs.profile): the
    one place a calibration meets the catalog, which itself is never changed. Worker processes
    forked inside inherit it."""
    global _CALIBRATION
    before = _CALIBRATION
    _CALIBRATION = fn
    default_cluster.cache_clear()
    try:
        yield
    finally:
        _CALIBRATION = before
        default_cluster.cache_clear()


def get_accelerator(name: str, *, field: str = "gpu") -> AcceleratorSpec:
    cat = accelerators()
    key = str(name).strip().lower().replace(" ", "-").replace("_", "-")
    if key in cat:
        return cat[key] if _CALIBRATION is None else _CALIBRATION(cat[key])
    raise unknown_name(field, name, cat, catalog="gpu")


def _is_model_path(name_or_path: str) -> bool:
    path = Path(name_or_path)
    return path.suffix.lower() in (".json", ".yaml", ".yml") or path.exists()


def get_model(name_or_path: str, *, field: str = "model") -> ModelSpec:
    """A catalog name, or a path to a Hugging Face checkpoint folder (its config.json), a
    config.json, or a parasim model YAML."""
    cat = models()
    if name_or_path in cat:
        return cat[name_or_path]
    if _is_model_path(name_or_path):
        return load_model_file(name_or_path)
    key = _model_index().get(canonical_model_name(name_or_path))
    if key is not None:
        return cat[key]
    raise unknown_name(field, name_or_path, cat, catalog="model")


def model_reference(name_or_path: str) -> str:
    """What to write into a config so that `get_model` finds the same model from any directory:
    a catalog name as given, a path made absolute."""
    if name_or_path in models() or not _is_model_path(name_or_path):
        return name_or_path
    return str(Path(name_or_path).resolve())


def cluster_for(acc: AcceleratorSpec, gpus: int, *, gpus_per_node: int | None = None,
                nic_bw_bytes_per_s_per_gpu: float | None = None) -> ClusterSpec:
    """The cluster every command builds for `gpus` of a part: its node preset (GPUs per node,
    scale-up domain, NICs), else ClusterSpec's defaults (8 per node, 400 Gb/s per GPU), with the
    caller's overrides. A smaller node keeps the preset's scale-up domain when the domain still
    contains it (an NVL72 rack of 4-GPU trays); a larger one is its own domain."""
    preset = default_node_preset(acc.id)
    c = ClusterSpec.from_preset(preset, acc, gpus) if preset else ClusterSpec(accelerator=acc, gpus=gpus)
    changes: dict[str, Any] = {}
    if gpus_per_node is not None:
        changes["gpus_per_node"] = int(gpus_per_node)
        if int(gpus_per_node) > c.scale_up_domain:
            changes["scale_up_domain"] = 0
    if nic_bw_bytes_per_s_per_gpu is not None:
        changes["nic_bw_bytes_per_s_per_gpu"] = float(nic_bw_bytes_per_s_per_gpu)
    return replace(c, **changes) if changes else c


@cache
def default_cluster(accelerator_id: str, gpus: int) -> ClusterSpec:
    """`cluster_for` a GPU id with no overrides (cached: the planners call it per candidate)."""
    return cluster_for(get_accelerator(accelerator_id), gpus)


def default_node_preset(accelerator_id: str) -> NodePreset | None:
    """The preset that ships with this accelerator, if there is one."""
    for preset in node_presets().values():
        if preset.accelerator == accelerator_id:
            return preset
    return None
