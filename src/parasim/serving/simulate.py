"""`simulate(model, cluster, plan, requests, slo, seed) -> ServingResult`: the public entry.

Builds the engine instances of a plan (replicas x pipeline virtual engines, or the two pools of
a disaggregated plan), their KV pools from the memory model and their iteration cost, checks the
KV caches against the workload (`kv_fit`: unservable requests, infeasible plans), runs the event
loop, and turns the request columns into metrics.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parasim import __version__
from parasim.cost.comm import kv_link
from parasim.cost.dtypes import dtype_bytes
from parasim.cost.energy import cost_usd, energy_by_phase_j, energy_j
from parasim.cost.expert_padding import expert_padding_bytes_per_gpu
from parasim.cost.memory import MAX_ACTIVATION_TOKENS, KVBudget, kv_budget, kv_cache_bytes_per_token, sliding_kv_share
from parasim.errors import InputError
from parasim.serving.engine import Instance, Loop
from parasim.serving.frontend import processor_sharing_release_s
from parasim.serving.autoscale import Autoscaler
from parasim.serving.context_pass import SeparateContextCost
from parasim.serving.itercost import IterationCost
from parasim.serving.overlap import overlap_cost
from parasim.serving.speculative import spec_cost, spec_memory
from parasim.serving.workflow import workflow_summary
from parasim.serving.kvcache import KVPool, peak_blocks, request_window_blocks, unservable, window_blocks
from parasim.serving.lockstep import LockstepLoop, RankCost
from parasim.serving.migration import MIGRATE_OUT_THRESHOLD, POLLING_INTERVAL_S, MigratingLoop, Migration
from parasim.serving.metrics import SLO, request_columns, slo_summary, stats, weighted_stats
from parasim.serving.plan import ServingPlan
from parasim.serving.power_phase import compute_share
from parasim.serving.recording import Recording, collect
from parasim.serving.recording import start as start_recording
from parasim.serving.reqstate import DROPPED, ReqState
from parasim.serving.resolve import resolve_plan
from parasim.serving.routers import ROUTERS
from parasim.serving.schedulers import SCHEDULERS
from parasim.serving.series import distributions, series
from parasim.serving.summary import ServingSummary
from parasim.serving.workload import Workload, as_workload
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec
from parasim.units import fmt_gib


@dataclass(kw_only=True)
class ServingResult:
    summary: dict[str, Any]
    requests: dict[str, np.ndarray] = field(repr=False)
    inputs: dict[str, Any]
    kv: dict[str, Any]
    sim_wall_s: float
    feasible: bool = True  # False: the KV cache cannot hold a single request (nothing was simulated)
    reason: str | None = None  # why not feasible (a stable key, e.g. kv_cannot_hold_request)
    message: str | None = None
    itl_gaps: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # (gap_s, count): every inter-token gap
    recording: Recording | None = field(default=None, repr=False)  # every iteration (simulate(record=True))

    def to_dict(self, *, include_requests: bool = False) -> dict[str, Any]:
        """The JSON mapping; a recorded run that ran adds `series` and `distributions` (serving.series)."""
        d = {"parasim_version": __version__, "feasible": self.feasible, "reason": self.reason,
             "message": self.message, "summary": self.summary, "inputs": self.inputs, "kv": self.kv,
             "sim_wall_s": self.sim_wall_s}
        if include_requests:
            d["requests"] = {k: v.tolist() for k, v in self.requests.items()}
        if self.recording is not None and self.recording.instances:  # a plan that cannot run has no engine to chart
            t0 = float(self.requests["arrival_s"][0]) if len(self.requests["arrival_s"]) else 0.0
            d["series"] = series(self.recording, t0, t0 + float(self.summary["makespan_s"] or 0.0))
            d["distributions"] = distributions(self.requests, self.itl_gaps)
        return d


def budget_and_batch(cls, token_budget: int | None, max_batch: int | None, model: ModelSpec) -> tuple[int, int]:
    """(token budget, max batch) an engine runs: the plan's, else the scheduler's defaults."""
    budget = token_budget or cls.default_budget or max(model.max_seq_len, 2048)
    max_batch = max_batch or cls.default_max_batch
    return int(budget), int(max_batch)


@dataclass(frozen=True, kw_only=True)
class Pool:
    """Identical engine instances of one role: `mixed`, or a disaggregated `prefill`/`decode` pool."""

    role: str
    tp: int
    pp: int
    replicas: int
    token_budget: int
    max_batch: int
    reserve_full: bool
    kvb: KVBudget  # per GPU of one replica
    blocks: int  # per engine instance (a PP virtual engine owns 1/pp of its replica's blocks)
    reserve_estimated: bool = False  # kv_reservation estimated (SGLang's admission; serving.output_estimate)


@dataclass(frozen=True, kw_only=True)
class KVFit:
    """Which requests a plan's KV caches can ever hold, and whether it can run at all."""

    pools: list[Pool]
    gpus: int
    unservable: np.ndarray  # bool per request: can never complete, even alone on an empty engine
    reason: str | None  # None = feasible
    message: str | None
    kv: dict[str, Any]  # memory breakdown and the largest request's need (per pool when disaggregated)

    @property
    def feasible(self) -> bool:
        return self.reason is None


