"""Several models sharing one cluster (`serve --models FILE`): a partition of the GPUs among models.

Each model has its own workload, SLOs and (optionally) placement; its requests go only to its own
replicas. The cluster's GPUs are *partitioned*: a model's replicas own their GPUs, so each model
is one `simulate` run on its share, and the cluster's figures are the sums of the parts. Two models'
weights on the same GPU (time-sharing, as Nexus's squishy bin packing or MuxServe's multiplexing
do) is not modelled: a file whose placements need more GPUs than the cluster has is refused.

    models:
      - name: chat                # optional; default: the model
        model: llama-3-8b
        rate: 12                  # Poisson requests/s; or trace: FILE (columns as --trace)
        prompt_tokens: 1000       # with rate: lengths (fixed, or lognormal means)
        output_tokens: 250
        length_dist: lognormal    # optional: fixed (default) | lognormal; length_sigma
        requests: 1000            # optional (default 1000; with a trace: the first N)
        slo_ttft: 1.0             # at least one of slo_ttft/slo_tpot/slo_itl/slo_e2e (seconds)
        slo_tpot: 0.05
        attainment: 0.9           # optional; itl_percentile too
        gpus: 4                   # optional placement: the model's GPUs, and tp/pp/replicas/scheduler
        tp: 2                     # (and token_budget, max_batch, weights, kv_dtype, as `serve`'s flags)

A model without `gpus` (and without `replicas`) gets an even share of the GPUs the placed models
leave (`tp` default 1, replicas filling the share). Model `i` (0-based, file order) draws its
arrivals with seed `seed + i`, so adding a model at the end does not change the others' requests;
`plan serve --models` uses the same workloads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parasim.errors import InputError
from parasim.serving.metrics import SLO, SLO_NAMES, slo_seconds
from parasim.serving.workload import LENGTH_DISTS, LENGTH_SIGMA, Workload
from parasim.specs import edge

#: most models in one file: each is a simulation (and a search for `plan serve`)
MAX_MODELS = 64
DEFAULT_REQUESTS = 1000
WORKLOAD_KEYS = ("rate", "requests", "prompt_tokens", "output_tokens", "length_dist", "length_sigma", "trace")
SLO_KEYS = ("slo_ttft", "slo_tpot", "slo_itl", "slo_e2e", "attainment", "itl_percentile")
PLACEMENT_KEYS = ("gpus", "tp", "pp", "replicas", "scheduler", "token_budget", "max_batch", "weights", "kv_dtype")
ENTRY_KEYS = ("name", "model", *WORKLOAD_KEYS, *SLO_KEYS, *PLACEMENT_KEYS)
#: summary keys summed over the models into the cluster's totals
SUMMED = ("gpus", "requests", "completed", "dropped", "input_tokens", "output_tokens", "gpu_hours", "energy_j",
          "cost_usd", "requests_per_s", "output_tokens_per_s")


@dataclass(frozen=True)
class ModelEntry:
    """One model of a multi-model file, checked: its workload, SLO and the placement keys given."""

    name: str
    model: str  # catalog name or model file (relative paths resolved against the file)
    workload: dict[str, Any]
    slo: SLO
    placement: dict[str, Any]
    where: str  # "file.yaml:models[i]", for messages

    @property
    def placed(self) -> bool:
        return "gpus" in self.placement or "replicas" in self.placement


# --- reading ------------------------------------------------------------------------------------------
def read_models(path: str | Path) -> tuple[ModelEntry, ...]:
    """The models of a YAML/JSON file; every bad value is an InputError naming its place."""
    p = Path(path)
    data = edge.load_yaml_file(p, "models", what="models file")
    where = p.name
    if not isinstance(data, dict) or set(data) != {"models"}:
        extra = sorted(set(data) - {"models"}) if isinstance(data, dict) else []
        raise InputError(f"{where}:{extra[0]}" if extra else where,
                         "unknown key; allowed: models" if extra else "a models file is a mapping with one key, models")
    raw = data["models"]
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{where}:models", "must be a non-empty list of models")
    if len(raw) > MAX_MODELS:
        raise InputError(f"{where}:models", f"{len(raw)} models; at most {MAX_MODELS}")
    out = [_entry(d, f"{where}:models[{i}]", p.parent) for i, d in enumerate(raw)]
    names = [e.name for e in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise InputError(f"{where}:models", f"two models are named {dup!r}; give each a distinct `name`")
    total = sum(e.workload["requests"] for e in out)
    if total > edge.cap("requests"):
        raise InputError(f"{where}:models", f"{total:,} requests in all; at most {edge.cap('requests'):,}; "
                                            f"{edge.cap_hint('requests')}")
    return tuple(out)


def _entry(d: Any, where: str, base: Path) -> ModelEntry:
    from parasim.specs.catalog import get_model

    if not isinstance(d, dict):
        raise InputError(where, "must be a mapping with model, a workload (rate and lengths, or trace) and SLOs")
    unknown = sorted(str(k) for k in d if k not in ENTRY_KEYS)
    if unknown:
        raise InputError(f"{where}.{unknown[0]}", f"unknown key; allowed: {', '.join(ENTRY_KEYS)}")
    model = edge.text_value(f"{where}.model", d.get("model"))
    if not Path(model).is_absolute() and (model.endswith((".json", ".yaml", ".yml")) or (base / model).exists()):
        model = str(base / model)  # a model file or checkpoint folder, relative to the models file
    spec = get_model(model, field=f"{where}.model")
    name = edge.text_value(f"{where}.name", d.get("name", spec.name))
    return ModelEntry(name=name, model=model, workload=_workload(d, where, base), slo=_slo(d, where),
                      placement=_placement(d, where), where=where)


def _workload(d: dict, where: str, base: Path) -> dict[str, Any]:
    cap = edge.cap("requests")
    n = edge.positive_int(f"{where}.requests", d.get("requests", DEFAULT_REQUESTS), hi=cap, hint=edge.cap_hint("requests"))
    w: dict[str, Any] = {"requests": n, "requests_given": "requests" in d}
    if d.get("trace") is not None:
        clash = next((k for k in ("rate", "prompt_tokens", "output_tokens", "length_dist", "length_sigma") if k in d), None)
        if clash:
            raise InputError(f"{where}.{clash}", "a trace sets the arrivals and lengths; drop it or the trace")
        t = Path(edge.text_value(f"{where}.trace", d["trace"]))
        return w | {"trace": str(t if t.is_absolute() else base / t)}
    if d.get("rate") is None:
        raise InputError(f"{where}.rate", "required: give rate (requests/s) with prompt_tokens and output_tokens, or trace")
    w["rate"] = edge.number(f"{where}.rate", d["rate"], lo=0, lo_open=True, hi=1e9)
    for k in ("prompt_tokens", "output_tokens"):
        w[k] = edge.positive_int(f"{where}.{k}", d.get(k), hi=edge.cap("tokens"))
    w["length_dist"] = edge.text_value(f"{where}.length_dist", d.get("length_dist", "fixed"), choices=LENGTH_DISTS)
    w["length_sigma"] = edge.number(f"{where}.length_sigma", d.get("length_sigma", LENGTH_SIGMA), lo=0, lo_open=True, hi=10)
    return w


def _slo(d: dict, where: str) -> SLO:
    """The model's SLO, checked as `serve` checks its flags; at least one is required."""
    vals: dict[str, float | None] = {}
    for n in SLO_NAMES:
        try:
            vals[n] = slo_seconds(n, d.get(f"slo_{n}"))
        except InputError as e:
            raise InputError(f"{where}.slo_{n}", e.message) from None
    if all(v is None for v in vals.values()):
        raise InputError(f"{where}.slo_ttft", "each model needs its SLOs: give at least one of slo_ttft, slo_tpot, "
                                              "slo_itl, slo_e2e (seconds)")
    att = edge.number(f"{where}.attainment", d.get("attainment", 0.9), lo=0, lo_open=True, hi=1)
    pct = edge.number(f"{where}.itl_percentile", d.get("itl_percentile", 99.0), lo=0, lo_open=True, hi=100)
    if "itl_percentile" in d and vals["itl"] is None:
        raise InputError(f"{where}.itl_percentile", "applies to the ITL SLO only: give slo_itl too (or drop it)")
    return SLO(**{f"{n}_s": v for n, v in vals.items()}, itl_percentile=float(pct), attainment=float(att))


