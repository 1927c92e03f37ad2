"""`plan serve`: search serving plans under latency SLOs, in three stages.

Space: GPU type x TP x PP x replicas x (weights, KV precision) x scheduler x token budget x max
batch, plus disaggregated prefill/decode splits (prefill GPUs and TP vs decode GPUs and TP). The
precision is the model's own unless `--precisions` lists others (`space.serve_precisions`); a
format a GPU cannot run is dropped for that GPU (`precision_unsupported`), and one that no
searched GPU can run is an input error naming the parts that can (`cost.quant`).

0. Analytic pruning per layout (no simulation): the weights must fit and leave a KV cache for the
   longest request of the workload (`cost.memory.kv_budget`, the simulator's own memory
   model); one decode step of a single sequence (`serving.itercost`) must not already exceed the
   TPOT or ITL SLO; and a roofline bound on the layout's throughput (prefill tokens at the largest
   token budget searched, 2048, plus decode steps at the largest batch the KV cache and the default
   scheduler hold, x pp stages x replicas) must reach the offered rate with a 25 % margin (for a
   disaggregated layout, each pool on its own phase's time). These
   read the simulator's own defaults (`ServingPlan()`, `serving.simulate.plan_pools`).
1. Screen layouts: every surviving layout with the default scheduler and knobs, on the first
   `screen_requests` requests of the workload (same arrivals, shorter run), in waves of GPU
   count; for goodput per GPU, a wave no plan of whose size can beat the best screened one is
   skipped (`screen_in_waves`, `_max_goodput_rps`).
2. Screen knobs: for the best few layouts that met the SLO on the screen, and the few smallest
   that missed it (a better scheduler or budget may rescue them), every scheduler x token budget x
   max batch, still on the short workload (not the variant the screen already ran).
3. Refine: the best `refine` screened plans (by the objective, SLO met) are re-run on the whole
   workload; if none of them meets the SLO at full size, the next `refine`, up to three rounds.

A plan "meets the SLO" when its run meets every SLO given (any non-empty subset of TTFT, TPOT,
E2E per request at the attainment share, and ITL at its percentile) and is stable, as capacity
requires (search/capacity.py): its median queueing delay stays within `SLO.queueing_limit_s`
(2 s, Sarathi-Serve's, when no TTFT or E2E SLO bounds the wait), and, for a full-size run, the
offered rate is at most the plan's saturated throughput (a burst run of the same requests). A
TPOT or ITL SLO alone never notices a queue that grows, nor a batch that swells until the plan
falls behind.

`ranked` lists the full-size plans that meet the SLO first (best first), then the screen-only ones
(`fidelity: "screen"`); `best` is always a full-size result, so its numbers are the ones
`parasim serve -c` reproduces from the emitted YAML.

Ctrl-C (search/interrupts.py): before stage 1 starts it raises KeyboardInterrupt (nothing has
finished); afterwards the plans that finished are kept, the stages and the baseline not yet run
are skipped, and the result is marked `interrupted`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from parasim.errors import InputError
from parasim.search import executors
from parasim.search.interrupts import SigintGuard
from parasim.search.objectives import SERVE_OBJECTIVES, get_objective, parse_pareto
from parasim.search.pareto import pareto_summary
from parasim.search.prune import Pruned
from parasim.search.space import (CHUNKED_BUDGETS, MAX_BATCHES, SERVE_PRECISIONS, SERVE_SCHEDULERS, powers_of_two,
                                  serve_eps, serve_layouts, serve_precisions)
from parasim.search.capacity import QUEUEING, SATURATED
from parasim.serving.metrics import SLO, SLO_NAMES, missed_slos, slo_seconds
from parasim.serving.schedulers import SCHEDULERS
from parasim.serving.workload import LENGTH_DISTS, Workload
from parasim.specs import edge
from parasim.specs.catalog import default_cluster, get_accelerator, get_model, model_reference
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec

PLAN_FIELDS = ("tp", "pp", "replicas", "scheduler", "token_budget", "max_batch", "weights", "kv_dtype",
               "prefill_gpus", "prefill_tp", "decode_gpus", "decode_tp", "prefill_pp", "decode_pp")
#: layouts and rows carry `ep` beside PLAN_FIELDS: written out only when > 1 (serve's default is 1; a
#: models file has no ep key, and `plan serve --models` reads PLAN_FIELDS)
EP_FIELD = "ep"
THROUGHPUT_MARGIN = 1.25


@dataclass(frozen=True, kw_only=True)
class ServeSearch:
    model: str
    gpu: tuple[str, ...]
    max_gpus: int
    # any non-empty subset of the SLOs (serving.metrics.SLO); attainment applies to the per-request ones
    slo_ttft: float | None = None
    slo_tpot: float | None = None
    slo_itl: float | None = None
    slo_e2e: float | None = None
    itl_percentile: float = 99.0
    attainment: float = 0.9
    max_queueing_p50: float | None = None  # stability bound (SLO.queueing_limit_s); None: the default rule
    trace: str | None = None
    trace_columns: str | None = None  # serving.traces.parse_trace_columns
    rate: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    length_dist: str = "fixed"
    length_sigma: float = 0.5
    requests: int = 1000
    seed: int = 0
    objective: str = "goodput-per-gpu"
    top: int = 10
    pareto: str | None = None
    tp: tuple[int, ...] = ()
    pp: tuple[int, ...] = (1, 2)
    schedulers: tuple[str, ...] = SERVE_SCHEDULERS
    precisions: tuple[tuple[str, str | None], ...] = SERVE_PRECISIONS
    token_budgets: tuple[int, ...] = CHUNKED_BUDGETS
    max_batches: tuple[int, ...] = MAX_BATCHES
    screen_requests: int = 300
    knob_layouts: int = 4
    refine: int = 8
    workers: int | None = None
    executor: str = "local"
    ray_address: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    ep: tuple[int, ...] = ()  # expert-parallel degrees; empty = auto (space.serve_eps)
    one_ep_group: bool = False  # EP layouts only as one group (replicas = ep): --emit's launch commands

    def slo(self) -> SLO:
        """The SLO set, each value checked (seconds, not milliseconds); at least one is required."""
        vals = {n: slo_seconds(n, getattr(self, f"slo_{n}")) for n in SLO_NAMES}
        if not any(v is not None for v in vals.values()):
            raise InputError("slo", "give at least one SLO: --slo-ttft, --slo-tpot, --slo-itl and/or --slo-e2e (seconds)")
        edge.positive_float("max_queueing_p50", self.max_queueing_p50, allow_none=True)
        return SLO(**{f"{n}_s": v for n, v in vals.items()}, itl_percentile=self.itl_percentile,
                   attainment=self.attainment)


# --- workload -----------------------------------------------------------------------------------
def build_workload(req: ServeSearch, model: ModelSpec):
    """The full workload, and the `parasim serve -c` keys that regenerate it exactly."""
    from parasim.serving.workload import generate, read_trace

    if req.trace:
        from parasim.serving.traces import parse_trace_columns

        wl = read_trace(req.trace, limit=req.requests if req.extra.get("requests_given") else None,
                        columns=parse_trace_columns(req.trace_columns, "trace-columns"),
                        max_total_tokens=model.max_seq_len, model_name=model.name)
        return wl, ({"trace": str(Path(req.trace).resolve())}
                    | ({"trace_columns": req.trace_columns} if req.trace_columns else {})
                    | ({"requests": req.requests} if req.extra.get("requests_given") else {}))
    if req.trace_columns:
        raise InputError("trace-columns", "maps the columns of a --trace file; give --trace")
    if req.rate is None:
        raise InputError("workload", "give --trace FILE, or --rate with --prompt-tokens and --output-tokens")
    if not req.rate > 0 or not np.isfinite(req.rate):
        raise InputError("rate", f"must be a positive number of requests per second, got {req.rate}")
    for name in ("prompt_tokens", "output_tokens"):
        v = getattr(req, name)
        if v is None:
            raise InputError(name.replace("_", "-"), "required with --rate")
        if v < 1:
            raise InputError(name.replace("_", "-"), f"must be >= 1, got {v}")
    if req.length_dist not in LENGTH_DISTS:
        raise InputError("length-dist", f"'{req.length_dist}' is not one of {', '.join(LENGTH_DISTS)}")
    if req.length_dist == "lognormal" and not req.length_sigma > 0:
        raise InputError("length-sigma", f"must be positive, got {req.length_sigma}")
    if req.requests < 1:
        raise InputError("requests", f"must be a positive integer, got {req.requests}")
    # `parasim serve` regenerates exactly this from these keys (lognormal: capped at the context)
    regen: dict[str, Any] = {"rate": req.rate, "requests": req.requests, "seed": req.seed,
                             "prompt_tokens": req.prompt_tokens, "output_tokens": req.output_tokens}
    if req.length_dist == "lognormal":
        regen |= {"length_dist": "lognormal", "length_sigma": req.length_sigma}
    wl = generate(requests=req.requests, rate=req.rate, seed=req.seed, prompt_tokens=req.prompt_tokens,
                  output_tokens=req.output_tokens, length_dist=req.length_dist, length_sigma=req.length_sigma,
                  max_total_tokens=model.max_seq_len if req.length_dist == "lognormal" else None)
    return wl, regen


# --- clusters and analytic bounds -----------------------------------------------------------------
def cluster_for(acc_id: str, gpus: int) -> ClusterSpec:
    """The cluster `parasim serve` builds for --gpu and the plan's GPUs (the GPU's node preset)."""
    return default_cluster(acc_id, gpus)


def disaggregated(d: dict) -> bool:
    """Whether a layout (or plan row) has prefill and decode pools of its own."""
    return d.get("scheduler") is not None and SCHEDULERS.get(d["scheduler"]).disaggregated


def plan_gpus(d: dict) -> int:
    if disaggregated(d):
        return d["prefill_gpus"] + d["decode_gpus"]
    return d["tp"] * d["pp"] * d["replicas"]


def ep_of(d: dict) -> int:
    """A layout's or row's expert-parallel degree (1 when it has none)."""
    return d.get(EP_FIELD) or 1


def plan_mapping(d: dict) -> dict:
    """The ServingPlan fields of a layout or row that are set (`ep` only when > 1)."""
    out = {k: d[k] for k in PLAN_FIELDS if d.get(k) is not None}
    return out | ({EP_FIELD: ep_of(d)} if ep_of(d) > 1 else {})


@lru_cache(maxsize=1024)
def _pool_bounds(model: ModelSpec, acc_id: str, tp: int, pp: int, weights: str, kv: str | None,
                 prompt_mean: float, output_mean: float, max_len: int,
                 ep: int = 1) -> tuple[str | None, float, float, float, float]:
    """(reason or None, single-sequence decode step s, requests/s one instance can sustain at most,
    and the least seconds an instance spends on a mean request's prefill and on its decode: a
    prefill-only instance sustains at most pp / the first, a decode-only one pp / the second).

    The engine is the simulator's default one (`ServingPlan()`: its scheduler's token budget and
    batch, block size, memory share), sized by the simulator's own `plan_pools`. With `ep` > 1 the
    instance is one attention-DP rank of an EP group of `ep` (its GPU holds 1/ep of the routed
    experts: `cost.memory.weight_bytes_per_gpu(ep=)`), costed with every rank at the same batch."""
    from parasim.serving.plan import ServingPlan
    from parasim.serving.simulate import iteration_cost, plan_pools

    plan = ServingPlan(tp=tp, pp=pp, weights=weights, kv_dtype=kv, replicas=ep, ep=ep)
    cluster = cluster_for(acc_id, tp * pp * ep)
    pool = plan_pools(model, cluster, plan)[0][0]
    if pool.kvb.blocks < 1:
        return "memory_weights", 0.0, 0.0, 0.0, 0.0
    kv_tokens = pool.blocks * plan.block_size
    if kv_tokens < max_len:
        return "memory_kv", 0.0, 0.0, 0.0, 0.0
    cost = iteration_cost(model, cluster, plan, tp=tp, pp=pp)  # the plan carries the weights
    ctx = prompt_mean + output_mean / 2
    one = cost.time_s(1, 0.0, 0.0, 1, ctx, 1)
    b = int(max(1, min(pool.max_batch, kv_tokens // max(1.0, prompt_mean + output_mean))))
    step = cost.time_s(b, 0.0, 0.0, b, b * ctx, b)
    chunk = max(CHUNKED_BUDGETS)  # prefill at the largest token budget the search tries
    prefill_per_token = cost.time_s(chunk, chunk * (chunk + 1) / 2, 0.0, 0, 0.0, 1) / chunk
    prefill_s, decode_s = prompt_mean * prefill_per_token, output_mean * step / b
    return None, one, pp / (prefill_s + decode_s), prefill_s, decode_s


def precision_support(accs: list, pairs: tuple) -> dict[str, dict[str, str]]:
    """gpu -> weights -> how they run there ("native", "weight-only", "16-bit", or "cannot run: ...").
    A format that no searched GPU can run is an input error naming the parts that can."""
    from parasim.cost.quant import runs_on, weight_path

    out: dict[str, dict[str, str]] = {}
    for acc in accs:
        out[acc.id] = {}
        for w, _ in pairs:
            try:
                out[acc.id][w] = weight_path(w, acc).mode
            except InputError as e:  # keep the reason, not the list of parts that can (the error has it)
                out[acc.id][w] = "cannot run: " + e.message.split(": ", 1)[-1].split("; ", 1)[0]
    for w, _ in pairs:
        if all(out[a.id][w].startswith("cannot run") for a in accs):
            raise InputError("precisions", f"{w} weights cannot run on {', '.join(a.id for a in accs)}: {runs_on(w)}")
    return out


def analytic_prune(model: ModelSpec, d: dict, wl_stats: dict, step_slo_s: float | None, pruned: Pruned) -> bool:
    """True if the layout survives (memory, TPOT floor, throughput bound). `step_slo_s` is the
    tightest SLO on a decode step (TPOT or ITL; None: no floor to check)."""
    args = (wl_stats["prompt_mean"], wl_stats["output_mean"], wl_stats["max_len"])
    if disaggregated(d):
        ppp, dpp = d.get("prefill_pp") or d["pp"], d.get("decode_pp") or d["pp"]
        pools = [(d["prefill_tp"], ppp, d["prefill_gpus"] // (d["prefill_tp"] * ppp), "prefill"),
                 (d["decode_tp"], dpp, d["decode_gpus"] // (d["decode_tp"] * dpp), "decode")]
    else:
        pools = [(d["tp"], d["pp"], d["replicas"], "mixed")]
    for tp, pp, n, role in pools:
        if role != "mixed" and pp > 1 and not _needs_pp(model, d, tp, args):
            pruned.drop("phase_pp_unneeded")
            return False
        reason, one, _, prefill_s, decode_s = _pool_bounds(model, d["gpu"], tp, pp, d["weights"], d["kv_dtype"], *args,
                                                           ep_of(d))
        if reason:
            pruned.drop(reason)
            return False
        if role != "prefill" and step_slo_s is not None and one > step_slo_s:
            pruned.drop("tpot_floor")
            return False
        # a disaggregated pool does only its phase: the bound counts that phase's time alone
        busy_s = {"mixed": prefill_s + decode_s, "prefill": prefill_s, "decode": decode_s}[role]
        if n * pp / busy_s * THROUGHPUT_MARGIN < wl_stats["rate"] * wl_stats["attainment"]:
            pruned.drop("throughput_bound")
            return False
    return True


def _needs_pp(model: ModelSpec, d: dict, tp: int, args: tuple) -> bool:
    """Whether a disaggregated pool's instance of `tp` GPUs may pipeline: only where TP already fills
    the scale-up domain or one stage cannot hold the weights and the longest request's KV. PP
    inside a node adds hand-offs and bubbles a wider TP avoids (Megatron-LM's rule: TP within a
    node, PP across), so the planner spends no simulations on it there."""
    if tp >= cluster_for(d["gpu"], tp).domain:
        return True
    return _pool_bounds(model, d["gpu"], tp, 1, d["weights"], d["kv_dtype"], *args)[0] is not None


def kv_holds_workload(model: ModelSpec, item: dict, wl) -> tuple[bool, str]:
    """Whether the item's plan (its own scheduler knobs, hence activation workspace and KV size)
    keeps a KV cache that holds every request of the whole workload (`serving.simulate.kv_fit`,
    what the simulator itself checks). An invalid plan passes here; `evaluate` reports it."""
    from parasim.serving.plan import ServingPlan
    from parasim.serving.simulate import kv_fit

    try:
        plan = ServingPlan.from_mapping(plan_mapping(item))
        fit = kv_fit(model, cluster_for(item["gpu"], plan_gpus(item)), plan, wl)
    except InputError:
        return True, ""
    if not fit.feasible:
        return False, fit.message or ""
    n = int(fit.unservable.sum())
    return (n == 0), (f"{n} of {len(wl)} requests can never fit the KV cache" if n else "")


def kv_prune(model: ModelSpec, items: list[dict], wl, pruned: Pruned, errors: dict) -> list[dict]:
    """Drop (as `kv_cannot_hold_request`) the items whose KV cache cannot hold every request."""
    keep = []
    for it in items:
        ok, why = kv_holds_workload(model, it, wl)
        if ok:
            keep.append(it)
        else:
            pruned.drop("kv_cannot_hold_request")
            errors.setdefault("kv_cannot_hold_request", why)
    return keep


# --- evaluation (workers) -----------------------------------------------------------------------------
def evaluate(context: dict, item: dict) -> dict:
    from parasim.serving.plan import ServingPlan
    from parasim.serving.simulate import simulate

    plan_map = plan_mapping(item)
    wl = context["workload"]
    n = item["requests"]
    if n < len(wl):
        wl = wl.head(n)
    slo = context.get("slo") or SLO.of(context)
    offered = context.get("offered_rps")
    try:
        plan = ServingPlan.from_mapping(plan_map)
        cluster = cluster_for(item["gpu"], plan_gpus(item))
        first = None
        if offered and item.get("burst_first"):
            first = _burst(context, cluster, plan, wl, slo)
            if first[2] and offered > first[0]:  # unstable whatever its SLO run says: not needed
                return {"ok": True, "burst_only": True, "saturated_requests_per_s": first[0],
                        "metrics": {"inputs": {"plan": first[1]}, "summary": {}}}
        res = simulate(context["model"], cluster, plan, wl, slo=slo, seed=context["seed"])
        saturated = None
        if offered and meets_slo(res.summary, context.get("queueing_limit_s")):
            # stability: the same requests all at t = 0 give the most this plan serves (search/capacity.py)
            saturated = (first or _burst(context, cluster, plan, wl, slo))[0]
    except InputError as e:
        return {"ok": False, "reason": "invalid_plan", "message": f"{e.field}: {e.message}"}
    except RuntimeError as e:  # a simulator bug: reported, not fatal to the search
        return {"ok": False, "reason": "sim_error", "message": str(e)}
    if not res.feasible:
        return {"ok": False, "reason": res.reason, "message": res.message}
    if res.summary["unservable"]:
        return {"ok": False, "reason": "kv_cannot_hold_request",
                "message": f"{res.summary['unservable']} of {len(wl)} requests can never fit the KV cache"}
    return {"ok": True, "metrics": res.to_dict(), "saturated_requests_per_s": saturated}


def _burst(context: dict, cluster, plan, wl: Workload, slo) -> tuple[float, dict, bool]:
    """(the burst run's throughput, the plan it ran as the simulator echoes it, whether it ran every
    request: not when the plan cannot run or some request can never fit, which the SLO run then
    reports): the same requests all at t = 0 (search/capacity.py). The burst
    stops once its clock passes the horizon len(wl) / offered (a hair later, so that the bound
    below stays under the offered rate in floating point too): its makespan then reaches at least
    the instant `cut` it stopped at, so n / cut is at least the throughput it would reach and below the
    offered rate, and the plan fails the stability rule exactly as the whole burst would say.
    Bursts that end by the horizon are the same run as without one (tests/test_plan_serve_horizon.py)."""
    from parasim.serving.simulate import simulate

    burst = Workload(np.zeros(len(wl)), wl.prompt_tokens, wl.output_tokens, wl.prefix_id, wl.prefix_tokens)
    horizon = len(wl) / context["offered_rps"] * (1 + 1e-9)
    b = simulate(context["model"], cluster, plan, burst, slo=slo, seed=context["seed"], horizon_s=horizon)
    ran = (b.feasible or b.reason == "past_horizon") and not b.summary["unservable"]
    if b.reason == "past_horizon":
        return len(wl) / b.summary["makespan_s"], b.inputs["plan"], ran
    return (float(b.summary["requests_per_s"] or 0.0) if b.feasible else 0.0), b.inputs["plan"], ran


def slo_failures(s: dict, queueing_limit_s: float | None, saturated_rps: float | None = None,
                 offered_rps: float | None = None) -> list[str]:
    """Why a run does not meet the SLO: the SLOs it misses (`missed_slos`), then the stability
    rules, as capacity names them: `queueing` (median queueing over `queueing_limit_s`) and
    `saturated_throughput` (the offered rate over the burst run's throughput). Empty: it meets it."""
    why = missed_slos(s)
    q = s.get("queueing_p50_s")
    if queueing_limit_s is not None and (q is None or q > queueing_limit_s):
        why.append(QUEUEING)
    if saturated_rps is not None and offered_rps is not None and offered_rps > saturated_rps:
        why.append(SATURATED)
    return why


def meets_slo(s: dict, queueing_limit_s: float | None) -> bool:
    """The run meets its SLOs (`slo_met`: per-request attainment and the ITL percentile) and its
    median queueing stays within `queueing_limit_s` (SLO.queueing_limit_s)."""
    return bool(s.get("slo_met")) and not slo_failures(s, queueing_limit_s)


def make_row(item: dict, res: dict, queueing_limit_s: float | None, fidelity: str,
             offered_rps: float | None = None) -> dict:
    """A ranked row. It meets the SLO when `meets_slo` holds and, for a full-size run checked
    against its burst run, the offered rate is within the saturated throughput. Goodput is
    vLLM's (requests within every per-request SLO, per second); with only an ITL SLO, every
    completed request of a run that meets it counts."""
    metrics = res["metrics"]
    s = metrics["summary"]
    gpus = plan_gpus(item)
    sat = res.get("saturated_requests_per_s")
    why = slo_failures(s, queueing_limit_s, sat, offered_rps)
    ok = not why
    good = s.get("goodput_requests_per_s")
    if good is None:
        good = s.get("requests_per_s") if ok else 0.0
    row = dict(metrics["inputs"]["plan"])
    row.update({"gpu": item["gpu"], "gpus": gpus, "requests": item["requests"], "fidelity": fidelity,
                "meets_slo": ok, "fails": why, "saturated_requests_per_s": sat, "goodput_per_gpu": (good or 0.0) / gpus,
                "metrics": metrics})
    return row


def plan_key(d: dict) -> tuple:
    return (d["gpu"],) + tuple(d.get(k) for k in PLAN_FIELDS) + (ep_of(d),)


def sort_key(obj, options):
    def key(row: dict) -> tuple:
        return (obj.score(row, options), row["gpus"], tuple(str(x) for x in plan_key(row)))
    return key


def knob_variants(d: dict, req: ServeSearch) -> list[dict]:
    base = {k: v for k, v in d.items() if k not in ("scheduler", "token_budget", "max_batch", "requests")}
    out = []
    scheds = (d["scheduler"],) if disaggregated(d) else tuple(s for s in req.schedulers
                                                              if not SCHEDULERS.get(s).disaggregated)
    for s in scheds:
        budgets = req.token_budgets if SCHEDULERS.get(s).search_budgets else (None,)
        for b in budgets:
            for mb in req.max_batches:
                out.append({**base, "scheduler": s, "token_budget": b, "max_batch": mb})
    return out


def baseline_plan(model: ModelSpec, gpu: str, max_gpus: int) -> dict:
    """Largest TP inside one node that divides the heads (and the budget), replicas for the rest."""
    from parasim.serving.plan import ServingPlan

    cl = cluster_for(gpu, max_gpus)
    tp = 1
    for t in powers_of_two(min(cl.gpus_per_node, max_gpus)):
        if model.heads % t == 0 and not (t > model.kv_heads and t % model.kv_heads):
            tp = t
    default = ServingPlan()
    return {"gpu": gpu, "tp": tp, "pp": 1, "replicas": max(1, max_gpus // tp), "weights": model.native_weights,
            "kv_dtype": model.serving_dtype, "scheduler": default.scheduler, "token_budget": None, "max_batch": None}


class _Stages:
    """Runs executor batches, keeps results, stops after an interrupt. A plan whose simulation is
    one already run (`same_simulation`) takes that result instead of being run again."""

    def __init__(self, req: ServeSearch, context: dict, progress, guard: SigintGuard | None = None) -> None:
        self.req, self.context, self.progress = req, context, progress
        self.guard = guard or SigintGuard()
        self.interrupted = False
        self.evaluated = 0
        self.shared = 0  # plans evaluated with another plan's simulation (same_simulation)
        self._runs: dict[tuple, dict] = {}  # same_simulation key -> result

    def run(self, items: list[dict], extra: tuple[dict, ...] = ()) -> list[dict | None]:
        """Evaluate `items` (their results, in order; None where interrupted). `extra` items are
        run in the same batch for later (`cached`), not counted: the baseline beside the refine
        stage, so that a worker simulates it instead of the parent after the search."""
        self.interrupted = self.interrupted or self.guard.hit  # a Ctrl-C between stages
        if self.interrupted or not items:
            return [None] * len(items)
        n = len(items)
        items = items + [it for it in extra if self.cached(it) is None]
        keys = [same_simulation(self.context["model"], it) for it in items]
        first: dict[tuple, int] = {}
        todo = [i for i, k in enumerate(keys) if k not in self._runs and first.setdefault(k, i) == i]
        if self.progress:
            self.progress.start(len(todo))
        out = executors.Outcome([None] * len(todo), interrupted=True)
        with self.guard.executing():
            out = executors.run(evaluate, self.context, [items[i] for i in todo], executor=self.req.executor,
                                workers=self.req.workers, ray_address=self.req.ray_address,
                                progress=self.progress.advance if self.progress else None)
        self.interrupted = out.interrupted
        for i, res in zip(todo, out.results):
            if res is not None:
                self._runs[keys[i]] = res
        results = [None if (res := self._runs.get(k)) is None else renamed(res, it["scheduler"])
                   for k, it in zip(keys, items)]
        ran = sum(1 for i, res in zip(todo, out.results) if i < n and res is not None)  # simulated for `items`
        results = results[:n]
        self.evaluated += sum(r is not None for r in results)
        self.shared += sum(r is not None for r in results) - ran
        return results

    def cached(self, item: dict) -> dict | None:
        """The result of a simulation already run for `item`'s (same_simulation), or None."""
        res = self._runs.get(same_simulation(self.context["model"], item))
        return None if res is None else renamed(res, item["scheduler"])


def same_simulation(model: ModelSpec, item: dict) -> tuple:
    """Plans with equal keys simulate the same run: every field equal but the scheduler's name,
    and schedulers that differ only in their name and default knobs (SplitFuse is Sarathi with
    another default budget) with the same budget and batch given, which resolve the same. The
    simulator reads a scheduler only through its class's methods and policy attributes and the
    budget and batch (`serving.simulate.budget_and_batch`), so their results differ only in the
    plan's echoed scheduler name (`renamed`)."""
    from parasim.serving.simulate import budget_and_batch

    cls = SCHEDULERS.get(item["scheduler"])
    resolved = budget_and_batch(cls, item.get("token_budget"), item.get("max_batch"), model)
    return (_behaviour(cls), resolved, item["requests"], bool(item.get("burst_first"))) + plan_key(
        {**item, "scheduler": None})


@lru_cache(maxsize=64)
def _behaviour(cls: type) -> tuple:
    """A scheduler class as the simulator sees it: its attributes and methods but its name and
    default knobs (read only through budget_and_batch). Unhashable attributes: the class itself."""
    skip = ("name", "default_budget", "default_max_batch")
    out = tuple((k, getattr(cls, k)) for k in sorted(dir(cls)) if not k.startswith("__") and k not in skip)
    try:
        hash(out)
    except TypeError:
        return (cls,)
    return out


def renamed(res: dict, scheduler: str) -> dict:
    """`res` as the run of the same plan under the scheduler name `scheduler` (the plan echoed in
    its inputs carries the name; nothing else in a result does). A failure is kept as it is: its
    message may name the other scheduler, but that plan was evaluated first, and a search keeps
    the first message per reason (`Pruned.successes`)."""
    m = res.get("metrics")
    if not res["ok"] or m["inputs"]["plan"]["scheduler"] == scheduler:
        return res
    inputs = {**m["inputs"], "plan": {**m["inputs"]["plan"], "scheduler": scheduler}}
    return {**res, "metrics": {**m, "inputs": inputs}}


def _family(d: dict) -> tuple:
    """Layouts that differ only in how many instances they run (for EP, how many EP groups)."""
    return (d["gpu"], d["scheduler"], d["tp"], d["pp"], d["weights"], d["kv_dtype"], d.get("prefill_tp"),
            d.get("decode_tp"), d.get("prefill_pp"), d.get("decode_pp"), ep_of(d))


def _size(d: dict) -> tuple[int, int]:
    if disaggregated(d):
        return d["prefill_gpus"], d["decode_gpus"]
    return d["replicas"], 0


#: plans the knob stage cannot pick run their burst first (screen_in_waves, _screen_knobs); a test
#: turns it off to check the ranked list does not move
BURST_FIRST = True


def screen_in_waves(items: list[dict], stages: _Stages, absorb, screened: dict, pruned: Pruned,
                    max_rps: float | None = None, skipped: list | None = None,
                    near: int | None = None) -> list[dict]:
    """Screen layouts in waves of increasing GPU count; a layout is skipped (`dominated_replicas`)
    once a layout of its family with no more instances in every pool met the SLO: for every
    objective but latency, more instances of a plan that already meets the SLO only add GPUs.
    With `max_rps` (the goodput-per-GPU objective: the most requests/s any plan can complete), a
    wave of g GPUs is skipped (`goodput_bound`) once a plan that met the SLO has more goodput per
    GPU than max_rps / g, which no plan of g GPUs can reach. With `near` (the knob stage's count of
    layouts missing the SLO that it varies, the fewest-GPU ones), once that many earlier-wave
    layouts missed, a wave's layouts run their burst first (`burst_first`): the knob stage can no
    longer pick them, so one whose burst cannot keep up needs no SLO run. Returns the items
    actually evaluated."""
    met: dict[tuple, list[tuple[int, int]]] = {}
    done: list[dict] = []
    best = 0.0
    missed = 0
    for g in sorted({plan_gpus(i) for i in items}):
        wave = []
        for it in (i for i in items if plan_gpus(i) == g):
            sz = _size(it)
            if max_rps is not None and best > max_rps / g:
                pruned.drop("goodput_bound")
                if skipped is not None:
                    skipped.append(it)
                continue
            if any(a <= sz[0] and b <= sz[1] for a, b in met.get(_family(it), [])):
                pruned.drop("dominated_replicas")
                continue
            wave.append(it)
        first = BURST_FIRST and near is not None and missed >= near
        absorb(wave, stages.run([{**it, "burst_first": True} for it in wave] if first else wave), "screen", screened)
        for it in wave:
            row = screened.get(plan_key(it))
            if row is not None and row["meets_slo"]:
                met.setdefault(_family(it), []).append(_size(it))
                best = max(best, row["goodput_per_gpu"])
            missed += row is not None and not row["meets_slo"]
        done += wave
    return done


def run_search(req: ServeSearch, progress=None) -> dict:
    guard = SigintGuard()
    with guard.installed(), executors.session():  # one worker pool for every stage
        return _search(req, progress, guard)


@dataclass
class _Run:
    """What one search shares between its stages: the checked request, the workload and its
    statistics, the executor stages, and what was pruned and why."""

    req: ServeSearch
    model: ModelSpec
    accs: list
    slo: SLO
    limit: float | None
    objective: Any
    pareto_objs: list
    wl: Workload
    regen: dict
    wl_stats: dict
    options: dict
    full_n: int
    screen_n: int
    pruned: Pruned = field(default_factory=Pruned)
    errors: dict[str, str] = field(default_factory=dict)
    offered: float | None = None
    context: dict = field(default_factory=dict)
    stages: _Stages | None = None
    bound_skipped: list[dict] = field(default_factory=list)  # layouts the goodput bound skipped
    full_max_rps: float = float("inf")  # no plan's goodput on the full workload exceeds this
    bound_check: dict | None = None  # goodput_bound_check of the winner, before any re-screen
    eps: tuple[int, ...] = (1,)  # expert-parallel degrees searched (space.serve_eps)
    ep_why: str = ""

    def absorb(self, items: list[dict], results: list, fidelity: str, store: dict) -> None:
        for it, res in self.pruned.successes(items, results, self.errors):
            store[plan_key(it)] = make_row(it, res, self.limit, fidelity, self.offered)

    def key(self):
        return sort_key(self.objective, self.options)


def _prepare(req: ServeSearch) -> _Run:
    """Check the request and build its workload (every input error is raised here)."""
    model = get_model(req.model)
    if not req.gpu:
        raise InputError("gpu", "give at least one --gpu")
    accs = [get_accelerator(g) for g in req.gpu]
    if req.max_gpus < 1:
        raise InputError("max-gpus", f"must be >= 1, got {req.max_gpus}")
    slo = req.slo()
    limit = slo.queueing_limit_s(req.max_queueing_p50)
    objective = get_objective(req.objective, SERVE_OBJECTIVES)
    pareto_objs = parse_pareto(req.pareto, SERVE_OBJECTIVES)
    for s in req.schedulers:
        SCHEDULERS.get(s, field="schedulers")
    colocated = any(not SCHEDULERS.get(s).disaggregated for s in req.schedulers)
    eps, ep_why = serve_eps(model, req.ep, max_gpus=req.max_gpus, tps=req.tp or (1,), pps=req.pp, colocated=colocated)
    wl, regen = build_workload(req, model)
    span = float(wl.arrival_s[-1] - wl.arrival_s[0])
    wl_stats = {"prompt_mean": float(wl.prompt_tokens.mean()), "output_mean": float(wl.output_tokens.mean()),
                "max_len": int((wl.prompt_tokens + wl.output_tokens).max()),
                "rate": (len(wl) - 1) / span if span > 0 else float("inf"),
                "attainment": slo.attainment if slo.per_request else 1.0}
    return _Run(req=req, model=model, accs=accs, slo=slo, limit=limit, objective=objective,
                pareto_objs=pareto_objs, wl=wl, regen=regen, wl_stats=wl_stats,
                options={"output_tokens_mean": wl_stats["output_mean"]}, full_n=len(wl),
                screen_n=min(len(wl), req.screen_requests), eps=eps, ep_why=ep_why)


def _enumerate_layouts(run: _Run, pairs: tuple, runs: dict) -> tuple[list[dict], int]:
    """Stage 0: every layout of every GPU, pruned analytically; (survivors, raw space size)."""
    req, slo, pruned = run.req, run.slo, run.pruned
    step_slo_s = min((v for v in (slo.tpot_s, slo.itl_s) if v is not None), default=None)
    disagg = tuple(s for s in req.schedulers if SCHEDULERS.get(s).disaggregated)
    layouts: list[dict] = []
    raw = 0
    for acc in run.accs:
        cl = cluster_for(acc.id, req.max_gpus)
        tps = req.tp or tuple(powers_of_two(min(cl.domain, req.max_gpus)))
        for d in serve_layouts(run.model, cl, max_gpus=req.max_gpus, tps=tps, pps=req.pp, precisions=pairs,
                               pruned=pruned, disagg=disagg, eps=run.eps, one_ep_group=req.one_ep_group):
            raw += 1
            if runs[acc.id][d["weights"]].startswith("cannot run"):
                pruned.drop("precision_unsupported")
            elif analytic_prune(run.model, d, run.wl_stats, step_slo_s, pruned):
                layouts.append(d)
    return layouts, raw + sum(pruned.values())


def _screen_layouts(run: _Run, layouts: list[dict], screened: dict) -> list[dict]:
    """Stage 1: each layout with default knobs on the short workload; returns the items run."""
    items = [{**d, "scheduler": d.get("scheduler", "sarathi"), "token_budget": None, "max_batch": None,
              "requests": run.screen_n} for d in layouts]
    items = kv_prune(run.model, items, run.wl, run.pruned, run.errors)
    if run.objective.name == "latency":
        run.absorb(items, run.stages.run(items), "screen", screened)
        return items
    max_rps = None
    if run.objective.name == "goodput-per-gpu" and items:
        step = min(_min_step_s(run.model, i["gpu"], *lay, i["weights"], i["kv_dtype"]) for i in items
                   for lay in _decoding_layouts(i))
        # the screen compares screened goodputs, so the screen's bound; the winner is checked
        # against the full workload's bound afterwards (goodput_bound_check)
        screen_rps = _max_goodput_rps(run.wl.head(run.screen_n), step)
        max_rps = screen_rps if np.isfinite(screen_rps) else None
        run.full_max_rps = _max_goodput_rps(run.wl, step)
    return screen_in_waves(items, run.stages, run.absorb, screened, run.pruned, max_rps, run.bound_skipped,
                           near=run.req.knob_layouts)


def _rescreen_if_bound_fails(run: _Run, screened: dict, full: dict) -> dict:
    """The screen's goodput bound skips waves by screened goodputs; if the full-size winner does
    not beat the skipped layouts' ceiling on the whole workload, the skip was not proven safe, so
    those layouts are screened (with their knob variants) and the best of them refined after all.
    Returns `full` with their full-size rows added."""
    if not run.bound_skipped or run.stages.interrupted:
        return full
    run.bound_check = goodput_bound_check(run, sorted((r for r in full.values() if r["meets_slo"]), key=run.key()))
    if run.bound_check["winner_above"]:
        return full
    extra, run.bound_skipped = run.bound_skipped, []
    run.pruned["goodput_bound"] -= len(extra)  # screened after all: no longer pruned
    before = set(screened)
    run.absorb(extra, run.stages.run(extra), "screen", screened)
    _screen_knobs(run, extra, screened)
    run.bound_check["rescreened"] = len(extra)
    return {**full, **_refine(run, {k: r for k, r in screened.items() if k not in before})}


def goodput_bound_check(run: _Run, full_ok: list[dict]) -> dict | None:
    """Whether the winner at full size still beats every layout the screen's goodput bound skipped
    (none of them can exceed the full workload's bound / its GPUs); None when nothing was skipped."""
    if not run.bound_skipped:
        return None
    g = min(plan_gpus(i) for i in run.bound_skipped)
    ceiling = run.full_max_rps / g
    return {"skipped": len(run.bound_skipped), "fewest_gpus": g, "ceiling_per_gpu": ceiling,
            "winner_above": bool(full_ok) and full_ok[0]["goodput_per_gpu"] > ceiling}


def _decoding_layouts(d: dict) -> list[tuple[int, int, int]]:
    """(tp, pp, ep) of the instances that decode: the decode pool's, or the replicas'."""
    if disaggregated(d):
        return [(d["decode_tp"], d.get("decode_pp") or d["pp"], 1)]
    return [(d["tp"], d["pp"], ep_of(d))]


@lru_cache(maxsize=256)
def _min_step_s(model: ModelSpec, acc_id: str, tp: int, pp: int, ep: int, weights: str, kv: str | None) -> float:
    """The shortest decode iteration of a layout: one sequence with one token of context (an
    iteration's time grows with every aggregate of its batch). An EP rank's is that of every rank
    of its group at one token: in lockstep an idle rank steps a dummy token (serving.lockstep)."""
    from parasim.serving.plan import ServingPlan
    from parasim.serving.simulate import iteration_cost

    plan = ServingPlan(tp=tp, pp=pp, weights=weights, kv_dtype=kv, replicas=ep, ep=ep)
    return iteration_cost(model, cluster_for(acc_id, tp * pp * ep), plan, tp=tp, pp=pp).time_s(1, 0.0, 0.0, 1, 1.0, 1)


def _max_goodput_rps(wl: Workload, step_s: float) -> float:
    """The most requests per second of makespan any plan completes on `wl`: every request, over
    the least makespan, which ends no earlier than any request's arrival plus its output tokens
    after the first, each one decode iteration of at least `step_s` (the goodput's makespan runs
    from the first arrival to the last token). Infinite when the bound has no span."""
    end = float(np.max(wl.arrival_s + np.maximum(wl.output_tokens - 1, 0) * step_s))
    span = end - float(wl.arrival_s[0])
    return len(wl) / span if span > 0 else float("inf")


def _screen_knobs(run: _Run, items1: list[dict], screened: dict) -> list[dict]:
    """Stage 2: knobs for the best layouts meeting the SLO and the smallest ones missing it."""
    key = run.key()
    rows1 = [screened[plan_key(i)] for i in items1 if plan_key(i) in screened]
    good = sorted((r for r in rows1 if r["meets_slo"]), key=key)[:run.req.knob_layouts]
    near = sorted((r for r in rows1 if not r["meets_slo"]),
                  key=lambda r: (r["gpus"], -(r["metrics"]["summary"].get("slo_attainment") or 0.0),
                                 tuple(str(x) for x in plan_key(r))))[:run.req.knob_layouts]
    items2 = []
    seen = set(screened)
    ran = {_effective_key(run.model, r) for r in screened.values()}
    for r in good + near:
        lay = {k: r.get(k) for k in ("gpu", "tp", "pp", "replicas", "weights", "kv_dtype", "scheduler", "prefill_gpus",
                                     "prefill_tp", "decode_gpus", "decode_tp", "prefill_pp", "decode_pp", EP_FIELD)}
        for v in knob_variants(lay, run.req):
            v["requests"] = run.screen_n
            if plan_key(v) in seen:
                continue
            seen.add(plan_key(v))
            if _effective_key(run.model, v) in ran:  # the defaults written out: the same run again
                run.pruned.drop("same_as_screened")
                continue
            items2.append({**v, "burst_first": BURST_FIRST})  # a failing variant's SLO run is read by nobody
    items2 = kv_prune(run.model, items2, run.wl, run.pruned, run.errors)
    run.absorb(items2, run.stages.run(items2), "screen", screened)
    return items2


def _effective_key(model: ModelSpec, d: dict) -> tuple:
    """`plan_key` with the token budget and max batch the engine runs (`serving.simulate.budget_and_batch`):
    a knob variant that spells out its scheduler's defaults simulates exactly what the screen ran."""
    from parasim.serving.simulate import budget_and_batch

    cls = SCHEDULERS.get(d["scheduler"])
    budget, batch = budget_and_batch(cls, d.get("token_budget"), d.get("max_batch"), model)
    return plan_key({**d, "token_budget": budget, "max_batch": batch}) + (d["requests"],)


def _refine(run: _Run, screened: dict, extra: tuple[dict, ...] = ()) -> dict[tuple, dict]:
    """Stage 3: re-run the best screened plans on the whole workload, `refine` at a time (the
    first batch with the `extra` items: `_Stages.run`)."""
    if run.screen_n == run.full_n:
        return {k: {**r, "fidelity": "full"} for k, r in screened.items()}
    candidates = sorted((r for r in screened.values() if r["meets_slo"]), key=run.key())
    full: dict[tuple, dict] = {}
    refine = run.req.refine
    for start in range(0, min(len(candidates), 3 * refine), refine):
        # a full-size plan that falls behind is not ranked whatever its SLO run says: burst first
        batch = [{**{k: r.get(k) for k in ("gpu", *PLAN_FIELDS, EP_FIELD)}, "requests": run.full_n,
                  "burst_first": BURST_FIRST}
                 for r in candidates[start:start + refine]]
        run.absorb(batch, run.stages.run(batch, extra if start == 0 else ()), "full", full)
        if sum(r["meets_slo"] for r in full.values()) >= 2 or run.stages.interrupted:  # a winner and a runner-up
            break
    return full


def _rank(run: _Run, screened: dict, full: dict) -> tuple[list[dict], list[dict]]:
    """(full-size SLO-meeting plans, all ranked: those then the screen-only SLO-meeting ones);
    the plans that missed count as pruned (`slo_missed` or `unstable`)."""
    key = run.key()
    full_ok = sorted((r for r in full.values() if r["meets_slo"]), key=key)
    screen_only = sorted((r for k, r in screened.items() if r["meets_slo"] and k not in full), key=key)
    failed = [r for r in full.values() if not r["meets_slo"]] + [
        r for k, r in screened.items() if not r["meets_slo"] and k not in full]
    unstable = sum(1 for r in failed if set(r["fails"]) <= {QUEUEING, SATURATED})
    run.pruned.drop("slo_missed", len(failed) - unstable)
    run.pruned.drop("unstable", unstable)
    ranked = full_ok + screen_only
    for i, r in enumerate(ranked, start=1):
        r["rank"] = i
        r["objective_value"] = run.objective.value(r, run.options)
    return full_ok, ranked


def _baseline(run: _Run, base: dict, full_ok: list[dict], interrupted: bool) -> dict:
    """The heuristic baseline plan `base` at full size: a ranked row if it was run, else its
    simulation beside the refine stage, else simulated now (not after a Ctrl-C)."""
    hit = next((r for r in full_ok if plan_key(r) == plan_key(base)), None)
    if hit is not None:
        return hit
    if interrupted:  # no new simulations after Ctrl-C
        return {**base, "rank": None, "feasible": None, "reason": "not_simulated",
                "message": "not simulated: the search was interrupted", "metrics": None}
    base_item = {**base, "requests": run.full_n}
    res = run.stages.cached(base_item) or evaluate(run.context, base_item)
    if not res["ok"]:
        return {**base, "rank": None, "feasible": False, "reason": res["reason"],
                "message": res.get("message"), "metrics": None}
    baseline = make_row(base_item, res, run.limit, "full", run.offered) | {"rank": None}
    try:
        baseline["objective_value"] = run.objective.value(baseline, run.options)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        baseline["objective_value"] = None
    return baseline


def _search(req: ServeSearch, progress, guard: SigintGuard) -> dict:
    t0 = time.perf_counter()
    run = _prepare(req)
    pairs, why = serve_precisions(run.model, req.precisions)
    runs = precision_support(run.accs, pairs)
    layouts, raw = _enumerate_layouts(run, pairs, runs)
    rate = run.wl_stats["rate"]
    run.offered = rate if np.isfinite(rate) else None  # None: a burst, nothing to keep up with
    run.context = {"model": run.model, "workload": run.wl, "slo": run.slo, "seed": req.seed,
                   "queueing_limit_s": run.limit, "offered_rps": run.offered}
    run.stages = _Stages(req, run.context, progress, guard)
    screened: dict[tuple, dict] = {}
    ran = []  # simulations per stage (a stage may reuse an earlier one's results: the full-size refine
    items1 = _screen_layouts(run, layouts, screened)  # when the screen already ran the whole workload)
    ran.append(run.stages.evaluated)
    items2 = _screen_knobs(run, items1, screened)
    ran.append(run.stages.evaluated - ran[0])
    base = baseline_plan(run.model, req.gpu[0], req.max_gpus)
    full = _rescreen_if_bound_fails(run, screened, _refine(run, screened, ({**base, "requests": run.full_n},)))
    ran.append(run.stages.evaluated - ran[0] - ran[1])
    full_ok, ranked = _rank(run, screened, full)
    interrupted = run.stages.interrupted or guard.hit
    baseline = _baseline(run, base, full_ok, interrupted)
    out = {
        "command": "plan serve", "model": run.model.name, "gpu": list(req.gpu), "max_gpus": req.max_gpus,
        "slo": run.slo.to_dict() | {"max_queueing_p50_s": run.limit},
        "precisions": {"searched": [f"{w}/{kv}" for w, kv in pairs], "why": why, "per_gpu": runs},
        # MoE models only, so a dense model's answer is the one before EP was searched
        **({"expert_parallel": {"searched": list(run.eps), "why": run.ep_why,
                                "one_group": req.one_ep_group}} if run.model.is_moe else {}),
        "workload": run.wl.summary(), "objective": run.objective.name,
        "objective_metric": run.objective.metric,
        # interrupted before any full-size run: the best screened plan is the best found so far
        "best": full_ok[0] if full_ok else (ranked[0] if ranked and interrupted else None), "ranked": ranked,
        "evaluated": run.stages.evaluated, "space_size": raw, "pruned": run.pruned.as_dict(), "errors": run.errors,
        "baseline": baseline,
        "stages": {"screen_requests": run.screen_n, "full_requests": run.full_n, "layouts": len(items1),
                   "knob_variants": len(items2), "refined": len(full),
                   "goodput_bound": run.bound_check,
                   "simulated": dict(zip(("screen", "knobs", "refine"), ran)),
                   "same_simulation": run.stages.shared},
        "pareto": pareto_summary(ranked, run.pareto_objs, run.options),
        "interrupted": interrupted,
        "search_wall_s": time.perf_counter() - t0,
    }
    return _finish(run, out, baseline, interrupted, guard)


def _finish(run: _Run, out: dict, baseline: dict, interrupted: bool, guard: SigintGuard) -> dict:
    """Explain the result; a Ctrl-C while explaining counts as an interrupt too."""
    from parasim.search.explain import explain

    out["explanation"] = explain({**out, "baseline": baseline if baseline.get("metrics") else None},
                                 run.objective, run.options, SERVE_OBJECTIVES, kind="serve")
    out["interrupted"] = interrupted or guard.hit
    out["_workload_keys"] = run.regen  # for emit_yaml_mapping; the CLI takes it out before printing
    return out


def emit_yaml_mapping(out: dict, req: ServeSearch, yaml_path: Path) -> dict:
    """The winner as a `parasim serve -c` config: plan keys, the workload's generator keys (or its
    trace), the SLOs. Model files and folders and the trace are absolute paths, so the file runs
    from any directory."""
    best = out["best"]
    regen = out["_workload_keys"]
    cfg: dict[str, Any] = {"model": model_reference(req.model), "gpu": best["gpu"], "gpus": best["gpus"]}
    cfg.update(plan_mapping(best))
    cfg.update(regen)
    slo = req.slo()
    cfg.update({f"slo_{n}": getattr(slo, f"{n}_s") for n in slo.names})
    if slo.per_request:
        cfg["attainment"] = slo.attainment
    if slo.itl_s is not None:
        cfg["itl_percentile"] = slo.itl_percentile
    if req.max_queueing_p50 is not None:
        cfg["max_queueing_p50"] = req.max_queueing_p50
    return cfg
