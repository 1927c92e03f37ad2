"""How `parasim plan train` and `parasim plan serve` results look as tables (the JSON is the
result itself)."""

from __future__ import annotations

from typing import Any

from parasim.report.expected_error import rows as expected_rows
from parasim.report.tables import console, fmt, table


def _train_cells(r: dict, multi: bool = False) -> list[Any]:
    m = r["metrics"]
    days = r.get("time_to_train_s")
    return [r.get("rank") or "-", f"{r['gpus']} {r['gpu']}" if multi else r["gpus"], r["tp"], r["pp"], r["dp"], r["cp"], r["ep"],
            r["virtual_stages"], r["micro_batch"], r["global_batch"], r["recompute"][:4], r["zero"],
            f"{m['tokens_per_s'] / 1e6:.3f}", f"{100 * m['mfu']:.1f}", f"{m['step_time_s']:.3f}",
            f"{m['peak_memory_gib_per_gpu']:.1f}", "-" if days is None else f"{days / 86400:.1f}"]


#: MFU% counts causal attention (metrics.mfu); the Megatron-convention figure is metrics.megatron_mfu;
#: days: the time to train --tokens, failures and checkpoints included (time_to_train_s; with --tokens,
#: in place of `step s`)
TRAIN_COLUMNS = ("rank", "GPUs", "tp", "pp", "dp", "cp", "ep", "v", "mb", "gb", "rcmp", "zero", "Mtok/s",
                 "MFU%\ncausal", "step s", "mem GiB", "days")


def goodput_line(best: dict | None) -> str | None:
    """The winner's goodput and checkpoint interval (training/goodput.py), under the table."""
    g = (best or {}).get("metrics", {}).get("goodput")
    if not g:
        return None
    return (f"goodput of rank 1: {100 * g['goodput_fraction']:.1f} % (job MTBF {g['job_mtbf_s'] / 3600:.2f} h, "
            f"checkpoint every {g['checkpoint_interval_steps']} steps, {g['recovery_s']:.0f} s restart and load)")


#: the `bal` column (plan train --seq-len-dist): three letters keep the table within 100 characters
VARLEN_SHORT = {"static": "sta", "bytescale": "bsc", "zeppelin": "zep", "flexsp": "fsp"}


def batch_line(out: dict) -> str:
    """How the global batch (the `gb` column, sequences) was chosen."""
    if out["global_batch"] is not None:
        return f"global batch: {out['global_batch']} sequences of {out['seq_len']} tokens (exact)"
    tol = out["batch_tolerance"]
    how = "the default --batch-tolerance" if "batch_tolerance" in out.get("defaults", {}) else "--batch-tolerance"
    return (f"global batch: about {out['global_batch_tokens']:,} tokens +-{100 * tol:g} % ({how} {tol:g}); gb = the "
            f"{out['seq_len']}-token sequences nearest it that each plan's dp x mb (interleaved: x pp) divides")


def reference_line(out: dict) -> str | None:
    ref = out.get("reference")
    if not ref:
        return None
    given = ",".join(f"{k}={v}" for k, v in ref["given"].items())
    if ref.get("in_ranking"):
        where = f"rank {ref['rank']} of {len(out['ranked'])}"
    elif ref.get("rank"):
        where = f"would rank {ref['rank']} of {len(out['ranked'])} (simulated on its own, not in the ranked list)"
    else:
        where = f"not ranked ({ref.get('reason')})"
    filled = " ".join(f"{k}={v}" for k, v in (ref.get("filled") or {}).items())
    return f"reference plan {given}: {where}" + (f"; filled from {ref['filled_by']}: {filled}" if filled else "")


