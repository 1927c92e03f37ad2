"""`plan serve --models FILE`: the fewest GPUs on which every model meets its own SLOs.

Nexus (Shen et al., SOSP'19; its global scheduler) places models under per-model latency SLOs in two steps:
a model whose load saturates whole GPUs gets the fewest GPUs that serve it within its SLO at its
largest SLO-meeting batch, and the residual loads are "squishy bin packed" together onto shared
GPUs. parasim partitions GPUs (serving/multimodel.py: no two models' weights on one GPU), so the
first step is the whole placement: each model gets the smallest plan that meets its SLO at its
load, found by `plan serve`'s own search (search/plan_serve.py, objective `gpus`: fewest GPUs,
then the better plan), and the cluster needs the sum. The residual packing, and AlpaServe's or
MuxServe's sharing of one GPU's memory and compute among models, are not modelled: a model's
residual load is rounded up to a whole plan.

The naive placement it is compared with is an even split: every model gets the same share, so
every model meets its SLO only when the share is at least the largest model's need, k x max(n_i)
GPUs for k models where the SLO-aware placement needs sum(n_i). GPUs the placement leaves within
`--max-gpus` are reported as spare, not handed out.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from parasim.errors import InputError
from parasim.search.plan_serve import PLAN_FIELDS, ServeSearch, run_search
from parasim.serving.multimodel import ModelEntry, totals
from parasim.serving.schedulers import SCHEDULERS


def model_search(e: ModelEntry, index: int, base: ServeSearch) -> ServeSearch:
    """`plan serve`'s request for one model: its workload (seed + index, as `serve --models`
    draws it), its SLO, objective `gpus`, and the space narrowed by the placement keys it gives
    (`gpus` caps it; the others are the only value searched)."""
    if "replicas" in e.placement:
        raise InputError(f"{e.where}.replicas", "the planner chooses the replicas; give gpus to cap the model's "
                                                "share (or run the placement with `parasim serve --models`)")
    w, slo, p = e.workload, e.slo, e.placement
    kw: dict[str, Any] = {f"slo_{n}": getattr(slo, f"{n}_s") for n in ("ttft", "tpot", "itl", "e2e")}
    kw |= {"itl_percentile": slo.itl_percentile, "attainment": slo.attainment}
    if "trace" in w:
        kw |= {"trace": w["trace"], "requests": w["requests"], "extra": {"requests_given": w["requests_given"]}}
    else:
        kw |= {k: w[k] for k in ("rate", "requests", "prompt_tokens", "output_tokens", "length_dist", "length_sigma")}
    space = {"tp": (p["tp"],) if "tp" in p else base.tp, "pp": (p["pp"],) if "pp" in p else base.pp,
             "schedulers": (p["scheduler"],) if "scheduler" in p else
             tuple(s for s in base.schedulers if not SCHEDULERS.get(s).disaggregated),
             "token_budgets": (p["token_budget"],) if "token_budget" in p else base.token_budgets,
             "max_batches": (p["max_batch"],) if "max_batch" in p else base.max_batches}
    if "weights" in p or "kv_dtype" in p:
        space["precisions"] = tuple((p.get("weights", w), p.get("kv_dtype", kv)) for w, kv in base.precisions)
    cap = min(p.get("gpus", base.max_gpus), base.max_gpus)
    return replace(base, model=e.model, max_gpus=cap, seed=base.seed + index, objective="gpus", **space, **kw)


def plan_models(entries: tuple[ModelEntry, ...], base: ServeSearch, progress=None) -> dict[str, Any]:
    """Each model's fewest-GPU plan, the placement's totals, the even split it is compared with, and
    `feasible`/`why` (a model that cannot meet its SLO within its cap, or a sum over `--max-gpus`)."""
    t0 = time.perf_counter()
    rows: dict[str, dict[str, Any]] = {}
    why: list[str] = []
    searched = 0
    for i, e in enumerate(entries):
        req = model_search(e, i, base)
        try:
            out = run_search(req, progress)
        except InputError as err:
            raise InputError(f"{e.where}.{err.field}", err.message) from None
        searched += out["evaluated"]
        best = out["best"]
        if best is None:
            pruned = ", ".join(f"{k} {v}" for k, v in out["pruned"].items() if v) or "nothing to try"
            why.append(f"{e.name} ({out['model']}) cannot meet its SLO on at most {req.max_gpus} x {req.gpu[0]} "
                       f"(plans pruned or missing: {pruned})")
            rows[e.name] = {"model": out["model"], "gpus": None, "feasible": False, "max_gpus": req.max_gpus,
                            "pruned": out["pruned"], "evaluated": out["evaluated"]}
            continue
        s = best["metrics"]["summary"]
        rows[e.name] = {**s, "model": out["model"], "gpus": best["gpus"], "feasible": True, "max_gpus": req.max_gpus,
                        "plan": {k: best[k] for k in PLAN_FIELDS if best.get(k) is not None},
                        "slo": best["metrics"]["inputs"]["slo"], "slo_met": best["meets_slo"],
                        "evaluated": out["evaluated"]}
    placed = {n: r for n, r in rows.items() if r["feasible"]}
    need = sum(r["gpus"] for r in placed.values())
    if not why and need > base.max_gpus:
        parts = ", ".join(f"{n} {r['gpus']}" for n, r in placed.items())
        why.append(f"the models need {need} GPUs in all ({parts}), "
                   f"more than --max-gpus {base.max_gpus}")
    result: dict[str, Any] = {"command": "plan serve", "gpu": base.gpu[0], "max_gpus": base.max_gpus,
                              "feasible": not why, "why": why, "models": rows}
    if not why:
        result["totals"] = totals(placed, base.max_gpus) | {"spare_gpus": base.max_gpus - need}
        result["even_split"] = even_split(placed, base.max_gpus)
    result["evaluated"] = searched
    result["search_wall_s"] = time.perf_counter() - t0
    return result


def even_split(rows: dict[str, dict[str, Any]], max_gpus: int) -> dict[str, Any]:
    """The even split of `max_gpus` compared with the placement: each model's share, which models
    it leaves short of their fewest-GPU plan, and the GPUs an even split needs for all to fit."""
    k = len(rows)
    share = max_gpus // k
    return {"gpus_per_model": share, "models_short": [n for n, r in rows.items() if r["gpus"] > share],
            "gpus_needed": k * max(r["gpus"] for r in rows.values())}


def emit_models(entries: tuple[ModelEntry, ...], result: dict[str, Any]) -> dict[str, Any]:
    """The placement as a models file `serve --models` runs as is (with the same --seed): each
    model's workload and SLO as read, its winning plan as placement keys."""
    out = []
    for e in entries:
        w, slo, plan = e.workload, e.slo, result["models"][e.name]["plan"]
        d: dict[str, Any] = {"name": e.name, "model": e.model}
        if "trace" in w:
            d |= {"trace": w["trace"]} | ({"requests": w["requests"]} if w["requests_given"] else {})
        else:
            d |= {k: w[k] for k in ("rate", "requests", "prompt_tokens", "output_tokens", "length_dist")}
            d |= {"length_sigma": w["length_sigma"]} if w["length_dist"] == "lognormal" else {}
        d |= {f"slo_{n}": getattr(slo, f"{n}_s") for n in slo.names} | {"attainment": slo.attainment}
        d |= {"itl_percentile": slo.itl_percentile} if slo.itl_s is not None else {}
        d |= {"gpus": result["models"][e.name]["gpus"]} | plan
        out.append(d)
    return {"models": out}
