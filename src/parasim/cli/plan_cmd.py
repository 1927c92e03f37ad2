"""`parasim plan train|serve`: search the plans, rank them, explain the winner, emit its config.

`--json` prints one object (best, ranked, evaluated, pruned, baseline, search_wall_s, ...);
otherwise a top-k table, the pruning counts, the Pareto front and the explanation. `--emit-yaml`
writes the winner as a config `parasim train -c` / `parasim serve -c` accepts as is. A progress
bar runs on stderr when it is a terminal and --json is off; Ctrl-C ends the search early and the
best plan found so far is reported.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from parasim.errors import InputError
from parasim.report.tables import console, fmt, print_json, table

plan_app = typer.Typer(name="plan", help="Search parallel plans for training or serving.", no_args_is_help=True,
                       add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="rich")

PANEL_SPACE = "Search space (comma lists override the defaults)"
PANEL_RUN = "Execution and output"

# options both planners take, declared once
Top = Annotated[int, typer.Option("--top", help="Rows of the ranked table.")]
Workers = Annotated[Optional[int], typer.Option("--workers", help="Worker processes (default: cores).",
                                                rich_help_panel=PANEL_RUN)]
Executor = Annotated[str, typer.Option("--executor", help="local | ray.", rich_help_panel=PANEL_RUN)]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster address (default: a local instance).",
                                                   rich_help_panel=PANEL_RUN)]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object.", rich_help_panel=PANEL_RUN)]


# --- small parsers ---------------------------------------------------------------------------------
def int_list(value: str | None, field: str) -> tuple[int, ...]:
    if not value:
        return ()
    out = []
    for part in value.split(","):
        part = part.strip()
        try:
            v = int(float(part)) if part else None
        except ValueError:
            v = None
        if v is None or v < 1 or (part and float(part) != int(float(part))):
            raise InputError(field, f"expected positive integers separated by commas, got {value!r}")
        out.append(v)
    return tuple(out)


def str_list(value: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip()) if value else ()


def gpu_counts(values: list[str], field: str = "gpus") -> tuple[int, ...]:
    """`16384`, `8192,16384`, or a doubling range `1024-16384`."""
    out: list[int] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo_s, hi_s = part.split("-", 1)
                lo, hi = int_list(lo_s, field)[0], int_list(hi_s, field)[0]
                if lo > hi:
                    raise InputError(field, f"range {part!r} is empty")
                v = lo
                while v <= hi:
                    out.append(v)
                    v *= 2
            else:
                out.extend(int_list(part, field))
    if not out:
        raise InputError(field, "give a GPU count, a list or a range like 1024-16384")
    return tuple(sorted(set(out)))


def key_values(spec: str | None, field: str) -> dict[str, Any] | None:
    """`tp=8,pp=16,recompute=none` -> mapping (ints where they parse)."""
    if not spec:
        return None
    out: dict[str, Any] = {}
    for part in spec.split(","):
        if "=" not in part:
            raise InputError(field, f"expected key=value pairs separated by commas, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        try:
            out[k.replace("-", "_")] = int(v)
        except ValueError:
            out[k.replace("-", "_")] = {"true": True, "false": False}.get(v.lower(), v)
    return out


class Bar:
    """rich progress on stderr; silent when asked or when stderr is not a terminal."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.label = label
        self._p = None
        self._task = None

    def start(self, total: int) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if self._p is None:
            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self._p.start()
        self._task = self._p.add_task(self.label, total=total)

    def advance(self, n: int) -> None:
        if self._p is not None and self._task is not None:
            self._p.advance(self._task, n)

    def stop(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None


def write_yaml(path: Path, mapping: dict[str, Any]) -> None:
    try:
        path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    except OSError as e:
        raise InputError("emit-yaml", f"cannot write {path}: {e.strerror}") from None


# --- plan train ----------------------------------------------------------------------------------------
@plan_app.command("train")
def plan_train_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Catalog name or path to a HF config.json."),
    gpu: list[str] = typer.Option(..., "--gpu", help="Accelerator id; repeat to compare GPU types."),
    gpus: list[str] = typer.Option(..., "--gpus", help="GPU count, a list (8192,16384) or a doubling range (1024-16384)."),
    seq_len: int = typer.Option(..., "--seq-len", help="Tokens per sequence."),
    global_batch_tokens: Optional[int] = typer.Option(None, "--global-batch-tokens", help="Tokens per optimizer step."),
    global_batch: Optional[int] = typer.Option(None, "--global-batch", help="Sequences per optimizer step."),
    objective: str = typer.Option("tokens-per-s", "--objective", help="tokens-per-s | time-to-train | cost | mfu | memory."),
    tokens: Optional[float] = typer.Option(None, "--tokens", help="Training tokens, for time-to-train and cost."),
    top: Top = 10,
    pareto: Optional[str] = typer.Option(None, "--pareto", help="Two objectives, e.g. tokens-per-s,memory."),
    reference: Optional[str] = typer.Option(None, "--reference", help="A plan to locate in the ranking, e.g. tp=8,pp=16,zero=2."),
    tp: Optional[str] = typer.Option(None, "--tp", help="TP degrees to try.", rich_help_panel=PANEL_SPACE),
    pp: Optional[str] = typer.Option(None, "--pp", help="PP degrees to try.", rich_help_panel=PANEL_SPACE),
    cp: Optional[str] = typer.Option(None, "--cp", help="CP degrees to try.", rich_help_panel=PANEL_SPACE),
    ep: Optional[str] = typer.Option(None, "--ep", help="EP degrees to try (MoE).", rich_help_panel=PANEL_SPACE),
    micro_batch: Optional[str] = typer.Option(None, "--micro-batch", help="Micro-batch sizes to try.", rich_help_panel=PANEL_SPACE),
    virtual_stages: Optional[str] = typer.Option(None, "--virtual-stages", help="Virtual stages to try (1 = no interleaving).", rich_help_panel=PANEL_SPACE),
    zero: Optional[str] = typer.Option(None, "--zero", help="ZeRO stages to try (0-3).", rich_help_panel=PANEL_SPACE),
    recompute: Optional[str] = typer.Option(None, "--recompute", help="none,selective,full subsets.", rich_help_panel=PANEL_SPACE),
    precision: Optional[str] = typer.Option(None, "--precision", help="bf16,fp16,fp8 subsets.", rich_help_panel=PANEL_SPACE),
    schedules: Optional[str] = typer.Option(None, "--schedules", help="1f1b,interleaved,gpipe subsets.", rich_help_panel=PANEL_SPACE),
    workers: Workers = None,
    executor: Executor = "local",
    ray_address: RayAddress = None,
    json_out: JsonOut = False,
    emit_yaml: Optional[Path] = typer.Option(None, "--emit-yaml", help="Write the winner as a `parasim train -c` config.", rich_help_panel=PANEL_RUN),
) -> None:
    """Search TP x PP x virtual stages x CP x EP x DP x micro-batch x recompute x ZeRO x schedule."""
    from parasim.search.plan_train import TrainSearch, emit_yaml_mapping, run_search
    from parasim.training.schedules import schedule_names

    choices: dict[str, tuple] = {
        "tp": int_list(tp, "tp"), "pp": int_list(pp, "pp"), "cp": int_list(cp, "cp"), "ep": int_list(ep, "ep"),
        "micro_batch": int_list(micro_batch, "micro-batch"), "virtual_stages": int_list(virtual_stages, "virtual-stages"),
        "recompute": str_list(recompute), "precision": str_list(precision), "schedules": str_list(schedules),
    }
    if zero:
        choices["zero"] = tuple(int(z) for z in str_list(zero) if z.isdigit() and int(z) <= 3) or ()
        if len(choices["zero"]) != len(str_list(zero)):
            raise InputError("zero", f"expected stages 0-3 separated by commas, got {zero!r}")
    for name, allowed in (("recompute", ("none", "selective", "full")), ("precision", ("bf16", "fp16", "fp8")),
                          ("schedules", schedule_names())):
        bad = [v for v in choices[name] if v not in allowed]
        if bad:
            raise InputError(name, f"'{bad[0]}' is not one of {', '.join(allowed)}")
    if top < 1:
        raise InputError("top", f"must be >= 1, got {top}")
    req = TrainSearch(model=model, gpu=tuple(gpu), gpus=gpu_counts(gpus), seq_len=seq_len, global_batch=global_batch,
                      global_batch_tokens=global_batch_tokens, objective=objective, tokens=tokens, top=top,
                      pareto=pareto, choices={k: v for k, v in choices.items() if v},
                      reference=key_values(reference, "reference"), workers=workers, executor=executor,
                      ray_address=ray_address)
    bar = Bar(not json_out, "simulating plans")
    try:
        out = run_search(req, progress=bar)
    finally:
        bar.stop()
    if emit_yaml and out["best"]:
        write_yaml(emit_yaml, emit_yaml_mapping(out["best"]))
    if json_out:
        print_json(out)
    else:
        render_train(out, top)
    if not out["best"]:
        raise typer.Exit(1)


