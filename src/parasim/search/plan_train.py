"""`plan train`: search the training plans of a model on one or more (GPU type, GPU count) pairs.

1. Enumerate (space.py): divisibility and the model-state memory bound drop most of the raw space
   without costing anything.
2. Activation memory (main process, cheap): the same schedule walk the simulator uses, with the
   schedule op lists and per-stage parameter counts cached across plans. Plans whose only
   difference is recompute are dominated once a less-recomputing sibling fits (recomputation only
   adds work), so they are dropped as `dominated_recompute` instead of simulated.
3. Simulate the survivors in parallel (executors.py) with `parasim.training.simulate`; a plan the
   simulator finds does not fit is dropped as `memory_activations`.
4. Rank by the objective (ties: fewer GPUs, then the global batch nearest the token budget, then
   the plan's fields in a fixed order), Pareto front, heuristic baseline, the --reference plan
   (train_reference.py), explanation.

The global batch is per plan (train_batch.py): the exact --global-batch, or with
--global-batch-tokens the batch nearest the budget that the plan's layout can split, within
--batch-tolerance; each row records its `global_batch` and `global_batch_tokens`.

Ctrl-C (search/interrupts.py): during 1-2 it raises KeyboardInterrupt (nothing has finished);
during 3 the plans that finished are kept; during 4 it is remembered, the baseline and reference
plans not yet simulated are skipped, and the result is marked `interrupted`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from parasim.cost.memory import (activation_bytes_per_layer, embedding_activation_bytes, logits_activation_bytes,
                                 saved_linear_input_bytes, stage_state_bytes, te_fp8_weight_bytes,
                                 weight_grad_input_bytes_per_layer)
from parasim.cost.moe_host import scope_set
from parasim.cost.moe_memory import moe_buffer_bytes_per_token
from parasim.errors import InputError
from parasim.search import executors
from parasim.search.interrupts import SigintGuard
from parasim.search.objectives import TRAIN_OBJECTIVES, get_objective, parse_pareto
from parasim.search.pareto import pareto_summary
from parasim.search.prune import Pruned
from parasim.search.space import default_train_choices, enumerate_train
from parasim.search.train_batch import BatchTarget
from parasim.specs.catalog import default_cluster, get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.specs.mixed import MixedCluster, from_text, is_mixed
from parasim.training.hetero import PLACEMENTS
from parasim.specs.model import ModelSpec
from parasim.training.plan import grad_bytes_of
from parasim.training.schedules import get_schedule, planned_op_times, resolve_name

from parasim.search import train_reference as tr
from parasim.search.train_reference import PLAN_KEYS, parse_reference
#: least to most recomputation (a fitting plan makes its more-recomputing siblings redundant)
RECOMPUTE_ORDER = ("none", "dots", "selective", "selective_op", "full")


@dataclass(frozen=True, kw_only=True)
class TrainSearch:
    model: str
    gpu: tuple[str, ...]
    gpus: tuple[int, ...]
    seq_len: int
    global_batch: int | None = None  # sequences
    global_batch_tokens: int | None = None
    batch_tolerance: float | None = None  # relative, with global_batch_tokens (None: DEFAULT_BATCH_TOLERANCE)
    objective: str = "tokens-per-s"
    tokens: float | None = None  # for time-to-train / cost
    reliability: dict[str, Any] = field(default_factory=dict)  # training/goodput.py assumptions given (the rest: catalog)
    top: int = 10
    pareto: str | None = None
    choices: dict[str, tuple] = field(default_factory=dict)  # overrides of TrainChoices fields
    reference: dict[str, Any] | None = None  # a plan to evaluate and locate in the ranking
    workers: int | None = None
    executor: str = "local"
    ray_address: str | None = None
    seq_len_dist: str | None = None  # document lengths (training/length_dist.py); None: full sequences
    varlen_balance: tuple[str, ...] = ("static",)  # strategies tried with seq_len_dist
    stack: dict[str, Any] = field(default_factory=dict)  # plan fields the user's stack holds fixed (stack_for)
    node: dict[str, Any] = field(default_factory=dict)  # the cluster's gpus_per_node / inter_node_gbps overrides


#: stack fields that belong to one layout, with the layout (field, the values that have it, as said)
#: and the default the others keep (which is what they run: a ZeRO-1 plan has no FSDP layout, a
#: cp = 1 plan no ring, a plan without selective recompute no module list)
LAYOUT_BOUND: dict[str, tuple[str, Any, str, Any]] = {
    "fsdp_layout": ("zero", lambda z: z == 3, "zero = 3", "flat"),
    "cp_ring": ("cp", lambda c: c > 1, "cp > 1", "te"),
    "recompute_modules": ("recompute", lambda r: r == "selective", "recompute = selective", None),
    "fp8_recipe": ("precision", lambda p: p == "fp8", "precision = fp8", "delayed"),
    "fp8_param_gather": ("precision", lambda p: p == "fp8", "precision = fp8", False),
}
_APPLY_HINTS = {"fsdp_layout": "add 3 to --zero", "recompute_modules": "add selective to --recompute",
                "cp_ring": "give --cp with a degree > 1 (by default cp > 1 is tried only while seq_len/cp >= 2048)",
                "fp8_recipe": "add fp8 to --precision", "fp8_param_gather": "add fp8 to --precision"}


def stack_for(d: dict, stack: dict[str, Any]) -> dict[str, Any]:
    """The fixed stack fields candidate `d` runs with: every one, a LAYOUT_BOUND one only where the
    candidate has its layout; sequence parallelism (on by default with TP) only where tp > 1."""
    out = {k: v for k, v in stack.items() if k not in LAYOUT_BOUND or LAYOUT_BOUND[k][1](d[LAYOUT_BOUND[k][0]])}
    if "sequence_parallel" in stack:
        out["sequence_parallel"] = bool(stack["sequence_parallel"]) and d["tp"] > 1
    return out


def check_stack(model: ModelSpec, stack: dict[str, Any]) -> None:
    """The fixed fields checked by `TrainingPlan.check` once, on a probe plan that has every layout
    they bind to (ZeRO-3, cp = 2, selective recompute, FP8), so a bad value exits 2 naming the field as
    `parasim train` names it, before anything is simulated."""
    from parasim.training import TrainingPlan

    probe = {k: v for k, v in stack.items() if k != "sequence_parallel"}
    probe |= {"zero": 3, "cp": 2, "seq_len": 4, "recompute": "selective" if "recompute_modules" in stack else "none"}
    if stack.get("fp8_recipe", "delayed") != "delayed" or stack.get("fp8_param_gather"):
        probe["precision"] = "fp8"
    TrainingPlan.from_mapping(probe, gpus=2).check(model)


def check_applies(stack: dict[str, Any], choices: list) -> None:
    """A LAYOUT_BOUND field (not at its default) that no candidate of the space can run is
    refused, never ignored; `choices` are the TrainChoices of every (GPU, count)."""
    for key, (dim, has, said, default) in LAYOUT_BOUND.items():
        if stack.get(key, default) == default:
            continue
        if not any(has(v) for c in choices for v in getattr(c, dim)):
            raise InputError(key.replace("_", "-"), f"'{stack[key]}' applies only to plans with {said}, and the "
                                                    f"search has none: {_APPLY_HINTS[key]}")


def cluster_for(acc_id: str, gpus: int, node: dict[str, Any] | None = None) -> ClusterSpec | MixedCluster:
    """The cluster `parasim train` builds for --gpu/--gpus: the GPU's node preset, else 8 per node;
    a mixed `TYPE:COUNT,...` is its groups (specs/mixed.py), `gpus` their sum. `node`: the
    --gpus-per-node / --inter-node-gbps overrides and the --power-limit-w cap, as `parasim train`
    applies them."""
    from parasim.specs.mixed import power_limited

    return power_limited(_node_cluster(acc_id, gpus, node), (node or {}).get("power_limit_w"))


def _node_cluster(acc_id: str, gpus: int, node: dict[str, Any] | None) -> ClusterSpec | MixedCluster:
    """`cluster_for` before the power cap."""
    gpn, gbps = (node or {}).get("gpus_per_node"), (node or {}).get("inter_node_gbps")
    if is_mixed(acc_id):
        if gpn is None and gbps is None:
            return from_text(acc_id)
        from parasim.specs.mixed import groups_from_text, mixed_cluster

        return mixed_cluster(groups_from_text(acc_id, gpus_per_node=gpn, inter_node_gbps=gbps), field="gpu")
    if gpn is None and gbps is None:
        return default_cluster(acc_id, gpus)
    from parasim.specs.catalog import cluster_for as catalog_cluster

    return catalog_cluster(get_accelerator(acc_id), gpus, gpus_per_node=gpn,
                           nic_bw_bytes_per_s_per_gpu=gbps * 1e9 / 8 if gbps is not None else None)


def gpu_counts(req: TrainSearch) -> list[tuple[str, int]]:
    """(--gpu, GPU count) pairs to search: each one-type GPU at every --gpus count, a mixed one at
    its own sum, which a given --gpus must list."""
    pairs = []
    for g in req.gpu:
        if not is_mixed(g):
            if not req.gpus:
                raise InputError("gpus", f"required with a one-type --gpu ({g}); only TYPE:COUNT lists carry their count")
            pairs += [(g, n) for n in req.gpus]
            continue
        n = from_text(g).gpus
        if req.gpus and n not in req.gpus:
            raise InputError("gpus", f"{', '.join(map(str, req.gpus))} does not include the sum of the GPU groups "
                                     f"({g} = {n}); leave --gpus out or give the sum")
        pairs.append((g, n))
    return pairs


def price_of(gpu: str) -> float:
    """Price per GPU-hour; a mixed cluster's mean over its GPUs."""
    return from_text(gpu).price_usd_per_hour if is_mixed(gpu) else get_accelerator(gpu).price_usd_per_hour


