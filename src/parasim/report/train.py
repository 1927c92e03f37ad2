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


def goodput_rows(out: dict[str, Any]) -> list[tuple[str, str]]:
    """The goodput block of a `train` result (training/goodput.py) as table rows."""
    g = out.get("goodput")
    if not g:
        return []
    a = g["assumptions"]
    rows = [("goodput (failures, checkpoints)", f"{100 * g['goodput_fraction']:.1f} %  (job MTBF {g['job_mtbf_s'] / 3600:.2f} h, "
                                                f"{g['interruptions_per_day']:.2f} interruptions/day)"),
            ("  checkpoint", f"{fmt_gib(g['checkpoint_bytes'])} every {g['checkpoint_interval_steps']} steps "
                             f"({g['checkpoint_interval_s'] / 60:.1f} min), stalls {g['checkpoint_stall_s']:.2f} s"
                             f"{' (async save)' if a['async_save'] else ''}"),
            ("  per failure", f"{g['lost_work_per_failure_s']:.0f} s of work lost + {g['recovery_s']:.0f} s restart and load")]
    if out.get("time_to_train_s") is not None:
        rows.append(("time to train", f"{out['time_to_train_s'] / 86400:.2f} days for {out['tokens']:.4g} tokens"))
    elif out.get("tokens"):
        rows.append(("time to train", "never: the job fails faster than it restarts"))
    return rows


def render(res, plan, defaults: dict[str, Any], overrides: dict[str, dict], expected: dict | None = None,
           goodput: dict[str, Any] | None = None) -> None:
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
        *goodput_rows(goodput or {}),
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