def render_train(out: dict, top: int) -> None:
    c = console()
    multi = len(out["gpu"]) > 1
    # one (GPU type, count) pair: it goes in the title and its column is left out, so the table
    # (with 5-digit GPU counts and 4-digit batches) stays within 100 characters
    single = not multi and len(out["gpus"]) == 1
    # with --tokens the days column takes the step-time column's place (the width stays in 100)
    drop = {1} if single else set()
    drop.add(TRAIN_COLUMNS.index("step s") if out.get("tokens") else len(TRAIN_COLUMNS) - 1)
    cols = [k for i, k in enumerate(TRAIN_COLUMNS) if i not in drop]
    varlen = any(r.get("seq_len_dist") for r in out["ranked"])  # which balancing strategy each row ran
    at = cols.index("zero") + 1
    if varlen:
        cols.insert(at, "bal")

    def cells(r: dict, label: Any) -> list[Any]:
        row = [label, *_train_cells(r, multi)[1:]]
        row = [v for i, v in enumerate(row) if i not in drop]
        return row[:at] + [VARLEN_SHORT.get(r.get("varlen_balance"), "-")] + row[at:] if varlen else row

    on = f"{out['gpus'][0]} x {out['gpu'][0]}" if single else ", ".join(out["gpu"])
    c.print(table(f"plan train: {out['model']} on {on} - best {top} of {len(out['ranked'])} feasible by "
                  f"{out['objective']}", cols, [cells(r, r.get("rank") or "-") for r in out["ranked"][:top]]))
    c.print(batch_line(out))
    if "cudnn_version" in out.get("defaults", {}):
        c.print(f"attention on Blackwell priced at cuDNN {out['defaults']['cudnn_version']}'s fused-attention curve "
                "(Transformer Engine; no release given: --cudnn-version names yours)")
    if goodput_line(out.get("best")):
        c.print(goodput_line(out.get("best")))
    for line in _mixed_lines(out["ranked"][:top]):
        c.print(line)
    extra = []
    if out.get("baseline"):
        extra.append(cells(out["baseline"], "base"))
    ref = out.get("reference")
    if ref and ref.get("metrics") and ref.get("rank"):
        extra.append(cells(ref, "ref"))  # its rank is on the reference line below (a narrow column)
    if extra:
        c.print(table("heuristic baseline / reference plan", cols, extra))
    if ref:
        c.print(reference_line(out))
    render_common(out)


def _mixed_lines(rows: list[dict]) -> list[str]:
    """Where each ranked plan on a mixed cluster put its work: layers per pipeline rank (stages) or
    micro-batches per replica of each GPU group (replicas)."""
    out = []
    for r in rows:
        h = r["metrics"].get("hetero")
        if not h:
            continue
        parts = [(f"{g['gpu']} layers {','.join(map(str, g['layers']))}" if "layers" in g
                  else f"{g['gpu']} {g['replicas']} x {g['micro_batches_per_replica']} mb") for g in h["groups"]]
        out.append(f"rank {r.get('rank') or '-'}: {h['placement']} ({'; '.join(parts)})")
    return out


def render_common(out: dict) -> None:
    c = console()
    if out["pruned"]:
        from parasim.search.prune import REASONS

        c.print(table("pruned (raw combinations dropped, per reason)", ("reason", "count", "meaning"),
                      [(k, v, REASONS.get(k, "")) for k, v in out["pruned"].items()]))
    if out.get("pareto"):
        p = out["pareto"]
        c.print(f"Pareto front ({' vs '.join(p['objectives'])}): ranks {', '.join(str(x) for x in p['front'])}")
    for line in out["explanation"]["text"]:
        c.print(f"- {line}")
    for label, line in expected_rows(out.get("expected_error")):
        c.print(f"winner's {label}: {line}")
    c.print(_search_line(out) + f" in {fmt(out['search_wall_s'])} s"
            + (" [bold yellow](interrupted: best so far)[/]" if out["interrupted"] else ""))


def _search_line(out: dict) -> str:
    """What the search ran. The serving planner simulates a layout more than once (screen, knob variants,
    full-size refine), so its count is of simulations, not of plans in the raw space of layouts."""
    sims = (out.get("stages") or {}).get("simulated")
    if out.get("command") == "plan serve" and sims:
        return (f"ran {out['evaluated']} simulations ({sims['screen']} screening layouts, {sims['knobs']} of knob "
                f"variants, {sims['refine']} at full size) from a raw space of {out['space_size']:,} layouts")
    return f"evaluated {out['evaluated']} plans of a raw space of {out['space_size']:,}"


