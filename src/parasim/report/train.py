"""How a `parasim train` result looks as a table."""

from __future__ import annotations

from typing import Any

from parasim.report.expected_error import rows as expected_rows
from parasim.report.tables import console, fmt, kv_table
from parasim.units import GIB, fmt_gib


def _show(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _mixed_rows(hetero: dict | None) -> list[tuple[str, str]]:
    """A mixed cluster's placement and, per GPU group, what it holds and its memory peak."""
    if not hetero:
        return []
    rows = [("mixed placement", f"{hetero['placement']}, split {hetero['split']}")]
    for g in hetero["groups"]:
        holds = (f"stages {g['stages'][0]}-{g['stages'][-1]}, layers {','.join(map(str, g['layers']))}" if "stages" in g
                 else f"{g['replicas']} replicas x {g['micro_batches_per_replica']} micro-batches")
        mem = g["memory"]
        rows.append((f"  {g['gpus']} x {g['gpu']}", f"{holds}; peak {fmt_gib(mem['total_gib'] * GIB)} of "
                                                   f"{fmt_gib(mem['capacity_gib'] * GIB, None)}{'' if g['fits'] else ' (does not fit)'}"))
    return rows


def render(res, plan, defaults: dict[str, Any], overrides: dict[str, dict], expected: dict | None = None) -> None:
    p = plan
    rows = [
        ("model / gpu", f"{res.model} on {res.gpus} x {res.gpu}"),
        ("plan", f"tp={p.tp} pp={p.pp} dp={p.dp} cp={p.cp} ep={p.ep} v={p.virtual_stages} sp={p.sequence_parallel} "
                 f"mb={p.micro_batch} gb={p.global_batch} seq={p.seq_len} {p.precision} recompute={p.recompute} "
                 f"zero={p.zero} {p.schedule_name}"),
        ("step time", f"{res.step_time_s:.3f} s"),
        ("tokens/s (total, per GPU)", f"{fmt(res.tokens_per_s)}  ({fmt(res.tokens_per_s_per_gpu)})"),
        # causal: the attention executed; Megatron: full s x s attention, as papers publish (docs/metrics.md)
        ("model TFLOP/s per GPU, MFU", f"{res.model_tflops_per_gpu:.1f}  ({100 * res.mfu:.1f} %) causal;  "
                                       f"{res.megatron_model_tflops_per_gpu:.1f}  ({100 * res.megatron_mfu:.1f} %) Megatron"),
        ("hardware TFLOP/s per GPU, HFU", f"{res.hardware_tflops_per_gpu:.1f}  ({100 * res.hfu:.1f} %) causal;  "
                                          f"{res.megatron_hardware_tflops_per_gpu:.1f}  ({100 * res.megatron_hfu:.1f} %) Megatron"),
        *[(f"  {k}", f"{v:.4f} s ({100 * v / res.step_time_s:.1f} %)") for k, v in res.breakdown.items()],
        ("peak memory per GPU", f"{fmt_gib(res.peak_memory_bytes)} of {fmt_gib(res.memory['capacity_gib'] * GIB, None)}"),
        *[(f"  {k.removesuffix('_gib')}", fmt_gib(v * GIB)) for k, v in res.memory.items()
          if k.endswith("_gib") and k not in ("total_gib", "capacity_gib")],
        ("fits", res.fits),
    ]
    for k, v in res.varlen.items():
        rows.append((f"  varlen {k}", fmt(v)))
    rows += _mixed_rows(res.hetero)
    rows += expected_rows(expected)
    if defaults:
        rows.append(("defaults used", " ".join(f"{k}={_show(v)}" for k, v in defaults.items())))
    for k, o in overrides.items():
        rows.append((f"{o['by']} overrides the file", f"{k}: {_show(o['file'])} -> {_show(o['used'])}"))
    console().print(kv_table("parasim train", rows))
    if not res.fits:
        console().print("[bold red]does not fit[/]: peak memory exceeds the GPU's HBM (see the breakdown above)")
