"""What a reader looks at first in a saved result, per command: its inputs, its plan and a few
headline metrics, as (label, value) rows for the HTML report (report/html.py).

Rows are read from the JSON result alone (a saved `--json-out` or the object a command prints), so
a report drawn later from the file says what one drawn at run time says. A hand-edited or truncated
result loses rows, never raises: a missing or mistyped field is left out. Wall-clock fields
(`sim_wall_s`, `search_wall_s`) are never shown: the same inputs must give the same report bytes.
Labels carry their units; the same metric has the same label in every command, so a comparison of
a `serve` run with a `plan serve` winner lines up row by row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = tuple[str, Any]


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _days(seconds: Any) -> Any:
    """Seconds as days (anything else as it is)."""
    return seconds / 86400 if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else seconds


def _pct(v: Any) -> Any:
    """A fraction as a percentage (anything else as it is: the row shows it, or '-')."""
    return 100.0 * v if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _scalars(d: dict[str, Any], prefix: str = "", skip: tuple[str, ...] = ()) -> list[Row]:
    """A mapping's scalar values (nested mappings flattened as `a.b`), None and wall times left out."""
    rows: list[Row] = []
    for k in sorted(d):
        v = d[k]
        if k in skip or v is None or "wall" in str(k):
            continue
        if isinstance(v, dict):
            rows += _scalars(v, f"{prefix}{k}.", skip)
        elif isinstance(v, (list, tuple)):
            if v and all(not isinstance(x, (dict, list)) for x in v):
                rows.append((f"{prefix}{k}", ", ".join(str(x) for x in v)))
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


def _given(rows: list[Row]) -> list[Row]:
    return [(k, v) for k, v in rows if v is not None and v != [] and v != {}]


# --- training -------------------------------------------------------------------------------------
def _train_metrics(r: dict[str, Any]) -> list[Row]:
    mem = _d(r.get("memory"))
    rows = [("step time (s)", r.get("step_time_s")), ("tokens/s", r.get("tokens_per_s")),
            ("tokens/s per GPU", r.get("tokens_per_s_per_gpu")), ("MFU, causal (%)", _pct(r.get("mfu"))),
            ("MFU, Megatron convention (%)", _pct(r.get("megatron_mfu"))),
            ("peak memory per GPU (GiB)", r.get("peak_memory_gib_per_gpu")), ("GPU memory (GiB)", mem.get("capacity_gib")),
            ("fits in memory", r.get("fits")), ("goodput, failures and checkpoints (%)", _pct(r.get("goodput_fraction"))),
            ("checkpoint every (steps)", _d(r.get("goodput")).get("checkpoint_interval_steps")),
            ("time to train (days)", _days(r.get("time_to_train_s")))]
    rows += [(f"step: {k} (s)", v) for k, v in sorted(_d(r.get("breakdown")).items())]
    return _given(rows)


def _train_inputs(r: dict[str, Any]) -> list[Row]:
    rows = [("model", r.get("model")), ("gpu", r.get("gpu")), ("gpus", r.get("gpus")),
            ("defaulted (values in the plan)", ", ".join(sorted(map(str, _d(r.get("defaults"))))) or None)]
    for k, o in sorted(_d(r.get("overrides")).items()):
        o = _d(o)
        rows.append((f"{o.get('by')} overrides the file", f"{k}: {o.get('file')} -> {o.get('used')}"))
    return _given(rows)


# --- serving --------------------------------------------------------------------------------------
SERVE_METRICS: tuple[tuple[str, str, bool], ...] = (  # (label, summary key, as a percentage)
    ("requests completed", "completed", False), ("output tokens/s", "output_tokens_per_s", False),
    ("requests/s", "requests_per_s", False), ("goodput (requests/s)", "goodput_requests_per_s", False),
    ("capacity (requests/s)", "capacity_requests_per_s", False),
    ("TTFT p50 (s)", "ttft_p50_s", False), ("TTFT p99 (s)", "ttft_p99_s", False),
    ("TPOT p50 (s)", "tpot_p50_s", False), ("TPOT p99 (s)", "tpot_p99_s", False),
    ("ITL p99 (s)", "itl_p99_s", False), ("E2E p50 (s)", "e2e_p50_s", False), ("E2E p99 (s)", "e2e_p99_s", False),
    ("SLO attainment (%)", "slo_attainment", True), ("SLO met", "slo_met", False),
    ("KV cache use, peak (%)", "kv_utilization_peak", True), ("preemptions", "preemptions", False),
    ("energy (J/token)", "energy_j_per_token", False), ("cost ($/M tokens)", "cost_usd_per_m_tokens", False),
)


def _serve_metrics(r: dict[str, Any]) -> list[Row]:
    s = _d(r.get("summary"))
    rows = [(label, _pct(s.get(key)) if pct else s.get(key)) for label, key, pct in SERVE_METRICS]
    return _given([("feasible", r.get("feasible")), *rows, ("why not", r.get("reason"))])


def _serve_inputs(r: dict[str, Any]) -> list[Row]:
    i = _d(r.get("inputs"))
    rows = [("model", i.get("model")), ("gpu", i.get("gpu")), ("gpus", i.get("cluster_gpus")), ("seed", i.get("seed"))]
    rows += _scalars(_d(i.get("workload")), "workload: ")
    rows += [(f"SLO: {k}", v) for k, v in _scalars(_d(i.get("slo")))]
    rows += [("engine", _d(i.get("engine")).get("engine")), ("precision", _d(i.get("precision")).get("how"))]
    rows += [("note", n) for n in (i.get("notes") if isinstance(i.get("notes"), list) else [])]
    return _given(rows)


