"""A training step on a mixed cluster: node groups of different GPU types (specs/mixed.py).

Two placements, as the heterogeneous-training planners search them (Metis, ATC'24; Holmes, 2023):

* `stages`: every pipeline is cut across the groups, each group holding whole stages (a stage
  never spans two GPU types: group k holds gpus_k / (tp*cp*dp) consecutive ranks, in the order the
  groups were given). Per-rank layer times differ, so the layers are split unevenly: `balanced`
  gives each rank layers in proportion to its speed (water-filling: the next layer goes to the
  rank whose stage would end soonest, counting the embedding and the LM head, which minimises
  the slowest stage of this linear model), then local moves of one layer that the simulator
  keeps when the step gets shorter. `even` is the homogeneous split (cost/partition.py), the
  default when every group is the same GPU type (the plain run); a comma list gives the layers
  per rank. Each stage's DP reduction stays inside its group, on its own NICs.
* `replicas`: each pipeline replica lives in one group (gpus_k / (tp*pp*cp) replicas there) and
  the DP groups cross types: the gradient reduction, like the pipeline sends, is costed at the
  slowest group's NICs. `balanced` gives the replicas of faster groups more micro-batches
  (the global batch is unchanged; a group runs ceil(its micro-batches / its replicas) per
  replica); `even` gives every replica the same number.

Everything else is the homogeneous step (`step.run_step`, `memory.peak_memory`) per group; the
group that finishes last sets the step. Memory is checked per group against its own HBM.
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import Any

from parasim.cost.flops import causal_context
from parasim.cost.partition import chunk_layers as default_chunk_layers
from parasim.errors import InputError
from parasim.mathx import cdiv
from parasim.specs.mixed import MixedCluster
from parasim.specs.model import ModelSpec
from parasim.training.memory import MemoryBreakdown, peak_memory
from parasim.training.plan import TrainingPlan
from parasim.training.result import TrainingResult, flops_per_token
from parasim.training.schedules import get_schedule
from parasim.training.step import OpRecord, PlanCosts, StepTiming, plan_costs, run_step

PLACEMENTS = ("stages", "replicas")
SPLITS = ("balanced", "even")
#: most rounds of one-layer moves the simulator tries after the water-filling split (each round
#: simulates one step per GPU group); a round that improves nothing ends the search
LOCAL_MOVE_ROUNDS = 8


def check_options(placement: str, split: str) -> None:
    if placement not in PLACEMENTS:
        raise InputError("mixed-placement", f"'{placement}' is not one of {', '.join(PLACEMENTS)}")
    if split not in SPLITS and not all(p.strip().isdigit() for p in split.split(",")):
        raise InputError("mixed-split", f"'{split}' is not one of {', '.join(SPLITS)} or a comma list of "
                                        "layers per pipeline rank (e.g. 10,10,6,6)")


def stage_ranks(mixed: MixedCluster, plan: TrainingPlan) -> list[range]:
    """The pipeline ranks each group holds (`stages` placement)."""
    per_stage = plan.tp * plan.cp * plan.dp
    out, start = [], 0
    for g in mixed.groups:
        if g.gpus % per_stage:
            raise InputError("pp", f"pp={plan.pp} makes stages of tp*cp*dp = {per_stage} GPUs, but the "
                                   f"{g.accelerator.id} group has {g.gpus}: a stage never spans two GPU types, so "
                                   "every group's GPU count must be a multiple of tp*cp*dp (choose pp, or "
                                   "--mixed-placement replicas)")
        out.append(range(start, start + g.gpus // per_stage))
        start += g.gpus // per_stage
    return out


def group_replicas(mixed: MixedCluster, plan: TrainingPlan) -> list[int]:
    """Pipeline replicas per group (`replicas` placement)."""
    per_rep = plan.tp * plan.pp * plan.cp
    for g in mixed.groups:
        if g.gpus % per_rep:
            raise InputError("pp", f"a pipeline replica holds tp*pp*cp = {per_rep} GPUs, but the {g.accelerator.id} "
                                   f"group has {g.gpus}: with --mixed-placement replicas every group's GPU count "
                                   "must be a multiple of tp*pp*cp")
    return [g.gpus // per_rep for g in mixed.groups]


def feasible_placements(mixed: MixedCluster, *, tp: int, pp: int, cp: int, dp: int) -> list[str]:
    """The placements a layout allows: whole stages, whole replicas, per group (for `plan train`)."""
    out = []
    if all(g.gpus % (tp * cp * dp) == 0 for g in mixed.groups):
        out.append("stages")
    if all(g.gpus % (tp * pp * cp) == 0 for g in mixed.groups):
        out.append("replicas")
    return out


def _layer_s(k: PlanCosts) -> float:
    """One layer, one micro-batch, forward and backward with its exposed communication."""
    lt = k.lt
    return lt.fwd_compute + lt.fwd_comm + lt.bwd_compute + lt.bwd_comm + k.fsdp[0] + k.fsdp[1]


def _edge_s(k: PlanCosts, r: int, pp: int) -> float:
    """The embedding on the first rank, the LM head and loss on the last: per micro-batch."""
    return (k.emb + k.emb_b if r == 0 else 0.0) + (3 * k.head + k.head_accum + k.ce_f + k.ce_b if r == pp - 1 else 0.0)


def water_fill(layers: int, per_layer: list[float], fixed: list[float], least: int) -> list[int]:
    """Layers per rank minimising max(fixed[r] + n[r] * per_layer[r]), each rank at least `least`:
    the next layer always goes where the stage would end soonest (ties: the lower rank)."""
    n = [least] * len(per_layer)
    heap = [(fixed[r] + (least + 1) * per_layer[r], r) for r in range(len(per_layer))]
    heapq.heapify(heap)
    for _ in range(layers - least * len(per_layer)):
        _, r = heapq.heappop(heap)
        n[r] += 1
        heapq.heappush(heap, (fixed[r] + (n[r] + 1) * per_layer[r], r))
    return n


def _chunks(totals: list[int], v: int) -> list[list[int]]:
    """Rank totals cut into v chunks as evenly as possible (the earlier chunks take the spare layers)."""
    return [[t // v + (1 if c < t % v else 0) for c in range(v)] for t in totals]


def _vcounts(counts: list[list[int]]) -> tuple[int, ...]:
    """Layers per virtual stage g = chunk * pp + rank."""
    pp, v = len(counts), len(counts[0])
    return tuple(counts[g % pp][g // pp] for g in range(pp * v))


def _explicit_split(model: ModelSpec, plan: TrainingPlan, split: str) -> list[int]:
    totals = [int(p) for p in split.split(",")]
    if len(totals) != plan.pp or sum(totals) != model.layers or min(totals) < plan.virtual_stages:
        raise InputError("mixed-split", f"give pp = {plan.pp} layer counts summing to the model's {model.layers} "
                                        f"layers, each at least virtual_stages = {plan.virtual_stages}; got {split}")
    return totals


def layer_split(model: ModelSpec, plan: TrainingPlan, costs: list[PlanCosts], split: str) -> list[list[int]]:
    """Layers per (rank, chunk) before any local move (see the module docstring)."""
    pp, v = plan.pp, plan.virtual_stages
    if split not in SPLITS:
        return _chunks(_explicit_split(model, plan, split), v)
    per_layer = [_layer_s(k) for k in costs]
    if split == "even":
        return default_chunk_layers(model.layers, pp, v)
    return _chunks(water_fill(model.layers, per_layer, [_edge_s(k, r, pp) for r, k in enumerate(costs)], v), v)


class _Stages:
    """The `stages` placement of one plan: per-rank clusters and costs, then the split and the step."""

    def __init__(self, model: ModelSpec, mixed: MixedCluster, plan: TrainingPlan, pairs: float) -> None:
        self.model, self.mixed, self.plan, self.pairs = model, mixed, plan, pairs
        self.ranks = stage_ranks(mixed, plan)
        group_costs = [plan_costs(model, g, plan, pairs) for g in mixed.groups]
        self.clusters = [g for g, rs in zip(mixed.groups, self.ranks) for _ in rs]
        self.costs = [k for k, rs in zip(group_costs, self.ranks) for _ in rs]

    def step(self, counts: list[list[int]], recorder: list[OpRecord] | None = None) -> StepTiming:
        return run_step(self.model, self.plan, self.clusters, self.costs, counts, self.pairs,
                        job_gpus=self.mixed.gpus, vcounts=_vcounts(counts), recorder=recorder)

    def improve(self, counts: list[list[int]]) -> tuple[list[list[int]], StepTiming]:
        """Local moves: one layer from the slowest rank (by the linear model) to the quickest other
        rank of each group, kept when the simulated step is shorter."""
        pp, v = self.plan.pp, self.plan.virtual_stages
        per_layer = [_layer_s(k) for k in self.costs]
        best = self.step(counts)
        for _ in range(LOCAL_MOVE_ROUNDS):
            totals = [sum(row) for row in counts]
            load = [_edge_s(k, r, pp) + totals[r] * per_layer[r] for r, k in enumerate(self.costs)]
            src = max(range(pp), key=lambda r: (load[r], -r))
            tries = []
            for rs in self.ranks:
                dst = min((r for r in rs if r != src), key=lambda r: (load[r], r), default=None)
                if dst is not None and totals[src] > v:
                    t = list(totals)
                    t[src], t[dst] = t[src] - 1, t[dst] + 1
                    cand = _chunks(t, v)
                    tries.append((self.step(cand), cand))
            won = min(tries, key=lambda x: x[0].step_s, default=None)
            if won is None or won[0].step_s >= best.step_s:
                break
            best, counts = won
        return counts, best

    def memory(self, ops: list, counts: list[list[int]]) -> list[MemoryBreakdown]:
        vc = _vcounts(counts)
        return [peak_memory(self.model, g, self.plan, ops, counts, ranks=rs, vcounts=vc)
                for g, rs in zip(self.mixed.groups, self.ranks)]


def _stages(model: ModelSpec, mixed: MixedCluster, plan: TrainingPlan, split: str, pairs: float,
            records: list[OpRecord] | None) -> tuple[StepTiming, list[MemoryBreakdown], list[dict]]:
    st = _Stages(model, mixed, plan, pairs)
    counts = layer_split(model, plan, st.costs, split)
    timing = None
    if split == "balanced":
        counts, timing = st.improve(counts)
    if timing is None or records is not None:
        timing = st.step(counts, records)
    mems = st.memory(timing.run.ops, counts)
    info = [{"stages": list(rs), "layers": [sum(counts[r]) for r in rs]} for rs in st.ranks]
    return timing, mems, info


def _replicas(model: ModelSpec, mixed: MixedCluster, plan: TrainingPlan, split: str, pairs: float,
              records: list[OpRecord] | None) -> tuple[StepTiming, list[MemoryBreakdown], list[dict]]:
    if split not in SPLITS:
        raise InputError("mixed-split", "a layer list applies to --mixed-placement stages; replicas take "
                                        f"{' or '.join(SPLITS)}")
    reps = group_replicas(mixed, plan)
    nic = min(g.nic_bw_bytes_per_s_per_gpu for g in mixed.groups)
    clusters = [g.with_(nic_bw_bytes_per_s_per_gpu=nic) for g in mixed.groups]
    costs = [plan_costs(model, c, plan, pairs) for c in clusters]
    counts = default_chunk_layers(model.layers, plan.pp, plan.virtual_stages)
    unit = get_schedule(plan.schedule_name).microbatch_multiple(plan.pp)
    total = plan.micro_batches * plan.dp
    if split == "even":
        per_group = [n * plan.micro_batches for n in reps]
    else:
        stage_s = [max(_edge_s(k, r, plan.pp) + sum(counts[r]) * _layer_s(k) for r in range(plan.pp)) for k in costs]
        per_group = _share_micro_batches(total, reps, stage_s, unit, plan.pp)
    runs, mems, info = [], [], []
    for c, k, n, mbs in zip(clusters, costs, reps, per_group):
        m = unit * cdiv(cdiv(mbs, n), unit)
        pk = plan.with_(global_batch=m * plan.dp * plan.micro_batch)
        runs.append((run_step(model, pk, [c] * plan.pp, [k] * plan.pp, counts, pairs, job_gpus=mixed.gpus), pk, c, k))
        info.append({"replicas": n, "micro_batches": mbs, "micro_batches_per_replica": m,
                     "step_time_s": runs[-1][0].step_s})
    crit = max(range(len(runs)), key=lambda i: (runs[i][0].step_s, -i))
    for g, (timing, pk, _, _) in zip(mixed.groups, runs):
        mems.append(peak_memory(model, g, pk, timing.run.ops, counts))
    if records is not None:  # the critical group's pipeline, recorded
        _, pk, c, k = runs[crit]
        run_step(model, pk, [c] * plan.pp, [k] * plan.pp, counts, pairs, job_gpus=mixed.gpus, recorder=records)
    return runs[crit][0], mems, info


def _share_micro_batches(total: int, reps: list[int], stage_s: list[float], unit: int, pp: int) -> list[int]:
    """Micro-batches per group (summing to `total`): each replica at least `unit`, the rest
    water-filled on a group's pipeline time (micro-batches per replica + pp - 1) x its stage time."""
    share = [n * unit for n in reps]

    def finish(i: int, mbs: int) -> float:
        return (unit * cdiv(cdiv(mbs, reps[i]), unit) + pp - 1) * stage_s[i]

    heap = [(finish(i, share[i] + 1), i) for i in range(len(reps))]
    heapq.heapify(heap)
    for _ in range(total - sum(share)):
        _, i = heapq.heappop(heap)
        share[i] += 1
        heapq.heappush(heap, (finish(i, share[i] + 1), i))
    return share