def resolve_batch(req: TrainSearch) -> BatchTarget:
    return BatchTarget.from_request(seq_len=req.seq_len, global_batch=req.global_batch,
                                    global_batch_tokens=req.global_batch_tokens, tolerance=req.batch_tolerance)


# --- activation memory, cached ---------------------------------------------------------------
def _ops(schedule: str, pp: int, m: int, v: int, times: tuple = (1.0, 1.0, 1.0)) -> tuple:
    from parasim.training.schedules import rank_ops

    return rank_ops(schedule, pp, m, v, times)


@lru_cache(maxsize=65536)
@lru_cache(maxsize=4096)
def _chunk_layers(model: ModelSpec, pp: int, v: int, layout: str = "loop") -> tuple:
    from parasim.cost.partition import chunk_layers

    return tuple(tuple(row) for row in chunk_layers(model.layers, pp, v, layout))


@lru_cache(maxsize=65536)
def _inflight(schedule: str, pp: int, m: int, v: int, counts: tuple, per_layer: float, emb: float,
              logits: float, held_layer: float = 0.0, times: tuple = (1.0, 1.0, 1.0)) -> tuple:
    """Per rank: the activation peak of the schedule walk (`training.memory`), W-held bytes per
    layer `held_layer` for a schedule that splits the backward, `times` its planned op times."""
    from parasim.training.memory import chunk_activation_bytes, peak_activation_units
    from parasim.training.schedules import get_schedule

    ops = _ops(schedule, pp, m, v, times)
    sched = get_schedule(schedule)
    w = chunk_activation_bytes(pp, v, sched.layout, counts, per_layer, emb, logits)
    held = chunk_activation_bytes(pp, v, sched.layout, counts, held_layer, emb, logits) if sched.splits_backward else None
    return tuple(peak_activation_units(ops[r], w[r], held[r] if held else None) for r in range(pp))


