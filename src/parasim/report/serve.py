"""How a `parasim serve` result looks as a table (from its JSON mapping)."""

from __future__ import annotations

from typing import Any

from parasim.report.expected_error import rows as expected_rows
from parasim.report.tables import console, kv_table
from parasim.units import fmt_gib


def _kv_rows(kv: dict[str, Any]) -> list[tuple[str, Any]]:
    pools = [("", kv)] if "kv_blocks" in kv else [(f"{k} pool: ", v) for k, v in kv.items()]
    rows = []
    for label, k in pools:
        rows += [(f"{label}weights / activations / runtime (GiB per GPU)",
                  f"{k['weights_gib']:.1f} / {k['activations_gib']:.1f} / {k['reserved_gib']:.1f} of {k['usable_gib']:.1f} usable"),
                 (f"{label}KV cache (tokens per engine)", f"{k['kv_tokens_per_engine']:,}"),
                 (f"{label}largest request needs (KV tokens)", f"{k['largest_request_kv_tokens']:,}")]
    return rows


def _slo_rows(out: dict[str, Any]) -> list[tuple[str, Any]]:
    s, slo = out["summary"], out["inputs"]["slo"]
    names = [n for n in ("ttft", "tpot", "e2e", "itl") if slo.get(f"{n}_s") is not None]
    if not names:
        return [("SLO attainment", None), ("goodput (req/s)", None)]
    given = ", ".join(f"{n.upper()} {slo[f'{n}_s']:g} s" + (f" at p{slo['itl_percentile']:g}" if n == "itl" else "")
                      for n in names)
    rows = [("SLOs", given)]
    if s["slo_attainment"] is not None:
        rows += [(f"SLO attainment (target {slo['attainment']:g})", s["slo_attainment"]),
                 ("goodput (req/s)", s["goodput_requests_per_s"])]
    if s.get("slo_itl_observed_s") is not None:
        rows.append((f"ITL p{slo['itl_percentile']:g} (ms)", round(s["slo_itl_observed_s"] * 1e3, 2)))
    ratio = s.get(f"slo_ratio_{s['slo_binding']}") if s.get("slo_binding") else None
    rows.append(("SLOs met / binding", f"{'yes' if s['slo_met'] else 'no'} / {s['slo_binding']}"
                 + (f" ({ratio:.2f} x its SLO)" if ratio is not None else "")))
    st = out.get("stability")
    if st and st["max_queueing_p50_s"] is not None:
        rows.append((f"stable (median queueing <= {st['max_queueing_p50_s']:g} s)",
                     "-" if st["stable"] is None else ("yes" if st["stable"] else "no")))
    return rows


def _capacity_rows(out: dict[str, Any]) -> list[tuple[str, Any]]:
    if "capacity" not in out:
        return []
    c = out["capacity"]
    at = {"capacity": "the rows above are the run at the capacity",
          "lowest_probe": "no rate passes; the rows above are the lowest rate tried",
          "burst": "nothing runs; the rows above are the burst run"}.get(c["summary_at"])
    rows = [("capacity (req/s)", c["capacity_requests_per_s"]),
            ("capacity limited by", ", ".join(c["binding"]) or "-"),
            ("saturated throughput, burst run (req/s)", c["saturated_requests_per_s"])]
    if at:
        rows.append(("capacity note", at))
    return rows