def plan_pools(model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan) -> tuple[list[Pool], int]:
    """The plan's pools and the GPUs it occupies; raises InputError for a plan the cluster cannot hold."""
    plan = plan.resolved(model)
    cls = SCHEDULERS.get(plan.scheduler)
    budget, max_batch = budget_and_batch(cls, plan.token_budget, plan.max_batch, model)
    for name in ("pp", "prefill_pp", "decode_pp"):
        v = getattr(plan, name)
        if v is not None and v > model.layers:
            raise InputError(name, f"{name}={v} exceeds {model.name}'s {model.layers} layers (a stage needs one)")

    def pool(role: str, tp: int, pp: int, replicas: int, reserve_full: bool, estimated: bool = False) -> Pool:
        extra_w, extra_kv = spec_memory(model, plan, tp=tp) if plan.spec_method else (0.0, 0.0)
        extra_w += expert_padding_bytes_per_gpu(model, tp=tp, pp=pp, ep=plan.ep, weights=plan.weights,
                                                padding=plan.expert_padding)
        kvb = kv_budget(model, cluster.accelerator, tp=tp, pp=pp, weights=plan.weights, kv_dtype=plan.kv,
                        block_size=plan.block_size, gpu_memory_utilization=plan.gpu_memory_utilization,
                        max_tokens=min(budget, MAX_ACTIVATION_TOKENS), max_batch=max_batch, act_bytes=dtype_bytes(plan.act_dtype),
                        ep=plan.ep, extra_weight_bytes=extra_w, extra_kv_bytes_per_token=extra_kv,
                        sliding_share=sliding_kv_share(model, plan.sliding_kv), sampler_profile=plan.sampler_profile)
        return Pool(role=role, tp=tp, pp=pp, replicas=replicas, token_budget=budget, max_batch=max_batch,
                    reserve_full=reserve_full, kvb=kvb, blocks=kvb.blocks // pp, reserve_estimated=estimated)

    if plan.is_disagg:
        pg, dg = plan.disagg_split(cluster.gpus)
        (ptp, ppp), (dtp, dpp) = plan.phase_layout("prefill"), plan.phase_layout("decode")
        return [pool("prefill", ptp, ppp, pg // (ptp * ppp), False),
                pool("decode", dtp, dpp, dg // (dtp * dpp), True)], pg + dg
    gpus = plan.gpus()
    if gpus > cluster.gpus:
        raise InputError("replicas", f"tp*pp*replicas = {plan.tp}*{plan.pp}*{plan.replicas} = {gpus} exceeds the "
                                     f"cluster's {cluster.gpus} GPUs")
    return [pool("mixed", plan.tp, plan.pp, max(plan.replicas, plan.autoscale_max or 0), plan.kv_reservation == "full",
                 plan.kv_reservation == "estimated")], gpus


def kv_fit(model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, workload_requests: Any) -> KVFit:
    """Check the plan's KV caches against the workload before simulating (vectorised, no engine).

    A request that alone can never complete (`kvcache.unservable`) is rejected on arrival and
    counted; a plan with no KV cache at all, or none that holds any request, is infeasible
    (reason `kv_cannot_hold_request`)."""
    wl = as_workload(workload_requests)
    plan = plan.resolved(model)
    pools, gpus = plan_pools(model, cluster, plan)
    cls = SCHEDULERS.get(plan.scheduler)
    P, O = wl.prompt_tokens, wl.output_tokens
    B = plan.block_size
    bad = np.zeros(len(wl), dtype=bool)
    kv: dict[str, Any] = {}
    reason = message = None
    sizes = []
    for p in pools:
        # prefill pool: the prompt only; decode pool: what a join reserves (the first token is out)
        need = (peak_blocks(P, O if p.role != "prefill" else np.ones_like(O), block=B,
                            reserve_full=p.reserve_full and p.role == "mixed")
                + request_window_blocks(P if p.role == "prefill" else P + O, *window_blocks(model, plan.sliding_kv, B),
                                        B)) * B
        info = p.kvb.to_dict() | {"kv_tokens_per_engine": p.blocks * B,
                                  "largest_request_tokens": int((P + O).max()),
                                  "largest_request_kv_tokens": int(need.max())}
        if plan.sliding_kv != "full" and model.windowed_layers:  # how the pool counts the sliding layers
            k, group = window_blocks(model, plan.sliding_kv, B)
            info["sliding_kv"] = {"mode": plan.sliding_kv, "sliding_layers": model.windowed_layers,
                                  "window_tokens": model.sliding_window,
                                  "sliding_layer_share_per_token": sliding_kv_share(model, plan.sliding_kv),
                                  "window_blocks_per_request_max": k * group}
        label = "" if p.role == "mixed" else f" ({p.role} pool)"
        where = (f"{model.name} on {cluster.accelerator.id} with tp={p.tp}, pp={p.pp}, weights={plan.weights}, "
                 f"kv={plan.kv}{label}")
        if p.blocks < 1 and reason is None:
            reason = "kv_cannot_hold_request"
            k = p.kvb
            left = f"{fmt_gib(k.kv, 2)} left" if k.kv > 0 else "nothing left"
            message = (f"{where}: no room for a KV cache: weights {fmt_gib(k.weights)} + "
                       f"activations {fmt_gib(k.activations)} + runtime {fmt_gib(k.reserved)} of "
                       f"{fmt_gib(k.usable)} usable per GPU ({left}; one {B}-token block per engine needs "
                       f"{k.kv_bytes_per_token * B * p.pp / 1e6:.1f} MB)")
        elif p.blocks >= 1:
            first = p.token_budget if (cls.chunked and p.role == "mixed") else None
            mask = unservable(P, O, capacity_blocks=p.blocks, block=B, role=p.role, reserve_full=p.reserve_full,
                              first_chunk_tokens=first, window=window_blocks(model, plan.sliding_kv, B))
            info["unservable_requests"] = int(mask.sum())
            bad |= mask
            sizes.append(f"{p.role} {p.blocks * B:,}")
            if mask.all() and reason is None:
                reason = "kv_cannot_hold_request"
                lo, hi = int(need.min()), int(need.max())
                needs = f"every request needs {hi:,}" if lo == hi else f"the requests need {lo:,} to {hi:,}"
                message = (f"{where}: the KV cache holds {p.blocks * B:,} tokens per engine and {needs} "
                           f"(prompt + output, in {B}-token blocks)")
        if p.role == "mixed":
            kv = info
        else:
            kv[p.role] = info
    if reason is None and bad.all():  # each pool holds some requests, but none fits both
        reason = "kv_cannot_hold_request"
        message = (f"{model.name} on {cluster.accelerator.id}: no request fits the KV caches of both pools "
                   f"(tokens per engine: {', '.join(sizes)})")
    if reason is not None:
        bad[:] = True
    return KVFit(pools=pools, gpus=gpus, unservable=bad, reason=reason, message=message, kv=kv)


#: IterationCost objects kept between runs (a search simulates the same engine many times): its
#: per-token-count caches are pure functions of these inputs, so sharing them changes no result
_COSTS: dict[tuple, IterationCost] = {}
_COSTS_KEPT = 64


def iteration_cost(model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, *, tp: int, pp: int,
                   cls: type[IterationCost] = IterationCost) -> IterationCost:
    """`IterationCost.for_plan` (or a subclass's, e.g. lockstep's `RankCost`), shared by runs with the same model, node type and engine fields.
    An engine's cost reads its cluster's parts and node layout (accelerator, scale-up domain,
    GPUs per node, NICs), never how many GPUs the cluster holds, so the cluster is keyed as one
    of the engine's own size: a TP-4 engine costs the same in 4, 12 or 16 GPUs (`plan serve`
    simulates it in each)."""
    if cls is IterationCost and plan.context_pass == "separate":
        cls = SeparateContextCost  # prompts in a forward of their own (serving.context_pass)
    args = IterationCost.plan_args(model, plan, tp=tp, pp=pp)
    cluster = cluster.with_(gpus=tp * pp)
    key = (model, repr(cluster), tuple(sorted(args.items()))) + ((cls,) if cls is not IterationCost else ())
    cost = _COSTS.get(key)
    if cost is None:
        if len(_COSTS) >= _COSTS_KEPT:
            del _COSTS[next(iter(_COSTS))]
        cost = _COSTS[key] = cls(model, cluster, **args)
    return cost


def _instances(model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, p: Pool, st: ReqState,
               first_idx: int) -> list[list[Instance]]:
    cls = SCHEDULERS.get(plan.scheduler)
    lockstep = _lockstep(plan)
    if lockstep:  # each rank's own part; the loop adds the group's shared MoE part (serving.lockstep)
        cost = iteration_cost(model, cluster, plan, tp=p.tp, pp=p.pp, cls=RankCost)
        sched = cls(p.token_budget, p.max_batch)
    elif plan.spec_method:  # an engine step is 1/e of a speculative iteration: its budget too
        cost = spec_cost(model, cluster, plan, tp=p.tp)
        sched = cls(cost.engine_budget(p.token_budget), p.max_batch)
    else:
        cost = (overlap_cost(model, cluster, plan, tp=p.tp) if plan.overlap != "none"
                else iteration_cost(model, cluster, plan, tp=p.tp, pp=p.pp))
        sched = cls(p.token_budget, p.max_batch)
    groups, idx = [], first_idx
    for r in range(p.replicas):
        g = []
        for _ in range(p.pp):
            g.append(Instance(idx, replica=r, role=p.role, cost=cost,
                              kv=KVPool(p.blocks, plan.block_size, plan.prefix_cache),
                              scheduler=sched, st=st, reserve_full=p.reserve_full, gpus=p.tp,
                              schedule_ahead=plan.schedule_ahead, reserve_estimated=p.reserve_estimated,
                              window=window_blocks(model, plan.sliding_kv, plan.block_size)))
            idx += 1
        groups.append(g)
    if lockstep:  # an EP group's ep one-GPU replicas are one group of the loop, its ranks
        groups = [[i for g in groups[k:k + plan.ep] for i in g] for k in range(0, len(groups), plan.ep)]
    return groups


#: attention-DP ranks (plan.ep > 1) step in lockstep (serving.lockstep); False runs them as independent
#: replicas whose experts see ep equal batches, the model before lockstep (tests compare the two)
ADP_LOCKSTEP = True


def _lockstep(plan: ServingPlan) -> bool:
    """Whether the plan's EP groups run in lockstep (the plan refuses the features that is not modelled with)."""
    return plan.ep > 1 and ADP_LOCKSTEP


def autoscaler_of(plan: ServingPlan) -> Autoscaler | None:
    if plan.autoscale_max is None:
        return None
    return Autoscaler(min_replicas=plan.replicas, max_replicas=plan.autoscale_max, target=float(plan.autoscale_target),
                      interval_s=plan.autoscale_interval_s, startup_s=float(plan.autoscale_startup_s),
                      down_delay_s=plan.autoscale_down_delay_s)


def _build_loop(model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, fit: KVFit, st: ReqState,
                max_concurrency: int | None, deps: Any = None) -> Loop:
    """The event loop over the plan's engine instances; with disaggregation, the decode pool's
    instances after the prefill pool's and the KV transfer between them (`cost.comm.kv_link`)."""
    router = ROUTERS.get(plan.router, field="router")()
    if plan.migration is not None:
        return _migrating_loop(model, cluster, plan, fit, st, router, max_concurrency, deps)
    if not plan.is_disagg:
        groups = _instances(model, cluster, plan, fit.pools[0], st, 0)
        if _lockstep(plan):
            return LockstepLoop(st, groups, router, cost=groups[0][0].cost, max_concurrency=max_concurrency, deps=deps,
                                answer_delay_s=plan.output_delay_s, max_queued=plan.max_queued)
        return Loop(st, groups, router, max_concurrency=max_concurrency, deps=deps, answer_delay_s=plan.output_delay_s,
                    max_queued=plan.max_queued, autoscaler=autoscaler_of(plan))
    pre, dec = fit.pools
    groups = _instances(model, cluster, plan, pre, st, 0)
    decode_groups = _instances(model, cluster, plan, dec, st, sum(len(g) for g in groups))
    per_token = kv_cache_bytes_per_token(model, dtype_bytes(plan.kv))
    link = kv_link(cluster, lanes=min(pre.tp, dec.tp), same_node=fit.gpus <= cluster.gpus_per_node)
    target = st.prefill_target

    def transfer_s(rid: int) -> float:
        return link.time_s(target[rid] * per_token)

    return Loop(st, groups, router, decode_groups=decode_groups, transfer_s=transfer_s,
                max_concurrency=max_concurrency, deps=deps, answer_delay_s=plan.output_delay_s, max_queued=plan.max_queued)


def _migrating_loop(model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, fit: KVFit, st: ReqState, router,
                    max_concurrency: int | None, deps: Any) -> MigratingLoop:
    """Colocated replicas with live migration (serving.migration): the KV path between two
    replicas is NVLink when both sit in one node, the NICs otherwise, each of a replica's tp*pp
    GPUs sending its shard."""
    pool = fit.pools[0]
    groups = _instances(model, cluster, plan, pool, st, 0)
    g = plan.tp * plan.pp
    node = [(r * g // cluster.gpus_per_node, ((r + 1) * g - 1) // cluster.gpus_per_node) for r in range(pool.replicas)]
    links = {same: kv_link(cluster, lanes=g, same_node=same) for same in (True, False)}

    def link_of(a: Instance, b: Instance):
        (a0, a1), (b0, b1) = node[a.replica], node[b.replica]
        return links[a0 == a1 == b0 == b1]

    mig = Migration(interval_s=plan.migration_interval_s or POLLING_INTERVAL_S,
                    threshold=plan.migrate_out_threshold or MIGRATE_OUT_THRESHOLD,
                    bytes_per_token=kv_cache_bytes_per_token(model, dtype_bytes(plan.kv)), link_of=link_of)
    return MigratingLoop(st, groups, router, max_concurrency=max_concurrency, deps=deps,
                         answer_delay_s=plan.output_delay_s, max_queued=plan.max_queued, migration=mig)


def _engine_columns(wl: Workload, plan: ServingPlan, max_concurrency: int | None, deps: Any) -> tuple:
    """The request columns the engine's loop starts from (ReqState's arguments). A request reaches the
    engine when the API server has handed it over (`frontend_s_per_request`, serving.frontend), else
    when it was sent; the metrics keep counting from the workload's own arrival times (the client's send)."""
    arrival_s = wl.arrival_s
    if plan.frontend_s_per_request:
        if max_concurrency is not None or deps is not None:
            raise InputError("frontend_s_per_request", "the API-server term needs open-loop arrivals (a trace, a "
                                                       "rate or a burst); a closed-loop client or a workflow sends "
                                                       "requests as answers come back, which it does not model")
        arrival_s = processor_sharing_release_s(wl.arrival_s, plan.frontend_s_per_request)
    return arrival_s, wl.prompt_tokens, wl.output_tokens, wl.prefix_id, wl.prefix_tokens


def simulate(model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, workload_requests: Any,
             slo: Any = None, seed: int = 0, max_concurrency: int | None = None,
             record: bool = False, deps: Any = None, horizon_s: float | None = None) -> ServingResult:
    """Simulate serving `workload_requests` (a Workload, or Request records / mappings) with `plan`.

    `max_concurrency` makes the client closed-loop, as benchmark clients' `--max-concurrency N`:
    at most N requests are out at once, request k + N is sent when the k-th comes back (never
    before its own arrival time), and its TTFT and E2E count from that send time. `deps`
    (serving.workflow.Dependencies of a workflow workload) sends each call when its parents have
    finished, TTFT and E2E counting from then. `record` keeps every iteration
    (`ServingResult.recording`, for timelines and figures; off costs nothing). With `horizon_s`,
    a run still busy past that instant stops there: the result is not feasible, reason
    `past_horizon`, `summary["makespan_s"]` a time past the horizon its makespan is known to reach and
    `summary["unservable"]` the requests rejected on arrival, the rest of the summary null (plan
    serve's stability check asks only whether a burst ends by a deadline).

    Raises InputError for bad inputs only. A plan whose KV cache cannot hold any request comes back
    as a result with `feasible=False` and the reason; requests that alone can never fit are
    rejected on arrival and counted (`summary["unservable"]`, included in `dropped`)."""
    wall0 = time.perf_counter()
    wl: Workload = as_workload(workload_requests)
    slo_ = SLO.of(slo)
    if max_concurrency is not None and (int(max_concurrency) != max_concurrency or max_concurrency < 1):
        raise InputError("max_concurrency", f"must be a positive whole number of requests, got {max_concurrency}")
    if deps is not None and max_concurrency is not None:
        raise InputError("max_concurrency", "a workflow decides when each call is sent; it has no closed-loop client")
    if deps is not None and len(deps.parents) != len(wl):
        raise InputError("workflow", "the dependencies do not describe this workload")
    resolution = resolve_plan(model, cluster.accelerator, plan)
    plan = resolution.plan
    fit = kv_fit(model, cluster, plan, wl)
    gpus = fit.gpus
    st = ReqState(*_engine_columns(wl, plan, max_concurrency, deps))
    budget, max_batch = fit.pools[0].token_budget, fit.pools[0].max_batch
    inputs = {"model": model.name, "gpu": cluster.accelerator.id, "cluster_gpus": cluster.gpus,
              "plan": plan.to_mapping(), "slo": slo_.to_dict(), "seed": seed,
              "workload": wl.summary(), "token_budget": budget, "max_batch": max_batch,
              "iteration_overhead_s": plan.overhead_s, "max_concurrency": max_concurrency,
              "precision": resolution.precision, "notes": list(resolution.notes)}
    if not fit.feasible:
        for rid in range(st.n):
            st.state[rid] = DROPPED
        return ServingResult(summary=infeasible_summary(wl, gpus, slo_), requests=request_columns(st, wl),
                             inputs=inputs, kv=fit.kv, sim_wall_s=time.perf_counter() - wall0, feasible=False,
                             reason=fit.reason, message=fit.message,
                             recording=Recording(instances=[], pp=plan.pp) if record else None)
    for rid in np.flatnonzero(fit.unservable).tolist():
        st.state[rid] = DROPPED
    loop = _build_loop(model, cluster, plan, fit, st, max_concurrency, deps)
    unserved = int(fit.unservable.sum())
    loop.dropped = unserved
    if record:
        start_recording(loop.instances)
    if horizon_s is not None:
        loop.horizon_s = horizon_s
    _run(loop)
    if loop.cut_s is not None:
        return ServingResult(summary={**infeasible_summary(wl, gpus, slo_), "makespan_s": loop.cut_s,
                                      "unservable": unserved},
                             requests=request_columns(st, wl), inputs=inputs, kv=fit.kv,
                             sim_wall_s=time.perf_counter() - wall0, feasible=False, reason="past_horizon",
                             message=f"still running at {loop.cut_s:.6g} s, past the horizon of {horizon_s:.6g} s")
    if loop.auto is not None:
        loop.clock.close(loop.makespan)
    if plan.output_delay_s:
        _delay_reports(st, plan.output_delay_s)
    if max_concurrency is not None or deps is not None:  # each request was sent when it was
        wl = Workload(np.frombuffer(st.arrival_s, dtype=np.float64).copy(), wl.prompt_tokens, wl.output_tokens,
                      wl.prefix_id, wl.prefix_tokens)
    summary, itl = summarize(st, wl, loop, cluster, gpus, slo_, unserved)
    if loop.auto is not None:
        summary["autoscale"] = autoscale_summary(loop)
    if plan.migration is not None:
        summary["migration"] = loop.mig.summary()
    cols = request_columns(st, wl)
    if deps is not None:
        summary["workflows"] = workflow_summary(deps, np.frombuffer(st.finish_s, dtype=np.float64), cols["completed"])
    recording = collect(loop.instances, plan.pp, max_batch) if record else None
    return ServingResult(summary=summary, requests=cols, inputs=inputs, kv=fit.kv,
                         sim_wall_s=time.perf_counter() - wall0, itl_gaps=itl, recording=recording)


#: `PARASIM_FASTPATH=auto` takes the compiled loop (serving.fastloop) from this many requests on:
#: there even the run that compiles it (about 9 s of CPU, once per machine) beats the Python loop's
#: ~20 us per request; a cached kernel pays from ~15,000 (docs/serving.md "## Speed"), `=1` forces it
FAST_PATH_MIN_REQUESTS = 500_000


def _run(loop: Loop) -> None:
    """Run the event loop: the compiled copy (serving.fastloop) when the run is in its scope and
    large enough (`PARASIM_FASTPATH`: auto, the default; 1 = whatever the size; 0 = never), else
    the Python engine. Both give byte-identical results."""
    mode = os.environ.get("PARASIM_FASTPATH", "auto").strip().lower() or "auto"
    if mode not in ("0", "1", "auto"):
        raise InputError("PARASIM_FASTPATH", f"must be 0, 1 or auto, got {mode!r}")
    if mode == "0" or (mode == "auto" and loop.st.n < FAST_PATH_MIN_REQUESTS):
        loop.run()
        return
    try:
        from parasim.serving import fastloop
    except Exception as e:  # numba missing or one that rejects the kernel: an error only when asked for
        if mode == "1":
            raise InputError("PARASIM_FASTPATH", f"1 needs numba, which cannot be imported ({e}); "
                                                 "install it or set PARASIM_FASTPATH=auto") from None
        loop.run()
        return
    why = fastloop.scope_gap(loop)
    if mode == "1" and why:  # forced: say so rather than quietly run the Python engine
        raise InputError("PARASIM_FASTPATH", f"1: the compiled loop does not run {why}; set auto "
                                             "(the Python engine for such runs) or 0")
    if why:
        loop.run()
    else:
        fastloop.run(loop)


def _held_s(loop: Loop, makespan: float) -> list[float]:
    """Seconds each instance's GPUs were held: the run (first arrival to last token) for a fixed
    plan; with autoscaling, its replica's started-to-released time (serving.autoscale.ReplicaClock)."""
    if loop.auto is None:
        return [makespan] * len(loop.instances)
    per_group = len(loop.groups[0])
    return [loop.clock.alive_s[k // per_group] for k in range(len(loop.instances))]


def autoscale_summary(loop: Loop) -> dict[str, Any]:
    """Replicas over the run (time-weighted mean from the autoscaler's looks, peak) and its scale events."""
    a, samples = loop.auto, loop.replica_samples
    end = max(loop.makespan, samples[-1][0])
    area = sum(n * (t1 - t) for (t, n), (t1, _) in zip(samples, [*samples[1:], (end, 0)]))
    return {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas, "target_in_flight": a.target,
            "interval_s": a.interval_s, "startup_s": a.startup_s, "down_delay_s": a.down_delay_s,
            "replicas_mean": area / end if end > 0 else float(a.min_replicas),
            "replicas_peak": max(n for _, n in samples), "scale_ups": a.ups, "scale_downs": a.downs}


def _delay_reports(st: ReqState, delay_s: float) -> None:
    """Tokens become visible `delay_s` after their iteration ends (ServingPlan.output_delay_s):
    first-token and finish times move by it; the gaps between tokens do not change."""
    for col in (st.first_token_s, st.finish_s):
        a = np.frombuffer(col, dtype=np.float64)
        a[a >= 0] += delay_s


def infeasible_summary(wl: Workload, gpus: int, slo: SLO) -> dict[str, Any]:
    """The summary of a plan that cannot run (ServingSummary.infeasible), as its JSON mapping."""
    return ServingSummary.infeasible(len(wl), gpus, slo_summary(slo)).to_dict()


def summarize(st: ReqState, wl: Workload, loop: Loop, cluster: ClusterSpec, gpus: int,
              slo: SLO, unservable: int = 0) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """The summary (a ServingSummary's mapping), and the pooled inter-token gaps (gap_s, count) it
    was computed from."""
    cols = request_columns(st, wl)
    done = cols["completed"]
    n_done = int(done.sum())
    t0 = float(wl.arrival_s[0])
    makespan = max(loop.makespan - t0, 1e-12)
    out_tokens = int(wl.output_tokens[done].sum())
    in_tokens = int(wl.prompt_tokens[done].sum())
    s: dict[str, Any] = {"requests": len(wl), "completed": n_done, "dropped": loop.dropped,
                         "makespan_s": makespan, "input_tokens": in_tokens, "output_tokens": out_tokens,
                         "requests_per_s": n_done / makespan, "input_tokens_per_s": in_tokens / makespan,
                         "output_tokens_per_s": out_tokens / makespan,
                         "total_tokens_per_s": (in_tokens + out_tokens) / makespan,
                         "preemptions": int(cols["preemptions"].sum()),
                         "output_tokens_emitted": int(np.frombuffer(st.emitted, dtype=np.int64).sum())}
    for name in ("ttft", "tpot", "e2e", "queueing"):
        s.update(stats(cols[f"{name}_s"], name))
    # inter-token latencies: decode-step gaps weighted by the decoders that continued, plus the
    # per-request gaps off the step grid (first decode step after a join, resumes)
    vals, wts = [np.asarray(st.extra_gaps_s, dtype=np.float64)], [np.ones(len(st.extra_gaps_s))]
    for inst in loop.instances:
        t = np.frombuffer(inst.step_end_s, dtype=np.float64)
        if t.size > 1:
            vals.append(np.diff(t))
            wts.append(np.frombuffer(inst.step_continuing, dtype=np.int64)[1:].astype(np.float64))
    itl = (np.concatenate(vals), np.concatenate(wts))
    s.update(weighted_stats(*itl, "itl"))
    s.update(slo_summary(slo, cols, itl, makespan))
    acc = cluster.accelerator
    e = 0.0
    busy_gpu_s = 0.0
    kv_util = []
    held = _held_s(loop, makespan)
    # the busy time's compute-saturated share, for the power split (serving.power_phase)
    share = compute_share(loop.instances[0].cost, wl.prompt_tokens[done], wl.output_tokens[done],
                          sum(min(i.busy_s, h) * i.gpus for i, h in zip(loop.instances, held)))
    idle_j = 0.0
    for inst, held_s in zip(loop.instances, held):
        util = min(inst.busy_s / held_s, 1.0) if held_s > 0 else 0.0
        e += energy_j(acc, inst.gpus, held_s, util, share)
        idle_j += energy_j(acc, inst.gpus, held_s, 0.0)
        busy_gpu_s += inst.busy_s * inst.gpus
        kv_util.append(inst.kv_block_s / (inst.kv.capacity * makespan))
    if loop.auto is None:  # a fixed plan holds all its GPUs for the whole run, idle or not
        held_gpu_s, usd = gpus * makespan, cost_usd(acc, gpus, makespan)
    else:  # each replica from the moment it was asked for to its release
        held_gpu_s = sum(h * i.gpus for i, h in zip(loop.instances, held))
        usd = sum(cost_usd(acc, i.gpus, h) for i, h in zip(loop.instances, held))
    s["kv_utilization_mean"] = float(np.mean(kv_util))
    s["kv_utilization_peak"] = float(max((i.kv.capacity - i.kv.min_free) / i.kv.capacity for i in loop.instances))
    s["peak_running"] = max(i.peak_running for i in loop.instances)
    s["iterations"] = sum(i.iterations for i in loop.instances)
    s["gpus"] = gpus
    s["gpu_hours"] = held_gpu_s / 3600.0
    s["busy_fraction"] = busy_gpu_s / held_gpu_s
    s["energy_j"] = e
    s["energy_j_per_token"] = e / out_tokens if out_tokens else None
    if acc.memory_bound_power_fraction < 1.0:  # the power split applies: its three parts (cost.energy)
        parts = energy_by_phase_j(acc, e, idle_j, share)
        s.update(energy_idle_j=parts["idle"], energy_compute_bound_j=parts["compute_bound"],
                 energy_memory_bound_j=parts["memory_bound"])
    s["cost_usd"] = usd
    s["cost_usd_per_m_tokens"] = usd / out_tokens * 1e6 if out_tokens else None
    s["prefix_cache_hits"] = sum(i.kv.prefix_hits for i in loop.instances)
    s["shed"] = loop.shed  # refused by admission control (plan.max_queued), part of `dropped`
    out = ServingSummary(**s, unservable=unservable).to_dict()
    if isinstance(loop, LockstepLoop):  # attention-DP ranks: what waiting for the slowest rank cost
        out["lockstep"] = loop.summary()
    return out, itl