def peak_memory_bytes(model: ModelSpec, d: dict[str, Any], generation: str) -> float:
    """Peak bytes per GPU as `parasim.training.memory.peak_memory` walks it, with caches, on GPUs of
    `generation` (the architecture decides Transformer Engine's FP8 weight copies)."""
    from parasim.training.memory import RESERVED_BYTES

    tp, pp, cp, mb, seq = d["tp"], d["pp"], d["cp"], d["micro_batch"], d["seq_len"]
    sp = d["sequence_parallel"] and tp > 1
    v = d["virtual_stages"]
    m = d["global_batch"] // (d["dp"] * mb)
    moe = 0.0
    lin = saved_linear_input_bytes(d["precision"], d.get("kernels", "fused"))
    if model.is_moe and d["recompute"] not in ("full", "selective_op"):
        moe = moe_buffer_bytes_per_token(model, tp=tp, etp=d.get("etp") or tp, sp=sp,
                                         act_bytes=2.0 if lin is None else lin) * model.moe_layer_share
    mods = d.get("recompute_modules") if d["recompute"] == "selective" else None
    per_layer = activation_bytes_per_layer(model, seq=seq, micro_batch=mb, tp=tp, sp=sp, cp=cp,
                                           recompute=d["recompute"], flash=d.get("attention", "flash") != "unfused",
                                           moe_buffers=moe, linear_input_bytes=lin,
                                           fused_norms=d.get("kernels", "fused") == "fused",
                                           graph_scopes=scope_set(d.get("cuda_graph_scope")),
                                           modules=frozenset(x.strip() for x in mods.split(",") if x.strip()) if mods else None)
    emb = embedding_activation_bytes(model, seq=seq, micro_batch=mb, tp=tp, sp=sp, cp=cp)
    logits = logits_activation_bytes(model, seq=seq, micro_batch=mb, tp=tp, cp=cp,
                                     cross_entropy=d.get("cross_entropy", "fp32"))
    sched = resolve_name(d["schedule"], v)
    rules = get_schedule(sched)
    layout = rules.layout
    held = weight_grad_input_bytes_per_layer(model, seq=seq, micro_batch=mb, tp=tp, sp=sp, cp=cp, linear_input_bytes=lin)
    times = planned_op_times(model, seq, d["recompute"]) if rules.timed else (1.0, 1.0, 1.0)
    acts = _inflight(sched, pp, m, v, _chunk_layers(model, pp, v, layout), per_layer, emb, logits, held, times)
    grad_bytes = grad_bytes_of(d["precision"], d.get("grad_dtype"))
    fp8_weight = te_fp8_weight_bytes(d["precision"], d.get("kernels", "fused"), d.get("fp8_recipe", "delayed"),
                                     d.get("fp8_param_gather", False), generation)
    peak = 0.0
    for r in range(pp):
        st = stage_state_bytes(model, tp=tp, pp=pp, ep=d["ep"], dp_cp=d["dp"] * cp, zero=d["zero"], stage=r,
                               virtual_stages=v, grad_bytes=grad_bytes, etp=d.get("etp"), layout=layout,
                               param_state=d.get("param_state", "megatron"), linear_weight_bytes=fp8_weight)
        peak = max(peak, st.total + acts[r] + RESERVED_BYTES)
    return peak