def _placement(d: dict, where: str) -> dict[str, Any]:
    from parasim.serving.schedulers import SCHEDULERS

    out: dict[str, Any] = {}
    for k in ("gpus", "tp", "pp", "replicas"):
        if d.get(k) is not None:
            out[k] = edge.positive_int(f"{where}.{k}", d[k], hi=edge.cap("replicas"))
    for k, cap in (("token_budget", "tokens"), ("max_batch", "batch")):
        if d.get(k) is not None:
            out[k] = edge.positive_int(f"{where}.{k}", d[k], hi=edge.cap(cap))
    for k in ("weights", "kv_dtype"):  # checked against the model and GPU by the plan, when run
        if d.get(k) is not None:
            out[k] = edge.text_value(f"{where}.{k}", d[k])
    if d.get("scheduler") is not None:
        out["scheduler"] = edge.text_value(f"{where}.scheduler", d["scheduler"])
        SCHEDULERS.get(out["scheduler"], field=f"{where}.scheduler")
        if SCHEDULERS.get(out["scheduler"]).disaggregated:
            raise InputError(f"{where}.scheduler", "a disaggregated model in a models file is not supported; "
                                                   "run it alone with `parasim serve --scheduler disagg`")
    return out


# --- placing ------------------------------------------------------------------------------------------
def place(entries: tuple[ModelEntry, ...], cluster_gpus: int) -> list[dict[str, Any]]:
    """Each model's GPUs and plan keys (tp, pp, replicas, scheduler): the placements given, and an even
    split of the GPUs they leave for the others. Refuses a placement that needs more than the cluster."""
    fixed: list[dict[str, Any] | None] = []
    for e in entries:
        p = e.placement
        tp, pp = p.get("tp", 1), p.get("pp", 1)
        if not e.placed:
            fixed.append(None)
            continue
        gpus = p.get("gpus", tp * pp * p.get("replicas", 1))
        reps = p.get("replicas", gpus // (tp * pp))
        if reps < 1 or tp * pp * reps != gpus:
            raise InputError(f"{e.where}.gpus", f"{gpus} GPUs is not tp*pp*replicas = {tp}*{pp}*{reps}: a model's "
                                                "GPUs are its replicas'")
        fixed.append({**p, "gpus": gpus, "tp": tp, "pp": pp, "replicas": reps})
    used = sum(f["gpus"] for f in fixed if f)
    if used > cluster_gpus:
        raise InputError(f"{entries[0].where.split(':')[0]}:models",
                         f"the placements use {used} GPUs, more than --gpus {cluster_gpus}; models share the cluster "
                         "by partition only (several models' weights on one GPU are not modelled)")
    free = [e for e, f in zip(entries, fixed) if f is None]
    share = (cluster_gpus - used) // len(free) if free else 0
    out = []
    for e, f in zip(entries, fixed):
        if f is None:
            tp, pp = e.placement.get("tp", 1), e.placement.get("pp", 1)
            if share < tp * pp:
                raise InputError(f"{e.where}.gpus", f"the even split leaves it {share} GPU(s), fewer than tp*pp = "
                                                    f"{tp * pp}: give --gpus more, or place the models (gpus, tp)")
            reps = share // (tp * pp)  # what a share leaves over tp*pp stays idle
            f = {**e.placement, "gpus": tp * pp * reps, "tp": tp, "pp": pp, "replicas": reps}
        out.append(f)
    return out


# --- running ------------------------------------------------------------------------------------------
def model_workload(e: ModelEntry, seed: int, max_seq_len: int) -> Workload:
    """The model's requests: its trace, or Poisson arrivals drawn with `seed` (plan serve's generator)."""
    from parasim.serving.workload import generate, read_trace

    w = e.workload
    try:
        if "trace" in w:
            return read_trace(w["trace"], limit=w["requests"] if w["requests_given"] else None, max_total_tokens=max_seq_len)
        return generate(requests=w["requests"], rate=w["rate"], seed=seed, prompt_tokens=w["prompt_tokens"],
                        output_tokens=w["output_tokens"], length_dist=w["length_dist"], length_sigma=w["length_sigma"],
                        max_total_tokens=max_seq_len if w["length_dist"] == "lognormal" else None)
    except InputError as err:
        raise InputError(f"{e.where}.{err.field}", err.message) from None


def simulate_models(entries: tuple[ModelEntry, ...], accelerator: Any, cluster_gpus: int, *, seed: int = 0,
                    gpus_per_node: int | None = None) -> dict[str, Any]:
    """Run every model on its partition; the merged result (`summary.models`, the cluster totals)."""
    from parasim.serving.plan import ServingPlan
    from parasim.serving.simulate import simulate
    from parasim.specs.catalog import cluster_for, get_model

    wall0 = time.perf_counter()
    placement = place(entries, cluster_gpus)
    models: dict[str, dict[str, Any]] = {}
    for i, (e, p) in enumerate(zip(entries, placement)):
        spec = get_model(e.model, field=f"{e.where}.model")
        plan_keys = {k: v for k, v in p.items() if k != "gpus"}
        try:
            plan = ServingPlan.from_mapping(plan_keys)
            cluster = cluster_for(accelerator, p["gpus"], gpus_per_node=gpus_per_node)
            res = simulate(spec, cluster, plan, model_workload(e, seed + i, spec.max_seq_len), slo=e.slo, seed=seed + i)
        except InputError as err:
            raise InputError(f"{e.where}.{err.field}", err.message) from None
        models[e.name] = model_part(e, p, res)
    return {"command": "serve", "feasible": all(m["feasible"] for m in models.values()),
            "inputs": {"gpu": accelerator.id, "cluster_gpus": cluster_gpus, "seed": seed,
                       "models": [e.name for e in entries],
                       "notes": ["models share the cluster by partition: each model's replicas own their GPUs"]},
            "summary": {"models": models, **totals(models, cluster_gpus)},
            "sim_wall_s": time.perf_counter() - wall0}


def model_part(e: ModelEntry, placement: dict[str, Any], res: Any) -> dict[str, Any]:
    """One model's row of `summary.models`: its placement, workload, SLO and run summary."""
    s = res.summary
    return {**s, "model": res.inputs["model"], "gpus": placement["gpus"],
            "plan": {k: placement[k] for k in ("tp", "pp", "replicas")} | {"scheduler": res.inputs["plan"]["scheduler"]},
            "feasible": res.feasible, "reason": res.reason, "message": res.message,
            "workload": res.inputs["workload"], "slo": e.slo.to_dict()}


def totals(models: dict[str, dict[str, Any]], cluster_gpus: int) -> dict[str, Any]:
    """The cluster's figures: the sums of the models' (each partition held for its own run; the
    partitions serve at once, so their rates add up), the GPUs no model was given, and how many
    models meet their SLOs."""
    t: dict[str, Any] = {k: sum(m[k] or 0 for m in models.values()) for k in SUMMED}
    t["gpus"] = sum(m["gpus"] for m in models.values())
    t["idle_gpus"] = cluster_gpus - t["gpus"]
    t["makespan_s"] = max((m["makespan_s"] or 0.0) for m in models.values())
    met = [bool(m["slo_met"]) for m in models.values()]
    t["models_meeting_slo"] = sum(met)
    t["slo_met_all"] = all(met)
    t["energy_j_per_token"] = t["energy_j"] / t["output_tokens"] if t["output_tokens"] else None
    for k in ("energy_idle_j", "energy_compute_bound_j", "energy_memory_bound_j"):  # null on a part without the split
        vals = [m.get(k) for m in models.values()]
        t[k] = sum(vals) if all(v is not None for v in vals) else None
    t["cost_usd_per_m_tokens"] = t["cost_usd"] / t["output_tokens"] * 1e6 if t["output_tokens"] else None
    return t
