"""The simulated step as intervals per pipeline stage: what `train --timeline` and the Gantt chart draw.

`run_pipeline` places every op (OpRecord); this module cuts each op into the parts the step
model charges it (p2p receive, compute, exposed in-layer collectives, exposed FSDP collectives,
p2p send) and appends what each stage does after its last backward (`RankTail`: gradient
reduction, optimizer, parameter all-gather) and, on the critical stage, the straggler wait. The
parts are laid end to end exactly as the simulator adds them, so the latest end is the step
time and, on each stage, the time before its pipeline end covered by no exposed part is its
bubble. The result is plain JSON (the result's `timeline` key), read by report/train_trace.py
and report/figures/training.py; times in seconds, rounded to the nanosecond.
"""

from __future__ import annotations

from typing import Any

from parasim.cost.flops import attention_flops_per_token_layer, layer_matmul_params_active
from parasim.cost.partition import rank_stages, stage_count
from parasim.specs.model import ModelSpec
from parasim.training.plan import TrainingPlan
from parasim.training.schedules import get_schedule
from parasim.training.step import PARAM_GATHER_BYTES, OpRecord, RankTail, StepTiming

#: one row of a stage's `spans`
SPAN_COLUMNS = ("kind", "start_s", "dur_s", "micro_batch", "chunk")
#: each span kind, in the order they are drawn, and the stream (trace thread) it belongs to; "W"
#: is the weight-gradient op of a schedule that splits the backward (zb-h1, zb-h2, zb-v, dualpipe)
STREAM_OF = {"F": "compute", "B": "compute", "W": "compute", "tp_cp_ep": "inlayer", "fsdp": "dp", "recv": "pp",
             "send": "pp", "grad_reduce_overlapped": "dp", "grad_reduce": "dp", "param_gather": "dp",
             "optimizer": "optimizer", "straggler": "compute"}
NS = 9  # decimal places kept of seconds


def _r(x: float) -> float:
    return round(x, NS)


def build(model: ModelSpec, plan: TrainingPlan, timing: StepTiming, records: list[OpRecord]) -> dict[str, Any]:
    """The compact timeline of one simulated step (see the module docstring)."""
    det = timing.details
    fsdp = {"F": (det["fsdp_layer_exposed_fwd"], det["fsdp_first_gather_exposed_s"]),
            "B": (det["fsdp_layer_exposed_bwd"], det["fsdp_last_reduce_exposed_s"]), "W": (0.0, 0.0)}
    layout = get_schedule(plan.schedule_name).layout
    stage_of, last = rank_stages(plan.pp, plan.virtual_stages, layout), stage_count(plan.pp, plan.virtual_stages, layout) - 1
    spans: list[list[list]] = [[] for _ in range(plan.pp)]
    for rec in records:
        n = timing.chunk_layers[rec.rank][rec.chunk]
        per_layer, edge = fsdp[rec.kind]
        _op_spans(spans[rec.rank], rec, n * per_layer + (edge if n else 0.0))
    step = timing.step_s
    stages = []
    for r, tail in enumerate(timing.tails):
        out = spans[r]
        _tail_spans(out, timing.run.end_s[r], tail)
        if r == timing.critical_rank and timing.breakdown.get("straggler", 0.0) > 0:
            out.append(["straggler", _r(tail.end_s), _r(timing.breakdown["straggler"]), None, None])
        fwd = _chunk_flops(model, plan, timing.chunk_layers[r], [g == last for g in stage_of[r]], timing.pairs_per_mb)
        stage = {"stage": r, "layers": timing.chunk_layers[r]}
        if layout != "loop":  # where the chunks sit when it is not Megatron's c * pp + r
            stage["virtual_stages"] = list(stage_of[r])
        stages.append({**stage, "pipeline_end_s": _r(timing.run.end_s[r]),
                       "forward_model_flops": fwd, "backward_model_flops": [2 * f for f in fwd],
                       "grad_kind": tail.grad_kind, "grad_bytes": tail.params * plan.grad_bytes,
                       "param_gather_bytes": tail.params * PARAM_GATHER_BYTES if tail.gather_s else 0.0,
                       "spans": out})
    return {"step_time_s": step, "critical_stage": timing.critical_rank, "schedule": plan.schedule_name,
            "micro_batches": plan.micro_batches, "chunks": plan.virtual_stages,
            "p2p_bytes": timing.p2p_bytes, "p2p_transfer_s": det["p2p_per_op"],
            "p2p_blocking": not plan.overlap_p2p_comm, "span_columns": list(SPAN_COLUMNS), "stages": stages}


def _op_spans(out: list[list], rec: OpRecord, fsdp_s: float) -> None:
    """One op cut into receive, compute, in-layer collectives, FSDP collectives, send (end to end)."""
    mb, c = rec.mb, rec.chunk
    t = rec.start_s
    inlayer = rec.comm_s - rec.recv_s - fsdp_s
    if inlayer < 1e-12:  # rounding of the subtraction (no collective takes a picosecond): FSDP is the rest
        fsdp_s, inlayer = rec.comm_s - rec.recv_s, 0.0
    for kind, dur in (("recv", rec.recv_s), (rec.kind, rec.compute_s), ("tp_cp_ep", inlayer), ("fsdp", fsdp_s),
                      ("send", rec.send_s)):
        if dur > 0 or kind == rec.kind:
            out.append([kind, _r(t), _r(dur), mb, c])
            t += dur


def _tail_spans(out: list[list], end: float, tail: RankTail) -> None:
    """After the pipeline: gradient reduction (its in-flight part before `end`, then what is
    exposed), the optimizer, the exposed parameter all-gather, in Megatron's order."""
    if tail.grad_hidden_s > 0:
        out.append(["grad_reduce_overlapped", _r(end - tail.grad_hidden_s), _r(tail.grad_hidden_s), None, None])
    t = end
    for kind, dur in (("grad_reduce", tail.grad_exposed_s), ("optimizer", tail.optimizer_s),
                      ("param_gather", tail.gather_exposed_s)):
        if dur > 0:
            out.append([kind, _r(t), _r(dur), None, None])
            t += dur


def _chunk_flops(model: ModelSpec, plan: TrainingPlan, layers: list[int], has_head: list[bool],
                 pairs_per_mb: float) -> list[float]:
    """Model FLOPs of one micro-batch's forward through each chunk, per GPU (6N convention: the
    backward is twice this; recomputation not counted): 2 x matmul weights + causal attention, per
    token, over the chunk's layers, plus the LM head on the last virtual stage; split over TP x CP."""
    tokens = plan.micro_batch * plan.seq_len
    ctx = pairs_per_mb / tokens
    per_layer = 2.0 * layer_matmul_params_active(model) / model.layers + attention_flops_per_token_layer(model, ctx)
    out = []
    for c, n in enumerate(layers):
        f = n * per_layer + (2.0 * model.edge_matmul_params if has_head[c] else 0.0)
        out.append(float(f * tokens / (plan.tp * plan.cp)))
    return out