def _workflow_rows(w: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """Per-workflow end-to-end latency, overall and per kind (a --workflow run)."""
    if not w:
        return []

    def e2e(x: dict[str, Any]) -> str:
        if x.get("e2e_mean_s") is None:
            return f"{x['completed']} of {x['instances']} completed"
        return (f"{x['e2e_mean_s']:.2f} / {x['e2e_p50_s']:.2f} / {x['e2e_p99_s']:.2f} "
                f"({x['completed']} of {x['instances']} completed)")

    rows = [(f"workflow E2E mean / p50 / p99 (s), {w['mode']} calls", e2e(w))]
    if len(w["by_kind"]) > 1:
        rows += [(f"  {name}", e2e(x)) for name, x in w["by_kind"].items()]
    return rows


def render(out: dict[str, Any]) -> None:
    s, i = out["summary"], out["inputs"]
    p = i["plan"]
    client = f", at most {i['max_concurrency']} out" if i.get("max_concurrency") else ""
    title = (f"{i['model']} on {i['gpu']}: tp={p['tp']} pp={p['pp']} replicas={p['replicas']} "
             f"scheduler={p['scheduler']} ({s['requests']} requests{client})")
    pr = i.get("precision") or {}
    precision = [("weights / KV cache", f"{pr['weights']} / {pr['kv_cache']} ({pr['gemm']} GEMMs)")] if pr else []
    if not out["feasible"]:
        rows = [("feasible", False), ("reason", out["reason"]), *precision, *_kv_rows(out["kv"])]
        console().print(kv_table(title, rows))
        console().print(f"[bold red]infeasible[/]: {out['message']}")
        _notes(i)
        return
    ms = lambda v: None if v is None else round(v * 1e3, 2)  # noqa: E731
    rows = [*precision, ("completed / requests", f"{s['completed']} / {s['requests']}"),
            ("TTFT mean / p50 / p99 (ms)", f"{ms(s['ttft_mean_s'])} / {ms(s['ttft_p50_s'])} / {ms(s['ttft_p99_s'])}"),
            ("TPOT mean / p50 / p99 (ms)", f"{ms(s['tpot_mean_s'])} / {ms(s['tpot_p50_s'])} / {ms(s['tpot_p99_s'])}"),
            ("ITL mean / p99 (ms)", f"{ms(s['itl_mean_s'])} / {ms(s['itl_p99_s'])}"),
            ("E2E mean / p99 (s)", f"{s['e2e_mean_s']:.3f} / {s['e2e_p99_s']:.3f}" if s["e2e_mean_s"] is not None else "-"),
            ("queueing p99 (s)", s["queueing_p99_s"]),
            ("requests/s", s["requests_per_s"]), ("output tokens/s", s["output_tokens_per_s"]),
            ("input tokens/s", s["input_tokens_per_s"]),
            *_slo_rows(out),
            ("unservable (never fit) / shed (queue full) / dropped", f"{s['unservable']} / {s['shed']} / {s['dropped']}"),
            ("preemptions", s["preemptions"]), ("KV utilisation mean / peak", f"{s['kv_utilization_mean']:.2f} / {s['kv_utilization_peak']:.2f}"),
            ("GPUs / GPU-hours", f"{s['gpus']} / {s['gpu_hours']:.4f}"),
            ("energy (J/output token)", s["energy_j_per_token"]), ("cost ($/M output tokens)", s["cost_usd_per_m_tokens"])]
    rows += _capacity_rows(out)
    rows += _workflow_rows(s.get("workflows"))
    rows += _lockstep_rows(s.get("lockstep"))
    a = s.get("autoscale")
    if a:
        rows.append(("replicas mean / peak (autoscaled)", f"{a['replicas_mean']:.2f} / {a['replicas_peak']} of "
                     f"{a['min_replicas']}..{a['max_replicas']} ({a['scale_ups']} scale-ups, {a['scale_downs']} scale-downs)"))
    mg = s.get("migration")
    if mg:
        down = f", downtime mean {mg['downtime_mean_s'] * 1e3:.3f} ms" if mg["migrations"] else ""
        rows.append(("live migrations (llumnix) / dropped", f"{mg['migrations']} / {mg['aborted']} "
                     f"({fmt_gib(mg['bytes_moved'], 2)} moved{down})"))
    rows += expected_rows(out.get("expected_error"))
    rows.append(("simulation wall time (s)", round(out["sim_wall_s"], 3)))
    console().print(kv_table(title, rows))
    _notes(i)


def _lockstep_rows(lock: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """Attention-DP ranks in lockstep (serving.lockstep): the share of the ranks' time spent waiting
    for the slowest rank, and blog 10's balance ratio (mean over max tokens per iteration)."""
    if not lock:
        return []
    return [("attention-DP lockstep: wait / balance ratio", f"{100 * lock['wait_fraction']:.1f} % of rank time / "
             f"{lock['balance_ratio_mean']:.2f} ({lock['ep']} ranks, {lock['dummy_steps']} dummy steps)")]


def _notes(inputs: dict[str, Any]) -> None:
    """The defaults the run applied and the flags that did not apply as written (serving.resolve)."""
    for line in inputs.get("notes") or ():
        console().print(f"note: {line}")
