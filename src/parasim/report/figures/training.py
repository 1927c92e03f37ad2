"""Figures of a `train` result: the step as a Gantt chart per pipeline stage with its breakdown
bar, and the memory of the fullest GPU against its capacity.

Drawn from the JSON only: the Gantt needs the result's `timeline` key (`train --timeline`); without
it the step figure is the breakdown bar alone and its caption says so.
"""

from __future__ import annotations

from typing import Any

from parasim.report.figures import Figure, add_unscaled, bars_patch, new_figure, register, to_svg
from parasim.report.train_trace import has_timeline

#: Gantt colours by span kind (training/timeline.py); compute on the upper lane of a stage, the rest below
COLOURS = {"F": "#4C72B0", "B": "#55A868", "W": "#8CC084", "straggler": "#333333", "recv": "#8172B2",
           "send": "#8172B2", "tp_cp_ep": "#DD8452", "fsdp": "#C44E52", "grad_reduce_overlapped": "#CCCCCC",
           "grad_reduce": "#937860", "param_gather": "#937860", "optimizer": "#DA8BC3"}
LEGEND = {"F": "forward", "B": "backward", "W": "weight-grad", "tp_cp_ep": "TP/CP/EP comm (exposed)",
          "fsdp": "FSDP comm (exposed)", "recv": "pp send/recv", "grad_reduce_overlapped": "DP grad reduce (under backward)",
          "grad_reduce": "DP grad reduce / param gather (exposed)", "optimizer": "optimizer",
          "straggler": "straggler wait"}
BREAKDOWN = (("compute", "#4C72B0"), ("exposed_comm", "#DD8452"), ("bubble", "#E5E5E5"),
             ("optimizer", "#DA8BC3"), ("straggler", "#333333"), ("moe_host", "#8C613C"))
MEMORY = (("weights_gib", "weights", "#4C72B0"), ("gradients_gib", "gradients", "#55A868"),
          ("optimizer_gib", "optimizer state", "#DA8BC3"), ("activations_gib", "activations", "#DD8452"),
          ("reserved_gib", "reserved", "#BBBBBB"))


@register("train")
def training_figures(result: dict[str, Any]) -> list[Figure]:
    return [_step_figure(result), _memory_figure(result)]


def _step_figure(result: dict[str, Any]) -> Figure:
    tl = result.get("timeline")
    step = float(result.get("step_time_s") or 0.0)
    if not has_timeline(result):
        fig = new_figure(7.0, 1.8, (0.3, 1.9, 0.5, 0.35))
        _breakdown_bar(fig.add_subplot(1, 1, 1), result.get("breakdown") or {}, step)
        return Figure("Step time breakdown", to_svg(fig),
                      "Where the critical stage's step time goes. The per-stage timeline (Gantt) needs the "
                      "step's op intervals: run `parasim train ... --timeline FILE` (or save its `--json-out`).")
    stages = tl["stages"]
    gantt_in = max(1.0, 0.55 * len(stages))
    fig = new_figure(8.0, 1.6 + 0.55 * len(stages) + 0.5, (0.85, 2.65, 0.5, 0.35))
    grid = fig.add_gridspec(2, 1, height_ratios=[gantt_in, 0.6], hspace=0.8 / ((gantt_in + 0.6) / 2))
    _gantt(fig.add_subplot(grid[0]), stages, step, tl.get("critical_stage"))
    _breakdown_bar(fig.add_subplot(grid[1]), result.get("breakdown") or {}, step)
    plan = result.get("plan") or {}
    return Figure("Training step timeline", to_svg(fig),
                  f"One optimizer step ({tl.get('schedule', plan.get('schedule', ''))}, pp {len(stages)}, "
                  f"{tl.get('micro_batches')} micro-batches x {tl.get('chunks')} chunk(s)) per pipeline stage: "
                  "compute on the upper lane (forward, backward), exposed communication and the optimizer below. "
                  "White gaps on the compute lane are the pipeline bubble. The bar below splits the critical "
                  "stage's step time as the result's `breakdown` does.")