def _train_cells(r: dict, multi: bool = False) -> list[Any]:
    m = r["metrics"]
    return [r.get("rank") or "-", f"{r['gpus']} {r['gpu']}" if multi else r["gpus"], r["tp"], r["pp"], r["dp"], r["cp"], r["ep"],
            r["virtual_stages"], r["micro_batch"], r["recompute"][:4], r["zero"], f"{m['tokens_per_s'] / 1e6:.3f}",
            f"{100 * m['mfu']:.1f}", f"{m['step_time_s']:.3f}", f"{m['peak_memory_gb_per_gpu']:.1f}"]


TRAIN_COLUMNS = ("rank", "GPUs", "tp", "pp", "dp", "cp", "ep", "v", "mb", "rcmp", "zero", "Mtok/s", "MFU%",
                 "step s", "mem GB")


def render_train(out: dict, top: int) -> None:
    c = console()
    multi = len(out["gpu"]) > 1
    rows = [_train_cells(r, multi) for r in out["ranked"][:top]]
    c.print(table(f"plan train: {out['model']} on {', '.join(out['gpu'])} - best {top} of {len(out['ranked'])} "
                  f"feasible by {out['objective']}",
                  TRAIN_COLUMNS, rows))
    extra = []
    if out.get("baseline"):
        extra.append(["base", *_train_cells(out["baseline"], multi)[1:]])
    if out.get("reference") and out["reference"].get("metrics") and out["reference"].get("rank"):
        extra.append([f"ref #{out['reference']['rank']}", *_train_cells(out["reference"], multi)[1:]])
    if extra:
        c.print(table("heuristic baseline / reference plan", TRAIN_COLUMNS, extra))
    render_common(out)


