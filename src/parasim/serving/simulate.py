"""`simulate(model, cluster, plan, requests, slo, seed) -> ServingResult`: the public entry.

Builds the engine instances of a plan (replicas x pipeline virtual engines, or the two pools of
a disaggregated plan), their KV pools from the memory model and their iteration cost, runs the
event loop, and turns the request columns into metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parasim import __version__
from parasim.cost.dtypes import dtype_bytes
from parasim.cost.energy import cost_usd, energy_j
from parasim.cost.memory import kv_cache_bytes_per_token
from parasim.errors import InputError
from parasim.serving.engine import ROUTERS, Instance, Loop, ReqState
from parasim.serving.itercost import IterationCost
from parasim.serving.kvcache import KVBudget, KVPool, kv_budget
from parasim.serving.metrics import SLO, request_columns, slo_mask, stats, weighted_stats
from parasim.serving.plan import ServingPlan
from parasim.serving.schedulers import SCHEDULERS
from parasim.serving.workload import Workload, as_workload
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec


@dataclass(kw_only=True)
class ServingResult:
    summary: dict[str, Any]
    requests: dict[str, np.ndarray] = field(repr=False)
    inputs: dict[str, Any]
    kv: dict[str, Any]
    sim_wall_s: float

    def to_dict(self, *, include_requests: bool = False) -> dict[str, Any]:
        d = {"parasim_version": __version__, "summary": self.summary, "inputs": self.inputs, "kv": self.kv,
             "sim_wall_s": self.sim_wall_s}
        if include_requests:
            d["requests"] = {k: v.tolist() for k, v in self.requests.items()}
        return d


def _budget_and_batch(cls, plan: ServingPlan, model: ModelSpec) -> tuple[int, int]:
    budget = plan.token_budget or cls.default_budget or max(model.max_seq_len, 2048)
    max_batch = plan.max_batch or cls.default_max_batch
    return int(budget), int(max_batch)


def _pool(model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, *, tp: int, replicas: int, role: str,
          st: ReqState, first_idx: int, reserve_full: bool) -> tuple[list[list[Instance]], KVBudget, IterationCost]:
    cls = SCHEDULERS.get_cls(plan.scheduler)
    budget, max_batch = _budget_and_batch(cls, plan, model)
    cost = IterationCost(model, cluster, tp=tp, pp=plan.pp, weights=plan.weights, kv_dtype=plan.kv,
                         act_dtype=plan.act_dtype, overhead_s=plan.overhead_s,
                         eager_prefill_layer_s=plan.eager_prefill_layer_s or 0.0)
    kvb = kv_budget(model, cluster.accelerator, tp=tp, pp=plan.pp, weights=plan.weights, kv_dtype=plan.kv,
                    block_size=plan.block_size, gpu_memory_utilization=plan.gpu_memory_utilization,
                    max_tokens=min(budget, 1 << 16), max_batch=max_batch, act_bytes=dtype_bytes(plan.act_dtype))
    blocks = kvb.blocks // plan.pp
    if blocks < 1:
        raise InputError("pp", f"pp={plan.pp} leaves no KV block per pipeline virtual engine")
    sched = cls(budget, max_batch)
    groups, idx = [], first_idx
    for r in range(replicas):
        g = []
        for _ in range(plan.pp):
            g.append(Instance(idx, replica=r, role=role, cost=cost, kv=KVPool(blocks, plan.block_size, plan.prefix_cache),
                              scheduler=sched, st=st, reserve_full=reserve_full, gpus=tp))
            idx += 1
        groups.append(g)
    return groups, kvb, cost


def simulate(model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, workload_requests: Any,
             slo: Any = None, seed: int = 0) -> ServingResult:
    """Simulate serving `workload_requests` (a Workload, or Request records / mappings) with `plan`."""
    wall0 = time.perf_counter()
    wl: Workload = as_workload(workload_requests)
    slo_ = SLO.of(slo)
    if plan.router not in ROUTERS:
        raise InputError("router", f"unknown router '{plan.router}'; choose one of {', '.join(ROUTERS)}")
    st = ReqState(wl.arrival_s, wl.prompt_tokens, wl.output_tokens, wl.prefix_id, wl.prefix_tokens)
    reserve_full = plan.kv_reservation == "full"
    decode_groups = None
    transfer = None
    if plan.is_disagg:
        pg, dg = plan.disagg_split(cluster.gpus)
        ptp, dtp = plan.prefill_tp or plan.tp, plan.decode_tp or plan.tp
        groups, kvb, cost = _pool(model, cluster, plan, tp=ptp, replicas=pg // (ptp * plan.pp), role="prefill", st=st,
                                  first_idx=0, reserve_full=False)
        n_pre = sum(len(g) for g in groups)
        decode_groups, kvd, _ = _pool(model, cluster, plan, tp=dtp, replicas=dg // (dtp * plan.pp), role="decode",
                                      st=st, first_idx=n_pre, reserve_full=True)
        kv_info = {"prefill": kvb.to_dict(), "decode": kvd.to_dict()}
        per_token = kv_cache_bytes_per_token(model, dtype_bytes(plan.kv))
        acc = cluster.accelerator
        same_node = pg + dg <= cluster.gpus_per_node
        lanes = min(ptp, dtp)
        if same_node:
            bw, lat = acc.link_bw_bytes_per_s * acc.efficiency.nvlink_busbw * lanes, acc.efficiency.nvlink_latency_s
        else:
            bw, lat = cluster.nic_bw_bytes_per_s_per_gpu * acc.efficiency.network_busbw * lanes, acc.efficiency.network_latency_s
        target = st.target

        def transfer(rid: int) -> float:
            return target[rid] * per_token / bw + lat

        gpus = pg + dg
    else:
        gpus = plan.tp * plan.pp * plan.replicas
        if gpus > cluster.gpus:
            raise InputError("replicas", f"tp*pp*replicas = {plan.tp}*{plan.pp}*{plan.replicas} = {gpus} exceeds the "
                                         f"cluster's {cluster.gpus} GPUs")
        groups, kvb, cost = _pool(model, cluster, plan, tp=plan.tp, replicas=plan.replicas, role="mixed", st=st,
                                  first_idx=0, reserve_full=reserve_full)
        kv_info = kvb.to_dict()
    loop = Loop(st, groups, ROUTERS[plan.router](), decode_groups=decode_groups, transfer_s=transfer)
    loop.run()
    summary = summarize(st, wl, loop, cluster, gpus, slo_)
    wall = time.perf_counter() - wall0
    inputs = {"model": model.name, "gpu": cluster.accelerator.id, "cluster_gpus": cluster.gpus,
              "plan": plan.to_mapping(), "slo": {"ttft_s": slo_.ttft_s, "tpot_s": slo_.tpot_s}, "seed": seed,
              "workload": wl.summary(), "token_budget": _budget_and_batch(SCHEDULERS[plan.scheduler], plan, model)[0],
              "max_batch": _budget_and_batch(SCHEDULERS[plan.scheduler], plan, model)[1],
              "iteration_overhead_s": plan.overhead_s}
    return ServingResult(summary=summary, requests=request_columns(st, wl), inputs=inputs, kv=kv_info, sim_wall_s=wall)


def summarize(st: ReqState, wl: Workload, loop: Loop, cluster: ClusterSpec, gpus: int, slo: SLO) -> dict[str, Any]:
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
                         "output_tokens_emitted": int(np.frombuffer(st.gen, dtype=np.int64).sum())}
    for name in ("ttft", "tpot", "e2e", "queueing"):
        s.update(stats(cols[f"{name}_s"], name))
    # inter-token latencies: decode-step gaps weighted by the decoders that continued, plus the
    # per-request gaps off the step grid (first decode step after a join, resumes)
    vals, wts = [np.asarray(st.extra_gaps, dtype=np.float64)], [np.ones(len(st.extra_gaps))]
    for inst in loop.instances:
        t = np.frombuffer(inst.dtimes, dtype=np.float64)
        if t.size > 1:
            vals.append(np.diff(t))
            wts.append(np.frombuffer(inst.dweight, dtype=np.int64)[1:].astype(np.float64))
    s.update(weighted_stats(np.concatenate(vals), np.concatenate(wts), "itl"))
    if slo.given:
        ok = slo_mask(cols, slo)
        s["slo_attainment"] = float(ok.sum() / len(wl))
        s["goodput_requests_per_s"] = float(ok.sum() / makespan)
    else:
        s["slo_attainment"] = None
        s["goodput_requests_per_s"] = None
    acc = cluster.accelerator
    e = 0.0
    busy_gpu_s = 0.0
    kv_util = []
    for inst in loop.instances:
        util = min(inst.busy_s / makespan, 1.0)
        e += energy_j(acc, inst.gpus, makespan, util)
        busy_gpu_s += inst.busy_s * inst.gpus
        kv_util.append(inst.kv_block_s / (inst.kv.capacity * makespan))
    s["kv_utilization_mean"] = float(np.mean(kv_util))
    s["kv_utilization_peak"] = float(max((i.kv.capacity - i.kv.min_free) / i.kv.capacity for i in loop.instances))
    s["peak_running"] = max(i.peak_running for i in loop.instances)
    s["iterations"] = sum(i.iterations for i in loop.instances)
    s["gpus"] = gpus
    s["gpu_hours"] = gpus * makespan / 3600.0
    s["busy_fraction"] = busy_gpu_s / (gpus * makespan)
    s["energy_j"] = e
    s["energy_j_per_token"] = e / out_tokens if out_tokens else None
    usd = cost_usd(acc, gpus, makespan)
    s["cost_usd"] = usd
    s["cost_usd_per_m_tokens"] = usd / out_tokens * 1e6 if out_tokens else None
    s["prefix_cache_hits"] = sum(i.kv.prefix_hits for i in loop.instances)
    return s
