"""`parasim serve --models FILE`: several models on a partitioned cluster (serving/multimodel.py).

The file sets each model's workload, SLOs and placement, so of `serve`'s options only the cluster's
(--gpu, --gpus, --gpus-per-node), --seed and the JSON outputs apply; any other given (flag or `-c`
key) is refused naming it, never ignored.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from parasim.errors import InputError

#: serve options that apply with --models (the rest are per model, in the file)
APPLIES = ("models", "gpu", "gpus", "gpus_per_node", "seed", "json_out")


def check_options(given: set[str]) -> None:
    """Refuse every option the models file decides instead."""
    clash = sorted(given - set(APPLIES))
    if clash:
        k = clash[0]
        raise InputError(k, f"--models FILE sets each model's workload, SLOs and placement; drop --{k.replace('_', '-')} "
                            f"(with --models only {', '.join('--' + a.replace('_', '-') for a in APPLIES[1:])} apply)")


def serve_models(opts: dict[str, Any], given: set[str], json_output: bool) -> None:
    """Run, print (table or JSON), write --json-out; exit 1 when a model's plan cannot run."""
    from parasim.cli import outputs
    from parasim.report.tables import dumps
    from parasim.serving.multimodel import read_models, simulate_models
    from parasim.specs.catalog import get_accelerator

    check_options(given)
    if not opts.get("gpu"):
        raise InputError("gpu", "required (an accelerator id, see `parasim gpus`)")
    if opts.get("gpus") is None:
        raise InputError("gpus", "required with --models: the cluster's GPUs, partitioned among the models")
    outputs.check(opts.get("json_out"))
    entries = read_models(opts["models"])
    out = simulate_models(entries, get_accelerator(str(opts["gpu"])), int(opts["gpus"]), seed=int(opts["seed"]),
                          gpus_per_node=opts.get("gpus_per_node"))
    out["inputs"]["models_file"] = str(opts["models"])
    out["expected_error"] = models_expected_error(entries, {n: m.get("plan") for n, m in out["summary"]["models"].items()},
                                                  str(opts["gpu"]))
    text = dumps(out)
    if json_output:
        typer.echo(text)
    else:
        render_models(json.loads(text))
    if opts.get("json_out"):
        outputs.write_text(opts["json_out"], text + "\n")
    if not out["feasible"]:
        raise typer.Exit(1)


def models_expected_error(entries, plans: dict[str, dict[str, Any] | None], gpu: str) -> dict[str, Any]:
    """Each model's validated error (validation.expected_error: its nearest category of published
    runs), by model name; None for a model with no plan."""
    from parasim.specs.catalog import get_accelerator, get_model
    from parasim.validation.expected_error import serving_expected

    acc = get_accelerator(gpu)
    out: dict[str, Any] = {}
    for e in entries:
        plan = plans.get(e.name)
        spec = get_model(e.model)
        out[e.name] = None if plan is None else serving_expected(spec, acc, weights=plan.get("weights") or e.placement.get(
            "weights") or spec.native_weights)
    return out


def print_expected(c, expected: dict[str, Any]) -> None:
    """One line per model: its headline expected error."""
    from parasim.report.expected_error import by_metric, text

    for name, e in expected.items():
        if e:
            metric, first = next(iter(by_metric(e).items()))
            c.print(f"expected error of {name} ({metric}): {text(first)}")


def render_models(out: dict[str, Any]) -> None:
    """One row per model (placement, latency tails, SLO attainment), then the cluster's totals."""
    from parasim.report.tables import console, kv_table, table

    s = out["summary"]
    rows = []
    for name, m in s["models"].items():
        p = m["plan"]
        rows.append((name, m["model"], m["gpus"], f"tp{p['tp']}xpp{p['pp']}x{p['replicas']} {p['scheduler']}",
                     m["requests_per_s"], m["ttft_p99_s"], m["tpot_p99_s"], m["slo_attainment"], m["slo_met"]))
    c = console()
    c.print(table(f"{len(rows)} models on {out['inputs']['cluster_gpus']} x {out['inputs']['gpu']} (partitioned)",
                  ("name", "model", "GPUs", "plan", "req/s", "TTFT p99 s", "TPOT p99 s", "SLO attain.", "SLO met"), rows))
    c.print(kv_table("cluster totals", [(k, s[k]) for k in ("gpus", "idle_gpus", "requests", "completed",
                                                            "output_tokens", "makespan_s", "gpu_hours", "energy_j",
                                                            "cost_usd", "models_meeting_slo", "slo_met_all")]))
    print_expected(c, out.get("expected_error") or {})
    for name, m in s["models"].items():
        if not m["feasible"]:
            c.print(f"{name}: cannot run: {m['message']}")