def screen_memory(model: ModelSpec, hbm: float, cands: list[dict], pruned: Pruned, generation: str) -> list[dict]:
    """Drop plans whose peak exceeds HBM, and recompute variants dominated by a fitting sibling."""
    fitting: set[tuple] = set()
    out = []
    for d in sorted(cands, key=lambda d: RECOMPUTE_ORDER.index(d["recompute"])):
        sib = tuple((k, d[k]) for k in PLAN_KEYS if k != "recompute") + ((d["gpu"], d["gpus"], d.get("mixed_placement")),)
        if sib in fitting:
            pruned.drop("dominated_recompute")
            continue
        if peak_memory_bytes(model, d, generation) > hbm:
            pruned.drop("memory_activations")
            continue
        fitting.add(sib)
        out.append(d)
    return out


# --- evaluation (runs in workers) ----------------------------------------------------------------
def evaluate(context: dict, item: dict) -> dict:
    """Simulate one plan; returns {"ok": bool, "reason": str, "metrics": ...}."""
    from parasim.training import TrainingPlan, simulate

    model = context["model"]
    cluster = context["clusters"][(item["gpu"], item["gpus"])]
    plan_map = {k: v for k, v in item.items() if k not in ("gpu", "gpus", "mixed_placement", "mixed_split")}
    try:
        plan = TrainingPlan.from_mapping(plan_map, gpus=cluster.gpus)
        if isinstance(cluster, MixedCluster):
            from parasim.training.hetero import simulate_mixed

            res = simulate_mixed(model, cluster, plan, placement=item["mixed_placement"], split=item.get("mixed_split"))
        else:
            res = simulate(model, cluster, plan)
    except InputError as e:
        return {"ok": False, "reason": "invalid_plan", "message": f"{e.field}: {e.message}"}
    except RuntimeError as e:  # e.g. a schedule that deadlocks
        return {"ok": False, "reason": "sim_error", "message": str(e)}
    if not res.fits:
        return {"ok": False, "reason": "memory_activations"}
    return {"ok": True, "metrics": {**res.to_dict(), **goodput_metrics(model, cluster, res, context)}}


