"""`plan train --reference`: a plan the user names, located in the ranking.

A reference usually names a few fields (`tp=8,pp=16,zero=2`); the rest are filled the way the
search fills them: the reference is the best ranked plan that has every given field. Only when no
ranked plan has them (the plan is outside the searched space, was pruned, or does not fit) are the
rest filled with `parasim train`'s documented defaults (training/defaults.py) and the batch rule
of the search (train_batch.py); that plan is simulated on its own and placed where it would rank,
without entering `ranked` (so `evaluated + sum(pruned)` stays the raw space). Either way the JSON
says which fields were given, which were filled, and how.
"""

from __future__ import annotations

from typing import Any

from parasim.errors import InputError
from parasim.search.train_batch import BatchTarget
from parasim.specs.edge import boolean, number, positive_int, text_value

#: The fields of a training plan the planner searches and ranks, in the order its table shows them.
PLAN_KEYS = ("tp", "pp", "dp", "cp", "ep", "etp", "virtual_stages", "sequence_parallel", "micro_batch", "global_batch",
             "seq_len", "recompute", "zero", "precision", "schedule")

#: fields a reference may give (seq_len is the search's)
REFERENCE_KEYS = ("tp", "pp", "dp", "cp", "ep", "virtual_stages", "sequence_parallel", "micro_batch", "global_batch",
                  "recompute", "zero", "precision", "schedule", "gpu", "gpus")
FILLED_BY_SEARCH = "the best ranked plan with the given fields"
FILLED_BY_DEFAULTS = "parasim train's defaults (no ranked plan has the given fields)"


def parse_reference(spec: dict[str, Any], gpu_names: tuple[str, ...], gpu_counts: tuple[int, ...]) -> dict[str, Any]:
    """Check every field once; errors are `reference: <key>: <what is allowed>` (exit 2)."""
    from parasim.cost.dtypes import TRAINING_PRECISIONS
    from parasim.cost.memory import RECOMPUTE
    from parasim.specs.catalog import get_accelerator
    from parasim.training.schedules import resolve_name, schedule_names

    out: dict[str, Any] = {}
    for key, value in spec.items():
        k = str(key).replace("-", "_")
        if k not in REFERENCE_KEYS:
            raise InputError("reference", f"unknown key '{key}'; allowed: {', '.join(REFERENCE_KEYS)}")
        try:
            if k == "zero":
                v: Any = number(k, value, integer=True, lo=0, hi=3)
            elif k == "sequence_parallel":
                v = boolean(k, value)
            elif k == "recompute":
                v = text_value(k, value, choices=RECOMPUTE)
            elif k == "precision":
                v = text_value(k, value, choices=TRAINING_PRECISIONS)
            elif k == "schedule":
                v = text_value(k, value, choices=schedule_names())
            elif k == "gpu":
                want = get_accelerator(text_value(k, value)).id
                v = next((g for g in gpu_names if get_accelerator(g).id == want), None)
                if v is None:
                    raise InputError(k, f"'{value}' is not one of the searched --gpu values ({', '.join(gpu_names)})")
            elif k == "gpus":
                v = positive_int(k, value)
                if v not in gpu_counts:
                    raise InputError(k, f"{v} is not one of the searched --gpus values "
                                        f"({', '.join(str(n) for n in gpu_counts)})")
            else:
                v = positive_int(k, value)
        except InputError as e:
            raise InputError("reference", f"{k}: {e.message}") from None
        out[k] = v
    if "schedule" in out:  # the plan convention: 1f1b with virtual stages is interleaved 1F1B
        out["schedule"] = resolve_name(out["schedule"], out.get("virtual_stages", 1))
    return out


def matches(row: dict[str, Any], given: dict[str, Any]) -> bool:
    return all(row.get(k) == v for k, v in given.items())


def default_item(model, given: dict[str, Any], batch: BatchTarget, gpu: str, gpus: int) -> tuple[dict | None, str]:
    """The given fields filled with `parasim train`'s defaults and the search's batch rule;
    (None, reason) when no global batch within the tolerance suits its layout."""
    from parasim.training.defaults import resolve_plan
    from parasim.training.schedules import get_schedule

    fields = {k: v for k, v in given.items() if k not in ("gpu", "gpus")}
    fields["seq_len"] = batch.seq_len
    try:
        if "global_batch" not in fields:
            plan, _ = resolve_plan(model, fields, gpus)  # dp, micro-batch and schedule first
            multiple = get_schedule(plan.schedule_name).microbatch_multiple(plan.pp)  # interleaved: pp
            gb = batch.pick(plan.dp * plan.micro_batch * multiple)
            if gb is None:
                return None, "interleave_microbatches" if multiple > 1 else "batch_divisibility"
            fields["global_batch"] = gb
        plan, _ = resolve_plan(model, fields, gpus)
        plan.check(model, gpus)
    except InputError as e:
        raise InputError("reference", f"{e.field}: {e.message}") from None
    d = {k: getattr(plan, k) for k in PLAN_KEYS}
    d["schedule"] = plan.schedule_name
    return {**d, "gpu": gpu, "gpus": gpus}, ""


def locate(ranked: list[dict], row: dict, key) -> int:
    """1-based position `row` would take in `ranked` (ties go after the ranked plans)."""
    k = key(row)
    return 1 + sum(1 for r in ranked if key(r) <= k)