def _gantt(ax, stages: list[dict], step: float, critical) -> None:
    # imported here, not at the top: a report worker imports this module before any simulator
    from parasim.training.timeline import STREAM_OF

    compute_lane = tuple(k for k, stream in STREAM_OF.items() if stream == "compute")
    order = tuple(STREAM_OF)
    seen: set[str] = set()
    for st in stages:
        y = st["stage"]
        by_kind: dict[str, list[tuple[float, float]]] = {}
        for kind, start, dur, *_ in st["spans"]:
            if dur > 0:
                by_kind.setdefault(kind, []).append((start, dur))
        for kind in sorted(by_kind, key=lambda k: order.index(k) if k in order else len(order)):
            upper = kind in compute_lane
            label = LEGEND.get(kind) if LEGEND.get(kind) and LEGEND[kind] not in seen else None
            if label:
                seen.add(label)
            add_unscaled(ax, bars_patch(by_kind[kind], y - 0.42 if upper else y + 0.04, 0.38, COLOURS.get(kind, "#999")),
                         label)
    ax.set_ylim(len(stages) - 0.5, -0.5)
    ax.set_yticks(range(len(stages)), [f"stage {s['stage']}{' *' if s['stage'] == critical else ''}" for s in stages])
    ax.set_xlim(0, step * 1.001 if step > 0 else 1)
    ax.set_xlabel("time in step (s)")
    ax.set_title("Step timeline per pipeline stage (* critical stage)", y=1.0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


def _breakdown_bar(ax, breakdown: dict[str, float], step: float) -> None:
    left = 0.0
    for key, colour in BREAKDOWN:
        if key == "moe_host" and key not in breakdown:  # MoE models only
            continue
        w = float(breakdown.get(key) or 0.0)
        ax.barh(0, w, left=left, color=colour, edgecolor="#666666", linewidth=0.4,
                label=f"{key.replace('_', ' ')} {w:.3g} s")
        left += w
    ax.set_yticks([])
    ax.set_xlim(0, max(step, left) * 1.001 if max(step, left) > 0 else 1)
    ax.set_xlabel("seconds of the step (critical stage)")
    ax.set_title(f"Step time breakdown: {step:.4g} s", fontsize=9, y=1.0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.2), fontsize=7, frameon=False)


def _memory_figure(result: dict[str, Any]) -> Figure:
    mem = result.get("memory") or {}
    fig = new_figure(6.5, 2.2, (1.25, 1.9, 0.5, 0.35))
    ax = fig.add_subplot(1, 1, 1)
    left = 0.0
    for key, label, colour in MEMORY:
        w = float(mem.get(key) or 0.0)
        ax.barh(0, w, left=left, color=colour, edgecolor="#666666", linewidth=0.4, label=f"{label} {w:.1f} GiB")
        left += w
    cap = float(mem.get("capacity_gib") or 0.0)
    if cap > 0:
        ax.axvline(cap, color="#C44E52", linestyle="--", linewidth=1.2, label=f"capacity {cap:.0f} GiB")
    ax.set_yticks([0], [f"GPU of stage {mem.get('rank', 0)}"])
    ax.set_xlim(0, max(left, cap) * 1.05 if max(left, cap) > 0 else 1)
    ax.set_xlabel("memory per GPU (GiB)")
    fits = result.get("fits")
    ax.set_title(f"Peak memory per GPU: {left:.1f} GiB{'' if fits is None else ' (fits)' if fits else ' (does NOT fit)'}",
                 y=1.0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return Figure("Memory per GPU", to_svg(fig),
                  "The fullest GPU at its peak (the stage holding the most in-flight activations): weights, "
                  "gradients, optimizer state (after ZeRO sharding), activations and the runtime reserve, "
                  "against the GPU's capacity.")