def default_split(mixed: MixedCluster) -> str:
    """`balanced` across GPU types; one type keeps the plain run's split (`even`)."""
    return "balanced" if len({g.accelerator.id for g in mixed.groups}) > 1 else "even"


def mixed_schedules() -> tuple[str, ...]:
    """The schedules whose chunks sit in the plain loop order (rank r holds stages r, r + pp, ...):
    the layer split over GPU groups assumes it."""
    from parasim.training.schedules import SCHEDULES, get_schedule

    return tuple(n for n in SCHEDULES.names() if get_schedule(n).layout == "loop")


def check_layout(schedule: str) -> None:
    """InputError naming the schedule when its chunk placement (ZB-V's V, DualPipe's mirrored
    copies) is not the loop order the mixed-cluster split is written for."""
    if schedule not in mixed_schedules():
        raise InputError("schedule", f"{schedule} places its model chunks in another order than the layer split over "
                                     f"GPU groups assumes; on a mixed cluster use {', '.join(mixed_schedules())}")


def simulate_mixed(model: ModelSpec, mixed: MixedCluster, plan: TrainingPlan, *, placement: str = "stages",
                   split: str | None = None, timeline: bool = False) -> TrainingResult:
    """One optimizer step of `plan` on a mixed cluster (raises InputError on bad plans or layouts);
    `split` None: `default_split`."""
    from parasim.training.timeline import build as build_timeline

    plan.check(model, mixed.gpus)
    split = split or default_split(mixed)
    check_options(placement, split)
    if plan.seq_len_dist:
        raise InputError("seq-len-dist", "variable-length data on a mixed cluster is not modelled yet")
    if plan.fsdp_shard is not None:
        raise InputError("fsdp-shard", "hybrid sharding on a mixed cluster is not modelled; leave it out")
    check_layout(plan.schedule_name)
    s = plan.seq_len
    pairs = plan.micro_batch * s * (s + 1) / 2
    records: list[OpRecord] | None = [] if timeline else None
    run = _stages if placement == "stages" else _replicas
    timing, mems, info = run(model, mixed, plan, split, pairs, records)
    ctx = causal_context(plan.seq_len)
    worst = max(range(len(mems)), key=lambda i: (mems[i].total / mems[i].capacity, -i))
    groups = [{"gpu": g.accelerator.id, "gpus": g.gpus, "gpus_per_node": g.gpus_per_node, "scale_up_domain": g.domain,
               "inter_node_gbps": g.nic_bw_bytes_per_s_per_gpu * 8 / 1e9, **extra, "memory": m.to_dict(), "fits": m.fits}
              for g, m, extra in zip(mixed.groups, mems, info)]
    hetero: dict[str, Any] = {"placement": placement, "split": split, "groups": groups}
    return TrainingResult(
        model=model.name, gpu=mixed.label, gpus=mixed.gpus, plan={**plan.to_mapping(), "schedule": plan.schedule_name},
        step_time_s=timing.step_s, tokens_per_step=plan.tokens_per_step, **flops_per_token(model, plan, ctx),
        peak_flops_per_s=mixed.peak(plan.precision), breakdown=timing.breakdown,
        details={**timing.details, "critical_rank": timing.critical_rank},
        memory=mems[worst].to_dict(), peak_memory_bytes=mems[worst].total, fits=all(m.fits for m in mems),
        hetero=hetero, timeline=build_timeline(model, _timeline_plan(plan, placement, info), timing, records)
        if records is not None else None)


def _timeline_plan(plan: TrainingPlan, placement: str, info: list[dict]) -> TrainingPlan:
    """The plan the recorded pipeline ran: with `replicas`, the critical group's micro-batches."""
    if placement == "stages":
        return plan
    m = max((g for g in info), key=lambda g: g["step_time_s"])["micro_batches_per_replica"]
    return replace(plan, global_batch=m * plan.dp * plan.micro_batch)

