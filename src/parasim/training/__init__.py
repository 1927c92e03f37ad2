"""Training step simulator: `simulate(model, cluster, plan) -> TrainingResult`.

One representative pipeline is simulated (every DP replica does the same work); one layer is
costed and multiplied by the layers of each pipeline chunk. See step.py for the event model,
memory.py for the peak-memory walk and varlen.py for variable-length data.
"""

from __future__ import annotations

from parasim.cost.flops import causal_context
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec
from parasim.training.memory import peak_memory
from parasim.training.plan import TrainingPlan
from parasim.training.result import TrainingResult, flops_per_token
from parasim.training.step import StepTiming, chunk_layers, simulate_step
from parasim.training.timeline import build as build_timeline

__all__ = ["TrainingPlan", "TrainingResult", "simulate"]


def simulate(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan, *, timeline: bool = False) -> TrainingResult:
    """Simulate one optimizer step of `plan` for `model` on `cluster` (raises InputError on bad plans).
    `timeline` also records every op's interval (the result's `timeline`, training/timeline.py)."""
    plan.check(model, cluster.gpus)
    varlen: dict[str, float] = {}
    ctx = causal_context(plan.seq_len)  # mean keys per query that the causal kernels execute
    records = [] if timeline else None
    if plan.seq_len_dist:
        timing, varlen, ctx = _varlen_step(model, cluster, plan, records)
    else:
        timing = simulate_step(model, cluster, plan, recorder=records)
    mem = peak_memory(model, cluster, plan, timing.run.ops, chunk_layers(model, plan))
    acc = cluster.accelerator
    return TrainingResult(
        model=model.name, gpu=acc.id, gpus=cluster.gpus, plan={**plan.to_mapping(), "schedule": plan.schedule_name},
        step_time_s=timing.step_s, tokens_per_step=plan.tokens_per_step, **flops_per_token(model, plan, ctx),
        peak_flops_per_s=acc.peak(plan.precision), breakdown=timing.breakdown,
        details={**timing.details, "critical_rank": timing.critical_rank},
        memory=mem.to_dict(), peak_memory_bytes=mem.total, fits=mem.fits, varlen=varlen,
        timeline=build_timeline(model, plan, timing, records) if records is not None else None)


def _varlen_step(model: ModelSpec, cluster: ClusterSpec, plan: TrainingPlan,
                 records: list | None) -> tuple[StepTiming, dict[str, float], float]:
    """The step of the plan's critical rank under its varlen strategy (training/varlen_balance.py),
    the `varlen` figures of the result, and the mean keys per query the kernels execute."""
    from parasim.training.varlen import load_lengths, packed_pairs
    from parasim.training.varlen_balance import balance
    from parasim.training.varlen_cost import pool_costs

    lengths = load_lengths(plan.seq_len_dist)
    mean = sum(packed_pairs(lengths, plan.seq_len, plan.global_batch)) / plan.dp / plan.micro_batches
    balanced = simulate_step(model, cluster, plan, pairs_per_mb=mean)
    costs = pool_costs(model, cluster, plan, balanced.layer, mean)
    shape = dict(seq_len=plan.seq_len, global_batch=plan.global_batch, dp=plan.dp, cp=plan.cp,
                 micro_batch=plan.micro_batch)
    bal = balance(lengths, costs, strategy=plan.varlen_balance, **shape)
    timing = simulate_step(model, cluster, plan, pairs_per_mb=bal.max_pairs_per_mb, recorder=records,
                           cp_comm=bal.cp_comm)
    varlen = {"documents_per_sequence": bal.documents_per_sequence,
              "mean_attention_pairs_per_microbatch": bal.mean_pairs_per_mb,
              "max_attention_pairs_per_microbatch": bal.max_pairs_per_mb,
              "dp_imbalance": bal.max_pairs_per_mb / bal.mean_pairs_per_mb - 1.0,
              "dp_cp_imbalance": bal.dp_cp_imbalance,
              "balanced_step_time_s": balanced.step_s, "imbalance_cost_s": timing.step_s - balanced.step_s}
    if plan.varlen_balance != "static":
        static = balance(lengths, costs, strategy="static", **shape)
        static_s = simulate_step(model, cluster, plan, pairs_per_mb=static.max_pairs_per_mb).step_s
        varlen |= {"static_step_time_s": static_s, "speedup_vs_static": static_s / timing.step_s}
    return timing, varlen, bal.mean_pairs_per_mb / (plan.micro_batch * plan.seq_len)
