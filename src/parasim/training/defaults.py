"""What `parasim train` assumes for a plan field the user did not give, and when that matters.

The values follow what a Megatron-Core / NeMo / torchtitan user gets:

* sequence parallelism on whenever tp > 1: NeMo's and Megatron-Core's performance recipes turn
  it on with TP, and torchtitan's tensor parallelism always shards the norms and dropout over the
  sequence (Megatron-LM's own `--sequence-parallel` flag is off by default, but no published
  large run leaves it off; the planner assumes it on too);
* global batch = dp x micro_batch, Megatron-LM's rule when `--global-batch-size` is not given
  (its arguments.py prints "setting global batch size to N"; torchtitan does the same with
  `global_batch_size = -1`): one micro-batch per pipeline and step, so with pp > 1 the bubble
  dominates - give `--global-batch` to simulate a real job;
* micro-batch 1, plain 1F1B (no virtual stages), no recomputation, bf16, fp32 gradient
  reduction: Megatron-LM's argument defaults;
* ZeRO 1 (the distributed optimizer), flash attention, fused non-GEMM kernels (`kernels: fused`), overlapped gradient reduce-scatter,
  parameter all-gather and pipeline sends, no TP comm overlap: Megatron-Core recipes;
* seq_len 2048 (Megatron-LM has no default; GPT-3's context);
* MoE: etp = tp (Megatron-Core sets --expert-tensor-parallel-size to the TP size when not given),
  dropless routing with NCCL all-to-all dispatch (Megatron-Core's defaults), no EP comm overlap,
  expert loads as even as random routing makes them (`moe_imbalance: 1`).

Every default applied that changes the answer is returned, so the CLI prints it ("defaults
used" / `defaults` in the JSON). A default that cannot change the answer (sequence parallelism
at tp = 1, a pipeline schedule at pp = 1, expert parallelism on a dense model) is applied but
not listed. The validation case adapter (`validation/training.py`) does not use these: a published
case states its own plan and the adapter names each choice it makes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parasim.errors import InputError
from parasim.specs.model import ModelSpec
from parasim.training.schedules import SCHEDULES, resolve_name


@dataclass(frozen=True)
class Default:
    field: str
    value: Callable[[dict[str, Any], ModelSpec], Any]  # from the fields resolved so far
    matters: Callable[[dict[str, Any], ModelSpec], bool]  # whether it can change the answer


def _always(d: dict, m: ModelSpec) -> bool:
    return True


def _const(v: Any) -> Callable[[dict, ModelSpec], Any]:
    return lambda d, m: v


def _implied_chunks(schedule: str | None) -> int:
    """Model chunks per rank a schedule that runs exactly one number of them implies (zb-v,
    dualpipe: 2), else 1."""
    return (SCHEDULES.get(schedule).chunks or 1) if schedule in SCHEDULES else 1


def _dp_ranks(d: dict) -> int:
    return d["dp"] * d["cp"]


def _expert_parallel(d: dict, m: ModelSpec) -> bool:
    return m.is_moe and d["ep"] > 1


# in resolution order: each sees what was given or resolved before it
DEFAULTS: tuple[Default, ...] = (
    Default("tp", _const(1), _always),
    Default("pp", _const(1), _always),
    Default("cp", _const(1), _always),
    Default("ep", _const(1), lambda d, m: m.is_moe),
    Default("virtual_stages", lambda d, m: _implied_chunks(d.get("schedule")), lambda d, m: d["pp"] > 1),
    Default("schedule", lambda d, m: resolve_name("1f1b", d["virtual_stages"]), lambda d, m: d["pp"] > 1
            and d["virtual_stages"] == 1),
    Default("sequence_parallel", lambda d, m: d["tp"] > 1, lambda d, m: d["tp"] > 1),
    Default("micro_batch", _const(1), _always),
    Default("global_batch", lambda d, m: d["dp"] * d["micro_batch"], _always),
    Default("seq_len", _const(2048), _always),
    Default("recompute", lambda d, m: "selective" if d.get("recompute_modules") else "none", _always),
    Default("zero", _const(1), lambda d, m: _dp_ranks(d) > 1),
    Default("precision", _const("bf16"), _always),
    Default("grad_dtype", _const("fp32"), lambda d, m: d["precision"] != "fp16"),
    Default("attention", _const("flash"), _always),
    Default("kernels", _const("fused"), _always),
    Default("overlap_grad_reduce", _const(True), lambda d, m: _dp_ranks(d) > 1),
    Default("overlap_param_gather", _const(True), lambda d, m: _dp_ranks(d) > 1 and d["zero"] >= 1),
    Default("tp_comm_overlap", _const(False), lambda d, m: d["tp"] > 1),
    Default("overlap_p2p_comm", _const(True), lambda d, m: d["pp"] > 1),
    Default("etp", lambda d, m: d["tp"] if m.is_moe else None, lambda d, m: m.is_moe and d["tp"] > 1),
    Default("moe_imbalance", _const(1.0), _expert_parallel),
    Default("moe_a2a", _const("alltoall"), _expert_parallel),
    Default("moe_a2a_overlap", _const(False), _expert_parallel),
    Default("moe_routing", _const("random"), _expert_parallel),
)


def resolve_plan(model: ModelSpec, given: dict[str, Any], gpus: int):
    """(TrainingPlan, defaults) from the fields the user gave (None = not given).

    `defaults` maps each field that was filled in and can change the answer to its value, in
    resolution order. dp is derived from gpus / (tp*pp*cp) when not given (not a default).
    """
    from parasim.training.plan import TrainingPlan

    given = {str(k).replace("-", "_"): v for k, v in given.items() if v is not None}
    typed = TrainingPlan.from_mapping(given, gpus=gpus)  # coerces and validates the given values
    resolved = {k: getattr(typed, k) for k in given}
    resolved.setdefault("dp", typed.dp)
    sched = resolved.get("schedule")
    if (sched in SCHEDULES and SCHEDULES.get(sched).chunked and SCHEDULES.get(sched).chunks is None
            and "virtual_stages" not in resolved):
        raise InputError("virtual-stages", f"required with the {sched} schedule (model chunks per pipeline "
                                           "rank, >= 2)")
    defaults: dict[str, Any] = {}
    for d in DEFAULTS:
        if d.field in resolved:
            continue
        resolved[d.field] = d.value(resolved, model)
        if d.matters(resolved, model):
            defaults[d.field] = resolved[d.field]
    plan = TrainingPlan.from_mapping(resolved, gpus=gpus)
    return plan, defaults