def goodput_metrics(model: ModelSpec, cluster: ClusterSpec, res, context: dict) -> dict:
    """The goodput keys `parasim train --json` carries for the same plan and assumptions."""
    from parasim.training.goodput import result_keys

    return result_keys(model, gpus=cluster.gpus, gpus_per_node=cluster.gpus_per_node, step_time_s=res.step_time_s,
                       tokens_per_s=res.tokens_per_s, r=context["reliability"], tokens=context.get("tokens"),
                       param_state=res.plan.get("param_state", "megatron"))


def plan_row(item: dict, result: dict, price: float) -> dict:
    """A plan object: plan fields at top level, metrics (as `parasim train --json`) under `metrics`."""
    metrics = result["metrics"]
    row = {k: metrics["plan"].get(k, item.get(k)) for k in metrics["plan"]}
    row.update({"gpu": item["gpu"], "gpus": item["gpus"], "global_batch_tokens": row["global_batch"] * row["seq_len"],
                "price_usd_per_hour": price, "goodput_fraction": metrics["goodput_fraction"],
                "time_to_train_s": metrics["time_to_train_s"], "metrics": metrics})
    for k in ("mixed_placement", "mixed_split"):
        if k in item:
            row[k] = item[k]
    return row


def sort_key(obj, options: dict, batch: BatchTarget) -> Any:
    """Objective, then fewer GPUs, then the batch nearest the budget, then the plan fields."""
    def key(row: dict) -> tuple:
        return (obj.score(row, options), row["gpus"], batch.deviation(row["global_batch"]), row["gpu"],
                tuple(str(row.get(k)) for k in PLAN_KEYS), row.get("mixed_placement", ""))
    return key


def same_plan(a: dict, b: dict) -> bool:
    return (all(a.get(k) == b.get(k) for k in PLAN_KEYS) and a.get("gpu") == b.get("gpu") and a.get("gpus") == b.get("gpus")
            and a.get("varlen_balance", "static") == b.get("varlen_balance", "static")
            and a.get("mixed_placement") == b.get("mixed_placement") and a.get("mixed_split") == b.get("mixed_split"))


def baseline_items(model: ModelSpec, cluster: ClusterSpec, gpu: str, batch: BatchTarget) -> list[dict]:
    """Heuristic: TP = GPUs per node (halved until it divides the heads), micro-batch 1, 1F1B,
    Megatron's distributed optimizer (zero 1) and selective recompute, DP for the rest, the global
    batch by the search's rule; the candidates are the PPs in increasing order - the first that
    fits is the baseline. On a mixed cluster: whole stages per group with the even (homogeneous)
    layer split, what running it as if it were one type would do."""
    mixed = cluster if isinstance(cluster, MixedCluster) else None
    if mixed is not None:
        from parasim.training.hetero import feasible_placements

        cluster = mixed.proxy()
    tp = min(cluster.gpus_per_node, cluster.gpus)
    while tp > 1 and (model.heads % tp or cluster.gpus % tp):
        tp //= 2
    out = []
    for pp in range(1, model.layers + 1):
        if cluster.gpus % (tp * pp):
            continue
        dp = cluster.gpus // (tp * pp)
        global_batch = batch.pick(dp)
        if global_batch is None:
            continue
        if mixed is not None and "stages" not in feasible_placements(mixed, tp=tp, pp=pp, cp=1, dp=dp):
            continue
        out.append({"tp": tp, "pp": pp, "dp": dp, "cp": 1, "ep": 1, "etp": tp if model.is_moe else None,
                    "virtual_stages": 1,
                    "sequence_parallel": tp > 1, "micro_batch": 1, "global_batch": global_batch,
                    "seq_len": batch.seq_len, "recompute": "selective", "zero": 1, "precision": "bf16",
                    "schedule": "1f1b", "gpu": gpu, "gpus": cluster.gpus,
                    **({"mixed_placement": "stages", "mixed_split": "even"} if mixed is not None else {})})
    return out