def _serve_plan(r: dict[str, Any]) -> list[Row]:
    i = _d(r.get("inputs"))
    return _scalars(_d(i.get("plan"))) + _given([("token budget (resolved)", i.get("token_budget")),
                                                 ("max batch (resolved)", i.get("max_batch"))])


# --- planners -------------------------------------------------------------------------------------
def _plan_inputs(r: dict[str, Any], keys: tuple[str, ...]) -> list[Row]:
    rows = [(k, r.get(k)) for k in keys]
    return _given([(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in rows
                   if not isinstance(v, dict)])


def _search_rows(r: dict[str, Any]) -> list[Row]:
    pruned = _d(r.get("pruned"))
    counts = [v for v in pruned.values() if isinstance(v, int) and not isinstance(v, bool)]
    return _given([("search space size", r.get("space_size")), ("plans simulated", r.get("evaluated")),
                   ("plans pruned", sum(counts) if counts else None), ("interrupted", r.get("interrupted") or None)])


def _best(r: dict[str, Any]) -> dict[str, Any]:
    return _d(r.get("best"))


PLAN_TRAIN_INPUTS = ("model", "gpu", "gpus", "seq_len", "global_batch_tokens", "global_batch", "batch_tolerance",
                     "objective", "tokens", "pareto", "reference")
PLAN_SERVE_INPUTS = ("model", "gpu", "max_gpus", "objective", "pareto")
#: a ranked serving plan's fields that are results of the search, not the layout
_SERVE_RANK_FIELDS = ("metrics", "fails", "fidelity", "goodput_per_gpu", "meets_slo", "objective_value", "rank",
                      "requests", "saturated_requests_per_s")


def _plan_train_plan(r: dict[str, Any]) -> list[Row]:
    return _scalars(_best(r), skip=("metrics", "objective_value", "rank"))


def _plan_serve_plan(r: dict[str, Any]) -> list[Row]:
    return _scalars(_best(r), skip=_SERVE_RANK_FIELDS)


def _plan_serve_inputs(r: dict[str, Any]) -> list[Row]:
    rows = _plan_inputs(r, PLAN_SERVE_INPUTS) + _scalars(_d(r.get("workload")), "workload: ")
    rows += [(f"SLO: {k}", v) for k, v in _scalars(_d(r.get("slo")))]
    return rows + _given([("precisions searched", _d(r.get("precisions")).get("searched"))])


def _winner(r: dict[str, Any], metrics) -> list[Row]:
    b = _best(r)
    rows = _search_rows(r) + _given([("winner's objective value", b.get("objective_value"))])
    return rows + (metrics(_d(b.get("metrics"))) if b else [("winner", "none: no plan was ranked")])


def _sweep_metrics(r: dict[str, Any]) -> list[Row]:
    """A result this module has no rows for: its summary's scalars, else its top-level numbers."""
    if isinstance(r.get("summary"), dict):
        return _serve_metrics(r)
    return [(k, v) for k, v in _scalars(r, skip=("inputs", "expected_error", "parasim_version", "command"))
            if isinstance(v, (int, float, bool))]


# --- one place that knows which command reads how --------------------------------------------------
Reader = Callable[[dict[str, Any]], list[Row]]
#: command -> (inputs, plan, metrics) readers; a command not listed reads as `serve-sweep`
READERS: dict[str, tuple[Reader, Reader, Reader]] = {
    "train": (_train_inputs, lambda r: _scalars(_d(r.get("plan"))), _train_metrics),
    "serve": (_serve_inputs, _serve_plan, _serve_metrics),
    "serve-sweep": (_serve_inputs, _serve_plan, _sweep_metrics),
    "plan train": (lambda r: _plan_inputs(r, PLAN_TRAIN_INPUTS), _plan_train_plan, lambda r: _winner(r, _train_metrics)),
    "plan serve": (_plan_serve_inputs, _plan_serve_plan, lambda r: _winner(r, _serve_metrics)),
}


def _readers(r: dict[str, Any]) -> tuple[Reader, Reader, Reader]:
    return READERS.get(str(r.get("command")), READERS["serve-sweep"])


def inputs(r: dict[str, Any]) -> list[Row]:
    """What the run was asked: model, GPUs, workload, SLOs, search settings."""
    return _readers(r)[0](r)


def plan(r: dict[str, Any]) -> list[Row]:
    """The layout simulated (for a planner: the winner's)."""
    return _readers(r)[1](r)


def metrics(r: dict[str, Any]) -> list[Row]:
    """The headline numbers (for a planner: the search's counts, then the winner's numbers)."""
    return _readers(r)[2](r)


#: every `command` a parasim result can carry (the report refuses anything else)
RESULT_COMMANDS = tuple(READERS)


def title(r: dict[str, Any]) -> str:
    """'serve: llama-3-8b on 1 x h100-sxm', or as much of it as the result holds."""
    cmd = str(r.get("command", "?"))
    i = _d(r.get("inputs"))
    model = r.get("model") if r.get("model") is not None else i.get("model")
    gpu = r.get("gpu") if r.get("gpu") is not None else i.get("gpu")
    gpus = r.get("gpus") if cmd in ("train", "plan train") else r.get("max_gpus") if cmd == "plan serve" else i.get("cluster_gpus")
    if isinstance(gpu, list):
        gpu = "/".join(map(str, gpu))
    if isinstance(gpus, list):
        gpus = "/".join(map(str, gpus))
    where = f" on {gpus} x {gpu}" if gpus is not None and gpu is not None else f" on {gpu}" if gpu is not None else ""
    up_to = "up to " if cmd == "plan serve" and gpus is not None else ""
    return f"{cmd}: {model if model is not None else 'a model'}{where.replace(' on ', ' on ' + up_to, 1)}"
