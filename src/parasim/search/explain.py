"""Why the winner wins: versus the runner-up and versus the documented heuristic baseline.

Each comparison is a ratio oriented so that > 1 means "the winner is this many times better" on
the objective (winner/other for a maximised metric, other/winner for a minimised one), plus the
plan fields that differ and the named metrics that moved the most:

* training: step-time breakdown (compute, exposed communication, bubble, optimizer), MFU, memory;
* serving: p99 TTFT/TPOT, attainment, throughput, GPUs, $/M tokens, J/token.

Heuristic baselines (the "what a careful engineer would try first" APEX compares against):
* training: TP = GPUs per node, the smallest PP that fits, DP for the rest (micro-batch 1, 1F1B,
  distributed optimizer, selective recompute);
* serving: the largest TP inside one node that divides the heads, replicas for the rest of the
  GPU budget, the default scheduler and knobs, bf16.
"""

from __future__ import annotations

from typing import Any

from parasim.search.objectives import Objective

TRAIN_FIELDS = ("tp", "pp", "dp", "cp", "ep", "virtual_stages", "micro_batch", "global_batch", "recompute", "zero", "schedule",
                "gpu", "gpus")
SERVE_FIELDS = ("gpu", "tp", "pp", "replicas", "scheduler", "token_budget", "max_batch", "weights", "kv_dtype",
                "prefill_gpus", "prefill_tp", "decode_gpus", "decode_tp",
                "prefill_pp", "decode_pp", "ep")
#: a serving plan field a row may leave out, and what it then is (a baseline that was not simulated has no ep)
FIELD_DEFAULTS = {"ep": 1}
TRAIN_METRICS = ("step_time_s", "mfu", "peak_memory_gib_per_gpu")
SERVE_METRICS = ("ttft_p99_s", "tpot_p99_s", "slo_attainment", "output_tokens_per_s", "cost_usd_per_m_tokens",
                 "energy_j_per_token")


def ratio(obj: Objective, winner: dict, other: dict, options: dict) -> float | None:
    try:
        a, b = float(obj.value(winner, options)), float(obj.value(other, options))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if a <= 0 or b <= 0:
        return None
    return a / b if obj.maximise else b / a


def _metrics(row: dict, kind: str) -> dict[str, Any]:
    m = row.get("metrics") or {}
    if kind == "train":
        out = {k: m.get(k) for k in TRAIN_METRICS}
        out.update({f"breakdown.{k}": v for k, v in (m.get("breakdown") or {}).items()})
        return out
    s = m.get("summary") or {}
    return {**{k: s.get(k) for k in SERVE_METRICS}, "gpus": row.get("gpus")}


def _differences(a: dict, b: dict, fields: tuple[str, ...], defaults: dict) -> dict[str, list]:
    """The plan fields where `a` and `b` differ, a field left out read as its default."""
    pairs = {k: [a.get(k, defaults.get(k)), b.get(k, defaults.get(k))] for k in fields}
    return {k: v for k, v in pairs.items() if v[0] != v[1]}


def compare(winner: dict, other: dict | None, obj: Objective, options: dict, kind: str) -> dict | None:
    if other is None:
        return None
    fields = TRAIN_FIELDS if kind == "train" else SERVE_FIELDS
    a, b = _metrics(winner, kind), _metrics(other, kind)
    return {
        "rank": other.get("rank"),
        "ratio": ratio(obj, winner, other, options),
        "plan_differences": _differences(winner, other, fields, FIELD_DEFAULTS if kind == "serve" else {}),
        "metrics": {k: [a[k], b.get(k)] for k in a if a[k] is not None or b.get(k) is not None},
    }


def explain(result: dict, obj: Objective, options: dict, registry: dict, *, kind: str) -> dict:
    ranked = result["ranked"]
    if not ranked:
        return {"text": ["no feasible plan: see `pruned` for why every candidate was dropped"]}
    best = ranked[0]
    # the runner-up at the same fidelity (serving ranks full-size runs before screen-only ones)
    runner = next((r for r in ranked[1:] if r.get("fidelity") == best.get("fidelity")), None)
    vs_next = compare(best, runner, obj, options, kind)
    vs_base = compare(best, result.get("baseline"), obj, options, kind)
    text = []
    if vs_next and vs_next["ratio"] is not None:
        diff = ", ".join(f"{k} {v[0]} vs {v[1]}" for k, v in vs_next["plan_differences"].items())
        text.append(f"{vs_next['ratio']:.3f}x better on {obj.name} than the runner-up ({diff or 'ties'})")
    if vs_base and vs_base["ratio"] is not None:
        diff = ", ".join(f"{k} {v[0]} vs {v[1]}" for k, v in vs_base["plan_differences"].items())
        where = f"rank {vs_base['rank']}" if vs_base["rank"] else "not ranked"
        text.append(f"{vs_base['ratio']:.3f}x better on {obj.name} than the heuristic baseline ({where}; {diff or 'same plan'})")
    elif result.get("baseline") is None and result.get("interrupted"):
        text.append("the heuristic baseline was not among the plans that finished before the interrupt")
    elif result.get("baseline") is None:
        text.append("the heuristic baseline has no feasible plan here")
    if kind == "train" and vs_base:
        bd = vs_base["metrics"]
        moved = sorted((k for k in bd if k.startswith("breakdown.") and None not in bd[k]),
                       key=lambda k: -abs(bd[k][0] - bd[k][1]))
        if moved:
            k = moved[0]
            text.append(f"largest step-time change vs baseline: {k.split('.', 1)[1]} {bd[k][1]:.3f} s -> {bd[k][0]:.3f} s")
    return {"vs_runner_up": vs_next, "vs_baseline": vs_base, "text": text}
