"""Figures of a planner result (`parasim plan train`, `parasim plan serve`): the ranked plans by
the objective, and the Pareto front of two objectives with the winner, the runner-up, the
heuristic baseline and any `--reference` plan marked.

The two objectives are the search's own `--pareto a,b` when it was given (its front, as the JSON
lists it), else a default pair the plan rows always carry: training tokens/s against peak memory
per GPU, serving goodput per GPU against latency (p99 TTFT + p99 TPOT x mean output tokens). The
front is `search.pareto.pareto_front` over the ranked plans, the same rule `--pareto` uses.
"""

from __future__ import annotations

from typing import Any

from parasim.report.figures import Figure, new_figure, register, to_svg
from parasim.search.objectives import SERVE_OBJECTIVES, TRAIN_OBJECTIVES, Objective
from parasim.search.pareto import pareto_front

#: plans shown in the ranked-plans figure
TOP_N = 15
DEFAULT_PAIR = {"plan train": ("tokens-per-s", "memory"), "plan serve": ("goodput-per-gpu", "latency")}
WINNER, RUNNER_UP, OTHER = "tab:green", "tab:olive", "tab:blue"


def _registry(out: dict[str, Any]) -> dict[str, Objective]:
    return TRAIN_OBJECTIVES if out["command"] == "plan train" else SERVE_OBJECTIVES


def _options(out: dict[str, Any]) -> dict[str, Any]:
    """The objectives' options as the search built them (search/plan_train.py, plan_serve.py)."""
    if out["command"] == "plan train":
        return {"tokens": out.get("tokens") or 0.0}
    return {"output_tokens_mean": (out.get("workload") or {}).get("output_tokens_mean", 0.0)}


def label(row: dict[str, Any]) -> str:
    """A plan's layout in a few characters."""
    if "dp" in row:  # training
        return (f"tp{row['tp']} pp{row['pp']} dp{row['dp']} cp{row['cp']} ep{row['ep']} mb{row['micro_batch']} "
                f"{row['recompute'][:4]} z{row['zero']}")
    ep = f" ep{row['ep']}" if (row.get("ep") or 1) > 1 else ""  # attention-DP + expert-parallel ranks
    return (f"tp{row['tp']} pp{row['pp']} x{row['replicas']}{ep} {row['scheduler']} tb{row.get('token_budget') or '-'} "
            f"mb{row.get('max_batch') or '-'} {row['weights']}")


def _value(obj: Objective, row: dict[str, Any] | None, options: dict[str, Any]) -> float | None:
    if not row or not row.get("metrics"):
        return None
    try:
        v = float(obj.value(row, options))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return v if v == v and abs(v) != float("inf") else None


def _axis(obj: Objective) -> str:
    better = "higher is better" if obj.maximise else "lower is better"
    return f"{obj.name}" + (f" ({obj.unit})" if obj.unit else "") + f", {better}"


def ranked_figure(out: dict[str, Any]) -> Figure:
    obj = _registry(out)[out["objective"]]
    rows = out["ranked"][:TOP_N]
    fig = new_figure(8.0, 0.8 + 0.3 * max(len(rows), 3))
    ax = fig.subplots()
    ys = list(range(len(rows)))[::-1]
    colors = [WINNER if r["rank"] == 1 else RUNNER_UP if r["rank"] == 2 else OTHER for r in rows]
    ax.barh(ys, [r["objective_value"] for r in rows], color=colors)
    screened = [r.get("fidelity") == "screen" for r in rows]
    ax.set_yticks(ys, [f"#{r['rank']} {label(r)}" + (" *" if s else "") for r, s in zip(rows, screened)], fontsize="small")
    options = _options(out)
    for name, gid, row, style in (("heuristic baseline", "baseline", out.get("baseline"), "--"),
                                  ("reference", "reference", out.get("reference"), ":")):
        v = _value(obj, row, options)
        if v is not None:
            where = f" (rank {row['rank']})" if row.get("rank") else ""
            ax.axvline(v, color="black", ls=style, lw=1.2, label=f"{name}{where}: {v:.4g}", gid=f"line-{gid}")
    ax.set_xlabel(_axis(obj))
    ax.set_title(f"{out['command']}: top {len(rows)} of {len(out['ranked'])} plans by {obj.name}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return Figure("Ranked plans", to_svg(fig),
                  f"The best plans by {obj.name}; the winner is green, the runner-up olive; dashed: the heuristic "
                  "baseline, dotted: the --reference plan"
                  + ("; * screened on fewer requests only, ranked after the fully simulated plans." if any(screened)
                     else "."))


def _pair(out: dict[str, Any]) -> tuple[Objective, Objective]:
    reg = _registry(out)
    names = (out.get("pareto") or {}).get("objectives") or DEFAULT_PAIR[out["command"]]
    return reg[names[0]], reg[names[1]]


def pareto_figure(out: dict[str, Any]) -> Figure:
    ox, oy = _pair(out)
    options = _options(out)
    pts = [(r, _value(ox, r, options), _value(oy, r, options)) for r in out["ranked"]]
    pts = [(r, x, y) for r, x, y in pts if x is not None and y is not None]
    front = pareto_front([r for r, _, _ in pts], [lambda r, o=o: o.score(r, options) for o in (ox, oy)])
    ranks = {r["rank"] for r in front}
    fig = new_figure(7.0, 4.2)
    ax = fig.subplots()
    ax.scatter([x for _, x, _ in pts], [y for _, _, y in pts], s=10, color="lightgrey", label="ranked plans")
    fx = sorted((x, y) for r, x, y in pts if r["rank"] in ranks)
    ax.plot([x for x, _ in fx], [y for _, y in fx], "-o", color=OTHER, ms=4, label="Pareto front", gid="front")
    marks = [("winner", next((r for r in out["ranked"] if r["rank"] == 1), None), WINNER, "*", 160),
             ("runner-up", next((r for r in out["ranked"] if r["rank"] == 2), None), RUNNER_UP, "D", 60),
             ("heuristic baseline", out.get("baseline"), "black", "X", 80),
             ("reference", out.get("reference"), "tab:red", "P", 80)]
    for name, row, color, marker, size in marks:
        x, y = _value(ox, row, options), _value(oy, row, options)
        if x is not None and y is not None:
            ax.scatter([x], [y], s=size, color=color, marker=marker, zorder=3, edgecolors="black", linewidths=0.5,
                       label=f"{name}: {label(row)}", gid=name.split()[-1])
    ax.set_xlabel(_axis(ox))
    ax.set_ylabel(_axis(oy))
    ax.set_title(f"Pareto front: {ox.name} vs {oy.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    return Figure("Pareto front", to_svg(fig),
                  f"Every ranked plan by {ox.name} and {oy.name}; the line joins the plans no other plan beats on "
                  "both. The winner, the runner-up, the heuristic baseline and the --reference plan are marked.")


@register("plan train")
@register("plan serve")
def plan_figures(out: dict[str, Any]) -> list[Figure]:
    if not out.get("ranked"):
        return []
    return [ranked_figure(out), pareto_figure(out)]