def find_reference(req: TrainSearch, model: ModelSpec, given: dict, batch: BatchTarget, ranked: list[dict],
                   context: dict, prices: dict, objective, options: dict, key, *, interrupted: bool = False) -> dict:
    """The --reference plan, filled as train_reference.py documents, with its rank (or why none);
    after Ctrl-C a plan outside the ranking is not simulated."""

    info = {"given": dict(given)}
    hit = next((r for r in ranked if tr.matches(r, given)), None)
    if hit is not None:
        filled = {k: hit[k] for k in (*PLAN_KEYS, "gpu", "gpus") if k not in given and k != "seq_len"}
        return {**hit, **info, "filled": filled, "filled_by": tr.FILLED_BY_SEARCH, "in_ranking": True}
    gpu, gpus = given.get("gpu", req.gpu[0]), given.get("gpus", req.gpus[0])
    item, reason = tr.default_item(model, given, batch, gpu, gpus)
    if item is not None:
        item.update(stack_for(item, req.stack))
    info["filled_by"] = tr.FILLED_BY_DEFAULTS
    if item is None:
        return {**info, "rank": None, "in_ranking": False, "feasible": False, "reason": reason, "metrics": None}
    info["filled"] = {k: item[k] for k in (*PLAN_KEYS, "gpu", "gpus") if k not in given and k != "seq_len"}
    if interrupted:
        return {**item, **info, "rank": None, "in_ranking": False, "feasible": None,
                "reason": "not simulated (interrupted)", "metrics": None}
    res = evaluate(context, item)
    if not res["ok"]:
        return {**item, **info, "rank": None, "in_ranking": False, "feasible": False, "reason": res.get("reason"),
                "message": res.get("message"), "metrics": None}
    row = plan_row(item, res, prices[gpu])
    row["objective_value"] = objective.natural(row, options)
    return {**row, **info, "rank": tr.locate(ranked, row, key), "in_ranking": False, "feasible": True}


def run_search(req: TrainSearch, progress=None) -> dict:
    guard = SigintGuard()
    with guard.installed():
        return _search(req, progress, guard)


def _check(req: TrainSearch) -> tuple[ModelSpec, Any, list, BatchTarget, dict | None]:
    """(model, objective, Pareto objectives, batch target, parsed --reference); every input error
    is raised here, before anything is simulated."""
    model = get_model(req.model)
    if req.stack:
        check_stack(model, req.stack)
    objective = get_objective(req.objective, TRAIN_OBJECTIVES)
    pareto_objs = parse_pareto(req.pareto, TRAIN_OBJECTIVES)
    needs_tokens = {objective.name} | {o.name for o in pareto_objs}
    if needs_tokens & {"time-to-train", "cost"} and not req.tokens:
        raise InputError("tokens", "required (> 0) for the time-to-train and cost objectives: give --tokens N")
    if req.tokens is not None and req.tokens <= 0:
        raise InputError("tokens", f"must be positive, got {req.tokens}")
    if not req.gpu:
        raise InputError("gpu", "give at least one --gpu")
    for n in req.gpus:
        if n < 1:
            raise InputError("gpus", f"must be a positive integer, got {n}")
    gpu_counts(req)  # a one-type --gpu without --gpus, a --gpus without a mixed cluster's sum
    batch = resolve_batch(req)
    given = None
    if req.reference:

        if any(is_mixed(g) for g in req.gpu):
            raise InputError("reference", "is not available with a mixed --gpu TYPE:COUNT list yet")
        given = parse_reference(req.reference, req.gpu, req.gpus)
    return model, objective, pareto_objs, batch, given


