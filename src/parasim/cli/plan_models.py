"""`parasim plan serve --models FILE`: place several models on the fewest GPUs (search/plan_multimodel.py).

The file sets each model's workload and SLOs, and the objective is fixed (fewest GPUs), so of `plan
serve`'s options only one --gpu, --max-gpus, --seed, the search space (--tp, --pp, --schedulers,
--precisions, --token-budgets, --max-batches, --screen-requests, --refine), the executor, the JSON
outputs and --emit-yaml (the placement as a models file `serve --models` runs) apply; any other given is refused naming it. Exit 1 when some model cannot meet its SLO or
the models need more than --max-gpus (the table says which).
"""

from __future__ import annotations

from typing import Any

import typer

from parasim.errors import InputError

APPLIES = ("models", "gpu", "max_gpus", "seed", "tp", "pp", "schedulers", "precisions", "token_budgets", "max_batches",
           "screen_requests", "refine", "workers", "executor", "ray_address", "json_out", "json_file", "emit_yaml")


def check_options(values: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Refuse every option given (not at its default) that the models file decides instead."""
    clash = sorted(k for k, v in values.items() if k not in APPLIES and v != defaults.get(k))
    if clash:
        name = {"report_file": "report"}.get(clash[0], clash[0]).replace("_", "-")
        raise InputError(clash[0], f"--models FILE sets each model's workload and SLOs, and the objective is the "
                                   f"fewest GPUs; drop --{name}")
    if len(values["gpu"]) != 1:
        raise InputError("gpu", f"--models places the models on one GPU type; got {len(values['gpu'])}")


def plan_models_cmd(values: dict[str, Any], defaults: dict[str, Any], base, bar) -> None:
    """Search (`bar`: plan_cmd's progress bar), print (table or JSON), write --json-out, exit as the
    module docstring says."""
    from parasim.cli import outputs
    from parasim.cli.serve_models import models_expected_error
    from parasim.report.tables import print_json
    import yaml

    from parasim.search.plan_multimodel import emit_models, plan_models
    from parasim.serving.multimodel import read_models

    check_options(values, defaults)
    outputs.check(values.get("json_file"), values.get("emit_yaml"))
    entries = read_models(values["models"])
    try:
        out = plan_models(entries, base, progress=bar)
    finally:
        bar.stop()
    out["models_file"] = str(values["models"])
    out["expected_error"] = models_expected_error(entries, {n: m.get("plan") for n, m in out["models"].items()}, out["gpu"])
    if values["json_out"]:
        print_json(out)
    else:
        render_placement(out)
    if values.get("json_file"):
        outputs.write_json(values["json_file"], out)
    if values.get("emit_yaml") and out["feasible"]:
        outputs.write_text(values["emit_yaml"], yaml.safe_dump(emit_models(entries, out), sort_keys=False))
        typer.echo(f"placement: {values['emit_yaml']} (run it: parasim serve --models {values['emit_yaml']} --gpu "
                   f"{out['gpu']} --gpus {out['totals']['gpus']} --seed {values['seed']})", err=True)
    if not out["feasible"]:
        raise typer.Exit(1)


def render_placement(out: dict[str, Any]) -> None:
    """The placement table (one row per model), the totals and the even split; or why none fits."""
    from parasim.cli.serve_models import print_expected
    from parasim.report.tables import console, kv_table, table

    c = console()
    rows = []
    for name, m in out["models"].items():
        p = m.get("plan") or {}
        plan = f"tp{p['tp']} pp{p['pp']} x{p['replicas']} {p['scheduler']}" if p else "-"
        rows.append((name, m["model"], m["gpus"], plan, m.get("slo_attainment"), m.get("ttft_p99_s"),
                     m.get("tpot_p99_s"), m.get("slo_met")))
    c.print(table(f"placement on {out['gpu']} (at most {out['max_gpus']} GPUs; fewest that meet each model's SLO)",
                  ("name", "model", "GPUs", "plan", "SLO attainment", "TTFT p99 s", "TPOT p99 s", "SLO met"), rows))
    if not out["feasible"]:
        for line in out["why"]:
            c.print(f"infeasible: {line}")
        return
    t, even = out["totals"], out["even_split"]
    c.print(kv_table("totals", [(k, t[k]) for k in ("gpus", "spare_gpus", "requests", "completed", "gpu_hours",
                                                    "energy_j", "cost_usd", "models_meeting_slo")]))
    short = ", ".join(even["models_short"]) or "none"
    c.print(f"even split of {out['max_gpus']} GPUs: {even['gpus_per_model']} per model leaves short: {short}; "
            f"it needs {even['gpus_needed']} GPUs for every model to meet its SLO, this placement {t['gpus']}")
    print_expected(c, out.get("expected_error") or {})
