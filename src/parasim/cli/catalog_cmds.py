"""`parasim models`, `parasim gpus`, `parasim inspect`: what the catalogs hold and what a model costs.

Memory sizes are GiB (parasim.units): the catalog's "80 GB" H100 shows as 80 GiB, the bytes it holds.
`inspect --gpu` exits 1 when the weights alone do not fit on the GPU (the rows are still printed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from parasim.cli import limits, outputs
from parasim.cost.dtypes import KV_PRECISIONS, WEIGHT_PRECISIONS, check_choice, dtype_bytes
from parasim.cost.flops import forward_flops_per_token, training_model_flops_per_token
from parasim.cost.layer import Sharding, check_sharding
from parasim.cost.memory import (kv_cache_bytes_per_token, kv_cache_bytes_per_token_per_gpu, weight_bytes_per_gpu,
                                 weight_params_per_gpu)
from parasim.errors import InputError
from parasim.report.tables import console, kv_table, print_json, table
from parasim.specs.catalog import accelerators, get_accelerator, get_model, models
from parasim.units import fmt_gib, gib


JsonFile = typer.Option(None, "--json-out", help="Also write the JSON to FILE.")


def _emit(rows, json_out: bool, json_file: Path | None, render) -> None:
    """The JSON (--json) or the table, then the file (--json-out): the answer is out first."""
    if json_out:
        print_json(rows)
    else:
        render(rows)
    if json_file:
        outputs.write_json(json_file, rows)


def models_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
               json_file: Optional[Path] = JsonFile) -> None:
    """List the model catalog (architecture facts with their sources)."""
    limits.check(limits.CATALOG, dict(locals()), names=limits.JSON_NAMES)
    outputs.check(json_file)
    _emit([m.summary() for m in models().values()], json_out, json_file, render_models)


def render_models(rows: list[dict]) -> None:
    console().print(table("parasim model catalog", ("name", "family", "layers", "hidden", "heads/kv", "experts",
                                                    "params total (B)", "active (B)"),
                          [(r["name"], r["family"], r["layers"], r["hidden"], f"{r['heads']}/{r['kv_heads']}",
                            f"{r['experts']}x top-{r['experts_per_token']}" if r["experts"] else "-",
                            round(r["params_total"] / 1e9, 2), round(r["params_active"] / 1e9, 2)) for r in rows]))


def gpus_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
             json_file: Optional[Path] = JsonFile) -> None:
    """List the accelerator catalog (dense peaks, HBM in GiB, links, power, price)."""
    limits.check(limits.CATALOG, dict(locals()), names=limits.JSON_NAMES)
    outputs.check(json_file)
    _emit([a.summary() for a in accelerators().values()], json_out, json_file, render_gpus)


def render_gpus(rows: list[dict]) -> None:
    console().print(table("parasim accelerator catalog (dense peaks)",
                          ("id", "bf16 TFLOP/s", "fp8 TFLOP/s", "HBM GiB", "HBM TB/s", "link GB/s (1-way)",
                           "TDP W", "$/h (assumed)"),
                          [(r["id"], r["bf16_tflops"], r["fp8_tflops"], r["hbm_gib"], r["hbm_tb_s"],
                            r["link_gb_s_one_way"], r["tdp_w"], r["price_usd_per_hour"]) for r in rows]))


def inspect_model(model_name: str, *, gpu: str | None = None, tp: int = 1, pp: int = 1, ep: int = 1,
                  weights: str = "bf16", kv_dtype: str = "bf16", context: int = 2048) -> dict:
    """Parameters, FLOPs per token, KV bytes per token and weight memory per GPU for a sharding."""
    model = get_model(model_name)
    check_choice("weights", weights, WEIGHT_PRECISIONS)
    check_choice("kv-dtype", kv_dtype, KV_PRECISIONS)
    if pp < 1 or pp > model.layers:
        raise InputError("pp", f"must be between 1 and the model's {model.layers} layers, got {pp}")
    if context < 0:
        raise InputError("context", f"must be >= 0, got {context}")
    check_sharding(model, Sharding(tp=tp, ep=ep))
    kvb = dtype_bytes(kv_dtype)
    w_params = weight_params_per_gpu(model, tp=tp, pp=pp, ep=ep)
    w_bytes = weight_bytes_per_gpu(model, tp=tp, pp=pp, weights=weights, ep=ep)  # serve's rule: 16-bit edges, scales
    out = {
        "model": model.name, "tp": tp, "pp": pp, "ep": ep, "weights": weights, "kv_dtype": kv_dtype,
        "params_total": model.params_total, "params_active": model.params_active,
        "matmul_params_active": model.matmul_params_active,
        "context": context,
        "flops_per_token": forward_flops_per_token(model, context),
        "flops_per_token_no_attention": 2 * model.matmul_params_active,
        "training_flops_per_token": training_model_flops_per_token(model, context),
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(model, kvb),
        "kv_cache_bytes_per_token_per_gpu": kv_cache_bytes_per_token_per_gpu(model, tp=tp, pp=pp, kv_bytes=kvb),
        "weight_params_per_gpu": w_params,
        "weight_memory_bytes_per_gpu": w_bytes,
        "weight_memory_gib_per_gpu": gib(w_bytes),
    }
    if gpu:
        acc = get_accelerator(gpu)
        free = acc.hbm_bytes - w_bytes
        out.update({"gpu": acc.id, "hbm_bytes": acc.hbm_bytes, "weights_fit": free > 0,
                    "kv_tokens_capacity_per_gpu_group": max(0.0, free) // out["kv_cache_bytes_per_token_per_gpu"]})
    return out


def inspect_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Catalog name (see `parasim models`) or a path to a HF config.json."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Accelerator id (see `parasim gpus`) to check the fit on."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel degree."),
    pp: int = typer.Option(1, "--pp", help="Pipeline-parallel degree."),
    ep: int = typer.Option(1, "--ep", help="Expert-parallel degree (MoE models)."),
    weights: str = typer.Option("bf16", "--weights", help=f"Weight precision: {', '.join(WEIGHT_PRECISIONS)}."),
    kv_dtype: str = typer.Option("bf16", "--kv-dtype", help=f"KV-cache precision: {', '.join(KV_PRECISIONS)}."),
    context: int = typer.Option(2048, "--context", help="Context length for the attention term of FLOPs per token."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    json_file: Optional[Path] = JsonFile,
) -> None:
    """Parameters, FLOPs per token, KV-cache bytes per token and weight memory per GPU."""
    limits.check(limits.INSPECT, dict(locals()), names=limits.JSON_NAMES)
    outputs.check(json_file)
    out = inspect_model(model, gpu=gpu, tp=tp, pp=pp, ep=ep, weights=weights, kv_dtype=kv_dtype, context=context)
    _emit(out, json_out, json_file, render_inspect)
    if gpu and not out["weights_fit"]:
        raise typer.Exit(1)


def render_inspect(out: dict) -> None:
    tp, pp, ep, context = out["tp"], out["pp"], out["ep"], out["context"]
    weights, kv_dtype = out["weights"], out["kv_dtype"]
    rows = [
        ("parameters, total", f"{out['params_total'] / 1e9:.3f} B"),
        ("parameters, active per token", f"{out['params_active'] / 1e9:.3f} B"),
        (f"forward FLOPs per token (context {context})", f"{out['flops_per_token'] / 1e9:.2f} GFLOP"),
        (f"training FLOPs per token (seq {context})", f"{out['training_flops_per_token'] / 1e9:.2f} GFLOP"),
        (f"KV cache per token ({kv_dtype})", f"{out['kv_cache_bytes_per_token']:,.0f} B"),
        (f"KV cache per token per GPU (tp={tp}, pp={pp})", f"{out['kv_cache_bytes_per_token_per_gpu']:,.0f} B"),
        (f"weights per GPU ({weights}, tp={tp}, pp={pp}, ep={ep})", fmt_gib(out["weight_memory_bytes_per_gpu"], 2)),
    ]
    if "gpu" in out:
        rows += [(f"fits on {out['gpu']} ({fmt_gib(out['hbm_bytes'], None)})", out["weights_fit"]),
                 ("KV tokens that fit in the rest", f"{out['kv_tokens_capacity_per_gpu_group']:,.0f}")]
    console().print(kv_table(f"{out['model']}", rows))


def register(app: typer.Typer) -> None:
    app.command("models")(models_cmd)
    app.command("gpus")(gpus_cmd)
    app.command("inspect")(inspect_cmd)