def _candidates(req: TrainSearch, model: ModelSpec, clusters: dict, batch: BatchTarget,
                pruned: Pruned) -> tuple[list[dict], int]:
    """The plans left to simulate on every (GPU, count) after enumeration and the memory screen,
    and the size of the raw space."""
    cands: list[dict] = []
    raw = 0
    spaces = []
    for (g, n), cl in clusters.items():
        cluster = cl.proxy() if isinstance(cl, MixedCluster) else cl
        spaces.append((g, n, cl, cluster, default_train_choices(model, cluster, req.seq_len, **req.choices)))
    check_applies(req.stack, [c for *_, c in spaces])
    for g, n, cl, cluster, choices in spaces:
        raw += choices.size * (len(PLACEMENTS) if isinstance(cl, MixedCluster) else 1)
        pc = Pruned()
        found = [{**d, **stack_for(d, req.stack), "gpu": g, "gpus": n}
                 for d in enumerate_train(model, cluster, batch=batch, seq_len=req.seq_len, choices=choices, pruned=pc,
                                          stack=req.stack)]
        pruned.update(pc)
        if isinstance(cl, MixedCluster):
            found = _mixed_placements(cl, found, pruned)
        cands += screen_memory(model, cluster.accelerator.hbm_bytes, found, pruned, cluster.accelerator.generation)
    if req.seq_len_dist:  # strategies move work between ranks, not memory: one memory screen serves all
        raw *= len(req.varlen_balance)
        cands = [{**d, "seq_len_dist": req.seq_len_dist, "varlen_balance": b} for d in cands for b in req.varlen_balance]
    return cands, raw


def _mixed_placements(mixed: MixedCluster, found: list[dict], pruned: Pruned) -> list[dict]:
    """Each layout once per placement it allows on the mixed cluster (training/hetero.py); the
    raw space counts every layout in every placement, each one not allowed is pruned."""
    from parasim.training.hetero import feasible_placements, mixed_schedules
    from parasim.training.schedules import resolve_name

    out = []
    loop = mixed_schedules()
    for d in found:
        ways = feasible_placements(mixed, tp=d["tp"], pp=d["pp"], cp=d["cp"], dp=d["dp"])
        if resolve_name(d["schedule"], d["virtual_stages"]) not in loop:  # ZB-V's and DualPipe's chunk orders
            ways = []
        for _ in range(len(PLACEMENTS) - len(ways)):
            pruned.drop("mixed_placement")
        out += [{**d, "mixed_placement": w} for w in ways]
    return out


def _simulate_all(req: TrainSearch, context: dict, cands: list[dict], progress,
                  guard: SigintGuard) -> executors.Outcome:
    if progress:
        progress.start(len(cands))
    outcome = executors.Outcome([None] * len(cands), interrupted=True)
    with guard.executing():
        outcome = executors.run(evaluate, context, cands, executor=req.executor, workers=req.workers,
                                ray_address=req.ray_address, progress=progress.advance if progress else None)
    return outcome


def _baseline(base_cands: list[dict], ranked: list[dict], context: dict, prices: dict, objective,
              options: dict, interrupted) -> dict | None:
    """The first baseline (PP ascending) that fits, evaluated in-process (a handful of plans);
    `interrupted()` stops before any new simulation after Ctrl-C."""
    for b in base_cands:
        hit = next((r for r in ranked if same_plan(r, b)), None)
        if hit is not None:
            return hit
        if interrupted():  # no new simulations after Ctrl-C
            return None
        res = evaluate(context, b)
        if res["ok"]:
            baseline = plan_row(b, res, prices[b["gpu"]])
            baseline["rank"] = None
            baseline["objective_value"] = objective.natural(baseline, options)
            return baseline
    return None