SERVE_COLUMNS = ("rank", "GPUs", "layout", "scheduler", "weights/kv", "goodput /GPU", "TTFT p99 s", "TPOT p99 ms",
                 "attain", "$/M tok", "J/tok", "requests")


def _pp(pp: int | None) -> str:
    """A disaggregated pool's PP in its layout cell, shown only when it pipelines."""
    return f"pp{pp}" if pp and pp > 1 else ""


def _ep(ep: int | None) -> str:
    """An attention-DP + expert-parallel plan's EP degree in its layout cell, shown only when > 1."""
    return f" ep{ep}" if ep and ep > 1 else ""


def _serve_cells(r: dict, multi: bool = False) -> list[Any]:
    s = r["metrics"]["summary"]
    from parasim.search.plan_serve import disaggregated

    sched = r["scheduler"]
    layout = (f"P{r['prefill_gpus']}/tp{r['prefill_tp']}{_pp(r.get('prefill_pp'))} "
              f"D{r['decode_gpus']}/tp{r['decode_tp']}{_pp(r.get('decode_pp'))}"
              if disaggregated(r) else f"tp{r['tp']} pp{r['pp']} x{r['replicas']}" + _ep(r.get("ep")))
    knobs = "/".join(str(v) for v in (r.get("token_budget"), r.get("max_batch")) if v is not None)
    return [r.get("rank") or "-", f"{r['gpus']} {r['gpu']}" if multi else r["gpus"], layout,
            f"{sched} {knobs}".strip(), f"{r['weights']}/{r.get('kv_dtype') or '-'}", f"{r['goodput_per_gpu']:.3f}",
            f"{s['ttft_p99_s']:.3f}", f"{1e3 * s['tpot_p99_s']:.1f}",
            "-" if s.get("slo_attainment") is None else f"{s['slo_attainment']:.3f}",
            f"{s['cost_usd_per_m_tokens']:.3f}", f"{s['energy_j_per_token']:.3f}",
            f"{r['requests']}" + ("" if r["fidelity"] == "full" else " (screen)")]


def render_serve(out: dict, top: int) -> None:
    c = console()
    multi = len(out["gpu"]) > 1
    c.print(table(f"plan serve: {out['model']} - best {top} of {len(out['ranked'])} meeting the SLO by {out['objective']}",
                  SERVE_COLUMNS, [_serve_cells(r, multi) for r in out["ranked"][:top]]))
    b = out.get("baseline")
    if b and b.get("metrics"):
        c.print(table("heuristic baseline", SERVE_COLUMNS, [["base", *_serve_cells(b, multi)[1:]]]))
    elif b and b.get("feasible") is None:
        c.print(f"heuristic baseline (tp={b['tp']} x {b['replicas']} replicas): {b.get('message')}")
    elif b:
        c.print(f"heuristic baseline (tp={b['tp']} x {b['replicas']} replicas) is infeasible: {b.get('message')}")
    pr = out["precisions"]
    c.print(f"precisions searched (weights/KV): {', '.join(pr['searched'])} - {pr['why']}")
    for g, how in pr["per_gpu"].items():
        odd = {w: m for w, m in how.items() if m != "native" and m != "16-bit"}
        for w, m in odd.items():
            c.print(f"  {w} on {g}: {m}")
    if out.get("expert_parallel"):
        e = out["expert_parallel"]
        c.print(f"expert parallel searched: ep {', '.join(str(x) for x in e['searched'])} - {e['why']}")
    st = out["stages"]
    c.print(f"stages: {st['layouts']} layouts and {st['knob_variants']} knob variants screened on "
            f"{st['screen_requests']} requests; {st['refined']} re-run on all {st['full_requests']}")
    render_common(out)