def render_common(out: dict) -> None:
    c = console()
    if out["pruned"]:
        from parasim.search.prune import REASONS

        c.print(table("pruned (raw combinations dropped, per reason)", ("reason", "count", "meaning"),
                      [(k, v, REASONS.get(k, "")) for k, v in out["pruned"].items()]))
    if out.get("pareto"):
        p = out["pareto"]
        c.print(f"Pareto front ({' vs '.join(p['objectives'])}): ranks {', '.join(str(x) for x in p['front'])}")
    ref = out.get("reference")
    if ref:
        c.print(f"reference plan: rank {ref.get('rank') or 'not ranked'}"
                + (f" ({ref.get('reason')})" if ref.get("reason") else "") + f" of {len(out['ranked'])}")
    for line in out["explanation"]["text"]:
        c.print(f"- {line}")
    c.print(f"evaluated {out['evaluated']} plans of a raw space of {out['space_size']:,} in "
            f"{fmt(out['search_wall_s'])} s" + (" [bold yellow](interrupted: best so far)[/]" if out["interrupted"] else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(plan_app, name="plan")


# --- plan serve ------------------------------------------------------------------------------------------
def precision_pairs(value: str | None) -> tuple:
    """`bf16,bf16/fp8,fp8` -> ((weights, kv), ...); `w/kv` sets the KV-cache precision."""
    from parasim.cost.dtypes import KV_PRECISIONS, WEIGHT_PRECISIONS

    out = []
    for part in str_list(value):
        w, _, kv = part.partition("/")
        if w not in WEIGHT_PRECISIONS or (kv and kv not in KV_PRECISIONS):
            raise InputError("precisions", f"'{part}' is not weights[/kv] with weights in {', '.join(WEIGHT_PRECISIONS)}")
        out.append((w, kv or None))
    return tuple(out)


@plan_app.command("serve")
def plan_serve_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Catalog name or path to a HF config.json."),
    gpu: list[str] = typer.Option(..., "--gpu", help="Accelerator id; repeat to search several GPU types."),
    max_gpus: int = typer.Option(..., "--max-gpus", help="GPU budget: plans use at most this many GPUs."),
    slo_ttft: float = typer.Option(..., "--slo-ttft", help="p-th percentile TTFT SLO, seconds."),
    slo_tpot: float = typer.Option(..., "--slo-tpot", help="TPOT SLO, seconds per output token."),
    attainment: float = typer.Option(0.9, "--attainment", help="Share of requests that must meet both SLOs."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="JSONL/CSV trace (arrival_s, prompt_tokens, output_tokens)."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Poisson arrivals per second (with --prompt-tokens/--output-tokens)."),
    prompt_tokens: Optional[int] = typer.Option(None, "--prompt-tokens", help="Prompt length (mean for lognormal)."),
    output_tokens: Optional[int] = typer.Option(None, "--output-tokens", help="Output length (mean for lognormal)."),
    length_dist: str = typer.Option("fixed", "--length-dist", help="fixed | lognormal."),
    length_sigma: float = typer.Option(0.5, "--length-sigma", help="Lognormal sigma of the lengths."),
    requests: Optional[int] = typer.Option(None, "--requests", help="Requests in the workload (default 1000; a trace: all)."),
    seed: int = typer.Option(0, "--seed", help="Workload generator seed."),
    objective: str = typer.Option("goodput-per-gpu", "--objective", help="goodput-per-gpu | cost | energy | latency | gpus."),
    top: Top = 10,
    pareto: Optional[str] = typer.Option(None, "--pareto", help="Two objectives, e.g. cost,latency."),
    tp: Optional[str] = typer.Option(None, "--tp", help="TP degrees to try (default: powers of two in a node).", rich_help_panel=PANEL_SPACE),
    pp: Optional[str] = typer.Option(None, "--pp", help="PP degrees to try (default 1,2).", rich_help_panel=PANEL_SPACE),
    schedulers: Optional[str] = typer.Option(None, "--schedulers", help="Schedulers to try (default sarathi,vllm,continuous,splitfuse,disagg).", rich_help_panel=PANEL_SPACE),
    precisions: Optional[str] = typer.Option(None, "--precisions", help="Weight precisions, or weights/kv pairs, e.g. bf16,fp8,fp8/fp8 (default: only the model's own; a KV dtype not given is the model's).", rich_help_panel=PANEL_SPACE),
    token_budgets: Optional[str] = typer.Option(None, "--token-budgets", help="Chunked-prefill token budgets to try.", rich_help_panel=PANEL_SPACE),
    max_batches: Optional[str] = typer.Option(None, "--max-batches", help="Max running sequences to try.", rich_help_panel=PANEL_SPACE),
    screen_requests: int = typer.Option(300, "--screen-requests", help="Requests per screening run (stages 1-2).", rich_help_panel=PANEL_SPACE),
    refine: int = typer.Option(8, "--refine", help="Screened plans re-run on the whole workload per round.", rich_help_panel=PANEL_SPACE),
    workers: Workers = None,
    executor: Executor = "local",
    ray_address: RayAddress = None,
    json_out: JsonOut = False,
    emit_yaml: Optional[Path] = typer.Option(None, "--emit-yaml", help="Write the winner as a `parasim serve -c` config.", rich_help_panel=PANEL_RUN),
) -> None:
    """Search GPU type x TP x PP x replicas x scheduler x token budget x max batch x precision x disaggregation."""
    from parasim.search.plan_serve import ServeSearch, emit_yaml_mapping, run_search

    if top < 1:
        raise InputError("top", f"must be >= 1, got {top}")
    if screen_requests < 1 or refine < 1:
        raise InputError("screen-requests" if screen_requests < 1 else "refine", "must be >= 1")
    kw: dict[str, Any] = {}
    if pp:
        kw["pp"] = int_list(pp, "pp")
    if schedulers:
        kw["schedulers"] = str_list(schedulers)
    if precisions:
        kw["precisions"] = precision_pairs(precisions)
    if token_budgets:
        kw["token_budgets"] = int_list(token_budgets, "token-budgets")
    if max_batches:
        kw["max_batches"] = int_list(max_batches, "max-batches")
    req = ServeSearch(model=model, gpu=tuple(gpu), max_gpus=max_gpus, slo_ttft=slo_ttft, slo_tpot=slo_tpot,
                      attainment=attainment, trace=str(trace) if trace else None, rate=rate,
                      prompt_tokens=prompt_tokens, output_tokens=output_tokens, length_dist=length_dist,
                      length_sigma=length_sigma, requests=requests or 1000, seed=seed, objective=objective, top=top,
                      pareto=pareto, tp=int_list(tp, "tp"), screen_requests=screen_requests, refine=refine,
                      workers=workers, executor=executor, ray_address=ray_address,
                      extra={"requests_given": requests is not None}, **kw)
    bar = Bar(not json_out, "simulating plans")
    try:
        out = run_search(req, progress=bar)
    finally:
        bar.stop()
    if emit_yaml and out["best"]:
        write_yaml(emit_yaml, emit_yaml_mapping(out, req, emit_yaml))
    out.pop("_workload", None)
    if json_out:
        print_json(out)
    else:
        render_serve(out, top)
    if not out["best"]:
        raise typer.Exit(1)


SERVE_COLUMNS = ("rank", "GPUs", "layout", "scheduler", "weights/kv", "goodput /GPU", "TTFT p99 s", "TPOT p99 ms",
                 "attain", "$/M tok", "J/tok", "requests")


def _serve_cells(r: dict, multi: bool = False) -> list[Any]:
    s = r["metrics"]["summary"]
    sched = r["scheduler"]
    layout = (f"P{r['prefill_gpus']}/tp{r['prefill_tp']} D{r['decode_gpus']}/tp{r['decode_tp']}"
              if sched == "disagg" else f"tp{r['tp']} pp{r['pp']} x{r['replicas']}")
    knobs = "/".join(str(v) for v in (r.get("token_budget"), r.get("max_batch")) if v is not None)
    return [r.get("rank") or "-", f"{r['gpus']} {r['gpu']}" if multi else r["gpus"], layout,
            f"{sched} {knobs}".strip(), f"{r['weights']}/{r.get('kv_dtype') or '-'}", f"{r['goodput_per_gpu']:.3f}",
            f"{s['ttft_p99_s']:.3f}", f"{1e3 * s['tpot_p99_s']:.1f}", f"{s['slo_attainment']:.3f}",
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
    elif b:
        c.print(f"heuristic baseline (tp={b['tp']} x {b['replicas']} replicas) is infeasible: {b.get('message')}")
    pr = out["precisions"]
    c.print(f"precisions searched (weights/KV): {', '.join(pr['searched'])} - {pr['why']}")
    for g, how in pr["per_gpu"].items():
        odd = {w: m for w, m in how.items() if m != "native" and m != "16-bit"}
        for w, m in odd.items():
            c.print(f"  {w} on {g}: {m}")
    st = out["stages"]
    c.print(f"stages: {st['layouts']} layouts and {st['knob_variants']} knob variants screened on "
            f"{st['screen_requests']} requests; {st['refined']} re-run on all {st['full_requests']}")
    render_common(out)