def _search(req: TrainSearch, progress, guard: SigintGuard) -> dict:
    t0 = time.perf_counter()
    model, objective, pareto_objs, batch, given = _check(req)
    options = {"tokens": req.tokens or 0.0}
    clusters = {(g, n): cluster_for(g, n, req.node) for g, n in gpu_counts(req)}
    pruned = Pruned()
    cands, raw = _candidates(req, model, clusters, batch, pruned)
    base_cands = [{**b, **stack_for(b, req.stack)} for (g, n), cl in clusters.items()
                  for b in baseline_items(model, cl, g, batch)]
    if req.seq_len_dist:  # the baseline packs the same documents, statically
        base_cands = [{**b, "seq_len_dist": req.seq_len_dist, "varlen_balance": "static"} for b in base_cands]
    from parasim.training.goodput import Reliability

    context = {"model": model, "clusters": clusters, "tokens": req.tokens,
               "reliability": Reliability.from_options(req.reliability)}
    outcome = _simulate_all(req, context, cands, progress, guard)
    prices = {g: price_of(g) for g in req.gpu}
    errors: dict[str, str] = {}
    ranked = [plan_row(item, res, prices[item["gpu"]]) for item, res in pruned.successes(cands, outcome.results, errors)]
    key = sort_key(objective, options, batch)
    ranked.sort(key=key)
    for i, row in enumerate(ranked, start=1):
        row["rank"] = i
        row["objective_value"] = objective.natural(row, options)
    baseline = _baseline(base_cands, ranked, context, prices, objective, options,
                         lambda: outcome.interrupted or guard.hit)
    reference = (find_reference(req, model, given, batch, ranked, context, prices, objective, options, key,
                                interrupted=outcome.interrupted or guard.hit) if req.reference else None)
    from parasim.search.explain import explain

    out = {
        "command": "plan train", "model": model.name, "gpu": list(req.gpu), "gpus": list(req.gpus) or [n for _, n in clusters],
        **batch.as_dict(), "seq_len": req.seq_len, "objective": objective.name,
        "objective_metric": objective.metric, "tokens": req.tokens, "reliability": dict(req.reliability),
        **({"stack": dict(req.stack)} if req.stack else {}), **({"node": dict(req.node)} if req.node else {}),
        "defaults": {**({"batch_tolerance": batch.tolerance} if batch.tokens and req.batch_tolerance is None else {}),
                     **_cudnn_default(ranked, clusters)},
        "best": ranked[0] if ranked else None, "ranked": ranked, "evaluated": len(cands) - outcome.results.count(None),
        "space_size": raw, "pruned": pruned.as_dict(), "errors": errors, "baseline": baseline, "reference": reference,
        "pareto": pareto_summary(ranked, pareto_objs, options),
        "interrupted": outcome.interrupted or guard.hit,
        "search_wall_s": time.perf_counter() - t0,
    }
    out["explanation"] = explain(out, objective, options, TRAIN_OBJECTIVES, kind="train")
    out["interrupted"] = outcome.interrupted or guard.hit  # a Ctrl-C while explaining counts too
    return out


def _cudnn_default(ranked: list[dict], clusters: dict) -> dict:
    """The cuDNN release assumed for Transformer Engine attention on Blackwell when no ranked plan names
    one (cost.attn_shape.CUDNN_DEFAULT), as `parasim train` lists it among its defaults: the release
    moves a Blackwell step by several per cent, so a ranking priced at it says so."""
    from parasim.cost.attn_shape import assumed_cudnn_version

    for row in ranked:
        acc = getattr(clusters.get((row["gpu"], row["gpus"])), "accelerator", None)
        te_fused = row.get("kernels") == "fused" and row.get("attention") == "flash"  # TrainingPlan.te_fused_attention
        version = assumed_cudnn_version(getattr(acc, "generation", None), te_fused, row.get("cudnn_version"))
        if version is not None:
            return {"cudnn_version": version}
    return {}


def emit_yaml_mapping(best: dict, model: str | None = None, goodput: dict | None = None,
                      node: dict | None = None) -> dict:
    """The winning plan as a `parasim train -c` config (same keys as its flags, underscores).
    `model` is the model as the search was given it: a file or checkpoint folder is written as an
    absolute path (the model's name would not find it again), so the file runs from any directory.
    `goodput`: the failure and checkpoint flags the search was given, and --tokens, so `train -c`
    reports the same goodput and time to train; `node`: the --gpus-per-node / --inter-node-gbps
    the search was given, so `train -c` builds the same cluster."""
    from pathlib import Path

    from parasim.specs.catalog import model_reference

    m = best["metrics"]["plan"]
    ref = model_reference(model) if model else ""
    out = {"model": ref if Path(ref).is_absolute() else best["metrics"]["model"], "gpu": best["gpu"],
           "gpus": best["gpus"]}
    out.update({k: v for k, v in m.items() if v is not None})
    out.update({k: v for k, v in (goodput or {}).items() if v is not None})
    out.update({k: v for k, v in (node or {}).items() if v is not None})  # the cluster the search ran on
    for k in ("mixed_placement", "mixed_split"):
        if k in best:
            out[k] = best[k]
    return out
