"""`parasim plan train|serve`: search the plans, rank them, explain the winner, emit its config.

`--json` prints one object (best, ranked, evaluated, pruned, baseline, search_wall_s, ...);
otherwise a top-k table, the pruning counts, the Pareto front and the explanation. `--json-out`
also writes that object to a file; `--emit-yaml` writes the winner as a config `parasim train -c`
/ `parasim serve -c` accepts as is. A progress bar runs on stderr when it is a terminal and --json
is off.

Exit codes: 0 a ranking; 1 nothing ranked (the table is still printed, with the pruning counts
that say why) or an output file that cannot be written; 2 bad input; 130 Ctrl-C. Ctrl-C ends the
search early: the plans that finished are ranked and printed, marked "interrupted" (and
`"interrupted": true` in the JSON), and the winner so far is emitted; if no plan had finished,
one line says so ("interrupted before any plan finished", and with --json an object with
`"interrupted": true` and an empty ranking).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from parasim import __version__
from parasim.cli import limits, outputs
from parasim.cli import train_stack as ts
from parasim.cli.names import RegistryHelp
from parasim.cli.profile_opt import HELP as PROFILE_HELP
from parasim.cli.profile_opt import calibration, profile_errors
from parasim.errors import InputError, Interrupted
from parasim.report.plan import render_serve, render_train
from parasim.report.tables import print_json

plan_app = typer.Typer(name="plan", help="Search parallel plans for training or serving.", no_args_is_help=True,
                       add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="rich")

PANEL_SPACE = "Search space (comma lists override the defaults)"
PANEL_RUN = "Execution and output"
PANEL_GOODPUT = "Failures and checkpoints (goodput, time-to-train)"
PANEL_SLO = "SLOs (any of ttft/tpot/itl/e2e)"

# options both planners take, declared once
Top = Annotated[int, typer.Option("--top", help="Rows of the ranked table.")]
Workers = Annotated[Optional[int], typer.Option("--workers", help="Worker processes (default: cores).",
                                                rich_help_panel=PANEL_RUN)]
Executor = Annotated[str, typer.Option("--executor", help="local | ray.", rich_help_panel=PANEL_RUN)]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster address (default: a local instance).",
                                                   rich_help_panel=PANEL_RUN)]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object.", rich_help_panel=PANEL_RUN)]
JsonFile = Annotated[Optional[Path], typer.Option("--json-out", help="Also write the JSON object to FILE.",
                                                  rich_help_panel=PANEL_RUN)]
ReportFile = Annotated[Optional[Path], typer.Option("--report", help="Also write a self-contained HTML report to FILE (inputs, the winner, expected error, figures; docs/report.md).",
                                                    rich_help_panel=PANEL_RUN)]
Profile = Annotated[Optional[Path], typer.Option("--profile", help=PROFILE_HELP + " A profile of one software is taken as the user's.",
                                                 rich_help_panel=PANEL_RUN)]
BEFORE_ANY = "interrupted before any plan finished"


# --- small parsers (comma lists of integers: cli.limits) --------------------------------------------------
def str_list(value: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip()) if value else ()


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
    outputs.write_text(path, yaml.safe_dump(mapping, sort_keys=False))


def search(run_search, req, json_out: bool) -> dict | None:
    """The search's result, or None when Ctrl-C stopped it before any plan was handed out."""
    bar = Bar(not json_out, "simulating plans")
    try:
        return run_search(req, progress=bar)
    except KeyboardInterrupt:
        return None
    finally:
        bar.stop()


def report(out: dict | None, command: str, *, top: int, json_out: bool, json_file: Path | None, render,
           emit_yaml: Path | None, emit_mapping, report_file: Path | None = None, launch=None) -> None:
    """Print (and write) a planner's result, then exit as the module docstring says. A search
    stopped before any plan finished writes no HTML report (there is nothing to draw)."""
    if out is None or (out["interrupted"] and not out["evaluated"]):
        stub = out or {"command": command, "interrupted": True, "evaluated": 0, "best": None, "ranked": []}
        stub["message"] = BEFORE_ANY
        if json_out:
            print_json(stub)
        if json_file:
            outputs.write_json(json_file, stub)
        raise Interrupted(BEFORE_ANY)
    out["parasim_version"] = __version__
    if launch is not None and out["best"]:
        out["emit"] = launch(out["best"])
    if json_out:
        print_json(out)
    else:
        render(out, top)
        if out.get("emit"):
            e = out["emit"]
            typer.echo(f"\nTo run the winner on {e['engine']} {e['release']} (`--emit`; JSON key `emit`):\n")
            typer.echo(e["script"], nl=False)
    if json_file:
        outputs.write_json(json_file, out)
    if report_file:
        outputs.write_report(report_file, [out])
    if emit_yaml and out["best"]:
        write_yaml(emit_yaml, emit_mapping())
    if out["interrupted"]:
        n = out["evaluated"]
        raise Interrupted(f"interrupted: ranked only the {n} plan{'s' * (n != 1)} that finished"
                          + (f"; {emit_yaml} holds the best of them" if emit_yaml and out["best"] else ""))
    if not out["best"]:
        raise typer.Exit(1)


def add_expected_error(out: dict | None, model: str, kind: str, profile: Optional[Path] = None) -> None:
    """The winner's `expected_error` (validation.expected_error), null when nothing is ranked; a
    `--profile` that recorded its own out-of-fold error is quoted in place of the table."""
    if out is None or (out["interrupted"] and not out["evaluated"]):
        return
    best = out.get("best")
    out["expected_error"] = None
    if best:
        from parasim.specs.catalog import get_accelerator, get_model
        from parasim.validation.expected_error import (SERVING_METRICS, TRAINING_METRICS, serving_expected,
                                                       training_expected)

        from parasim.specs.mixed import from_text, is_mixed

        m = get_model(model)
        acc = from_text(best["gpu"]).accelerator if is_mixed(best["gpu"]) else get_accelerator(best["gpu"])
        own = profile_errors(profile, None, acc.id, TRAINING_METRICS if kind == "training" else SERVING_METRICS)
        out["expected_error"] = (training_expected(m, acc, zero=best["zero"], precision=best["precision"], profile_errors=own)
                                 if kind == "training" else serving_expected(m, acc, weights=best["weights"], profile_errors=own))


# --- plan train ----------------------------------------------------------------------------------------
@plan_app.command("train", cls=RegistryHelp)
def plan_train_cmd(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with any of these options (keys as the flags, dashes or underscores; a list as YAML or comma text); a flag given wins."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Catalog name or path to a HF config.json (required)."),
    gpu: Optional[list[str]] = typer.Option(None, "--gpu", help="Accelerator id (required); repeat to compare GPU types. A mixed cluster: TYPE:COUNT,TYPE:COUNT (e.g. h100-sxm:64,a100-sxm-80gb:64): the placement and layer split are searched."),
    gpus: Optional[list[str]] = typer.Option(None, "--gpus", help="GPU count, a list (8192,16384) or a doubling range (1024-16384); optional with TYPE:COUNT (then their sum)."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Tokens per sequence (required)."),
    global_batch_tokens: Optional[int] = typer.Option(None, "--global-batch-tokens", help="Tokens per optimizer step."),
    global_batch: Optional[int] = typer.Option(None, "--global-batch", help="Sequences per optimizer step (exact)."),
    batch_tolerance: Optional[float] = typer.Option(None, "--batch-tolerance", help="With --global-batch-tokens: how far (relative) each plan's batch may be from the budget [default: 0.05]."),
    objective: str = typer.Option("tokens-per-s", "--objective", help="tokens-per-s | time-to-train | cost | mfu | memory."),
    tokens: Optional[float] = typer.Option(None, "--tokens", help="Training tokens, for time-to-train (wall time with failures and checkpoints: goodput) and cost."),
    top: Top = 10,
    pareto: Optional[str] = typer.Option(None, "--pareto", help="Two objectives, e.g. tokens-per-s,memory."),
    reference: Optional[str] = typer.Option(None, "--reference", help="A plan to locate in the ranking, e.g. tp=8,pp=16,zero=2 (unnamed fields: the best ranked plan with these)."),
    tp: Optional[str] = typer.Option(None, "--tp", help="TP degrees to try.", rich_help_panel=PANEL_SPACE),
    pp: Optional[str] = typer.Option(None, "--pp", help="PP degrees to try.", rich_help_panel=PANEL_SPACE),
    cp: Optional[str] = typer.Option(None, "--cp", help="CP degrees to try.", rich_help_panel=PANEL_SPACE),
    ep: Optional[str] = typer.Option(None, "--ep", help="EP degrees to try (MoE).", rich_help_panel=PANEL_SPACE),
    etp: Optional[str] = typer.Option(None, "--etp", help="Expert TP degrees to try (MoE): integers, or `tp` for the plan's own TP (Megatron-Core's default); default tp,1.", rich_help_panel=PANEL_SPACE),
    micro_batch: Optional[str] = typer.Option(None, "--micro-batch", help="Micro-batch sizes to try.", rich_help_panel=PANEL_SPACE),
    virtual_stages: Optional[str] = typer.Option(None, "--virtual-stages", help="Virtual stages to try (1 = no interleaving).", rich_help_panel=PANEL_SPACE),
    zero: Optional[str] = typer.Option(None, "--zero", help="ZeRO stages to try (0-3).", rich_help_panel=PANEL_SPACE),
    recompute: Optional[str] = typer.Option(None, "--recompute", help="Subsets of none, selective, full, selective_op (torchtitan's op-level SAC), dots (matmul outputs saved, elementwise recomputed; selective_op and dots tried only when listed) [default: none,selective,full].", rich_help_panel=PANEL_SPACE),
    precision: Optional[str] = typer.Option(None, "--precision", help="bf16,fp16,fp8 subsets.", rich_help_panel=PANEL_SPACE),
    schedules: Optional[str] = typer.Option(None, "--schedules", help="Subsets of {SCHEDULES}, comma-separated.", rich_help_panel=PANEL_SPACE),
    dp: Optional[int] = typer.Option(None, "--dp", hidden=True, help="Refused: dp is what tp*pp*cp leaves of --gpus."),
    schedule: Optional[str] = typer.Option(None, "--schedule", hidden=True, help="Refused: give --schedules."),
    mixed_placement: Optional[str] = typer.Option(None, "--mixed-placement", hidden=True, help="Refused: searched on a mixed --gpu."),
    mixed_split: Optional[str] = typer.Option(None, "--mixed-split", hidden=True, help="Refused: balanced on a mixed --gpu."),
    mtbf_gpu_hours: Optional[float] = typer.Option(None, "--mtbf-gpu-hours", help="Hours between job-stopping failures per GPU (default 50,000: Llama 3's 419 in 54 days on 16K H100).", rich_help_panel=PANEL_GOODPUT),
    checkpoint_bw_gbps: Optional[float] = typer.Option(None, "--checkpoint-bw-gbps", help="Checkpoint write/read bandwidth per node, Gbit/s (default 200).", rich_help_panel=PANEL_GOODPUT),
    storage_bw_gbps: Optional[float] = typer.Option(None, "--storage-bw-gbps", help="Checkpoint storage bandwidth for the whole job, Gbit/s (default 16,000 = Llama 3's 2 TB/s).", rich_help_panel=PANEL_GOODPUT),
    restart_s: Optional[float] = typer.Option(None, "--restart-s", help="Seconds from a failure to training again, before the checkpoint load (default 600).", rich_help_panel=PANEL_GOODPUT),
    async_save: Optional[bool] = typer.Option(None, "--async-save/--no-async-save", help="Write checkpoints in the background after a host snapshot (default off).", rich_help_panel=PANEL_GOODPUT),
    save_interval: ts.SaveInterval = None,
    seq_len_dist: Optional[str] = typer.Option(None, "--seq-len-dist", help="Document lengths (as `parasim train --seq-len-dist`); the search then tries each --varlen-balance.", rich_help_panel=PANEL_SPACE),
    varlen_balance: Optional[str] = typer.Option(None, "--varlen-balance", help="Balancing strategies to try with --seq-len-dist, of {VARLEN_BALANCE} (default: all).", rich_help_panel=PANEL_SPACE),
    gpus_per_node: ts.GpusPerNode = None,
    inter_node_gbps: ts.InterNodeGbps = None,
    power_limit_w: ts.PowerLimitW = None,
    sequence_parallel: Optional[bool] = typer.Option(None, "--sequence-parallel/--no-sequence-parallel", help="Megatron sequence parallelism with TP (default on wherever tp > 1).", rich_help_panel=ts.PANEL_BATCH),
    grad_dtype: ts.GradDtype = None,
    recompute_modules: ts.RecomputeModules = None,
    attention: ts.Attention = None,
    kernels: ts.Kernels = None,
    param_state: ts.ParamState = None,
    fp8_recipe: ts.Fp8Recipe = None,
    fp8_param_gather: ts.Fp8ParamGather = None,
    cross_entropy: ts.CrossEntropy = None,
    fsdp_layout: ts.FsdpLayout = None,
    cp_ring: ts.CpRing = None,
    overlap_grad_reduce: ts.OverlapGradReduce = None,
    overlap_param_gather: ts.OverlapParamGather = None,
    tp_comm_overlap: ts.TpCommOverlap = None,
    overlap_p2p_comm: ts.OverlapP2pComm = None,
    moe_imbalance: ts.MoeImbalance = None,
    moe_capacity_factor: ts.MoeCapacityFactor = None,
    moe_a2a: ts.MoeA2a = None,
    moe_a2a_overlap: ts.MoeA2aOverlap = None,
    moe_routing: ts.MoeRouting = None,
    cuda_graph_scope: ts.CudaGraphScope = None,
    cudnn_version: ts.CudnnVersion = None,
    workers: Workers = None,
    executor: Executor = "local",
    ray_address: RayAddress = None,
    json_out: JsonOut = False,
    json_file: JsonFile = None,
    emit_yaml: Optional[Path] = typer.Option(None, "--emit-yaml", help="Write the winner as a `parasim train -c` config.", rich_help_panel=PANEL_RUN),
    report_file: ReportFile = None,
    profile: Profile = None,
) -> None:
    """Search TP x PP x virtual stages x CP x EP x DP x micro-batch x recompute x ZeRO x schedule,
    on the user's stack (its options, as `parasim train` takes them, hold for every plan)."""
    given = {k: v for k, v in locals().items() if k != "ctx"}
    v = limits.check(limits.PLAN_TRAIN, given, names=limits.JSON_NAMES)
    if config is not None:
        v = with_config(v, Path(v["config"]), lambda k: str(ctx.get_parameter_source(k)).endswith("DEFAULT"))
    run_plan_train(v)


#: plan train's parameters a config file may not hold (the file itself; the command-line-only switches)
NOT_IN_CONFIG = ("config",)


def with_config(v: dict[str, Any], path: Path, is_default) -> dict[str, Any]:
    """`v` with the config file's values for the options not given on the command line (flags win).
    Keys are plan train's flags with underscores; a list may be a YAML list or comma text, and an
    output path or a profile is taken relative to the file (as `parasim train -c` takes them)."""
    from parasim.cli.config import read_mapping

    flag_to_param = {flag: name for name, flag in limits.JSON_NAMES.items()}
    raw = read_mapping(path)
    for key in NOT_IN_CONFIG:
        if key in raw:
            raise InputError(f"{path.name}:{key}", "a config file cannot name another one")
    file = limits.check(limits.PLAN_TRAIN, {k: x if k in limits.STACK else _as_flag_text(limits.PLAN_TRAIN.get(k), x)
                                            for k, x in raw.items()},
                        where=f"{path.name}:")
    out = dict(v)
    for key, value in file.items():
        name = flag_to_param.get(key, key)
        if value is None or not is_default(name):
            continue
        if (limits.PLAN_TRAIN[key].kind == "out" or key == "profile") and not Path(value).is_absolute():
            value = str(path.parent / value)
        out[name] = value
    return out


def _as_flag_text(rule, value: Any) -> Any:
    """A YAML value as its flag would be typed: a whole number or a list of scalars for a comma-list
    option (`tp: 8`, `tp: [1, 2]`, `zero: 3`) becomes comma text; anything else is left to the rule.
    (The stack's keys are not passed here: they read as `train -c` reads them.)"""
    if rule is None or rule.kind not in ("ints", "text", "gpu_counts"):
        return value
    scalar = (int, str)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(x, scalar) and not isinstance(x, bool) for x in value):
        return ",".join(str(x) for x in value) if rule.kind != "gpu_counts" else [str(x) for x in value]
    return value


#: train's flags whose value plan train searches another way: refused, naming what to give instead
SEARCHED_ELSEWHERE = {"dp": "dp is what tp*pp*cp leaves of the GPU count: narrow it with --tp, --pp, --cp or --gpus",
                      "schedule": "plan train searches schedules: give --schedules (a comma list; one name fixes it)",
                      "mixed_placement": "plan train tries every placement (stages, replicas) on a mixed --gpu "
                                         "TYPE:COUNT,... list and ranks them",
                      "mixed_split": "plan train splits a mixed cluster's layers by each group's speed (balanced); "
                                     "give `parasim train --mixed-split` the winner's config to compare another split"}


def run_plan_train(v: dict[str, Any]) -> None:
    """plan train after its options are read and merged with the config file."""
    for key, why in SEARCHED_ELSEWHERE.items():
        if v.get(key) is not None:
            raise InputError(key.replace("_", "-"), why)
    for key in ("model", "gpu", "seq_len"):
        if not v.get(key):
            raise InputError(key.replace("_", "-"), f"required (give --{key.replace('_', '-')} or `{key}:` in the config file)")
    from parasim.search.plan_train import TrainSearch, emit_yaml_mapping, run_search
    from parasim.specs.catalog import get_model

    stack = {k: v[k] for k in ("sequence_parallel", *ts.STACK_FIELDS) if v[k] is not None}
    ts.check_moe(get_model(v["model"]), stack)
    varlen = varlen_choices(v["seq_len_dist"], v["varlen_balance"])
    req = TrainSearch(model=v["model"], gpu=tuple(v["gpu"]), gpus=tuple(v["gpus"] or ()), seq_len=v["seq_len"],
                      global_batch=v["global_batch"], global_batch_tokens=v["global_batch_tokens"],
                      batch_tolerance=v["batch_tolerance"], objective=v["objective"], tokens=v["tokens"], top=v["top"],
                      pareto=v["pareto"], choices=train_choices(v), reference=v["reference"], workers=v["workers"],
                      executor=v["executor"], ray_address=v["ray_address"], **varlen, stack=stack,
                      node={k: v[k] for k in ts.CLUSTER_FIELDS if v[k] is not None},
                      reliability={k: v[k] for k in ("mtbf_gpu_hours", "checkpoint_bw_gbps", "storage_bw_gbps",
                                                     "restart_s", "async_save", "save_interval") if v[k] is not None})
    outputs.check(v["json_file"], v["emit_yaml"], v["report_file"])
    with calibration(v["profile"], executor=v["executor"]):
        out = search(run_search, req, v["json_out"])
    add_expected_error(out, v["model"], "training", v["profile"])
    report(out, "plan train", top=v["top"], json_out=v["json_out"], json_file=v["json_file"], render=render_train,
           emit_yaml=v["emit_yaml"], report_file=v["report_file"],
           emit_mapping=lambda: emit_yaml_mapping(out["best"], v["model"], {**out["reliability"], "tokens": out["tokens"]},
                                                  node=out.get("node")))
    if v["power_limit_w"] is not None and out["best"] and not v["json_out"]:
        from parasim.search.plan_train import cluster_for

        best = out["best"]
        typer.echo(ts.power_limit_line(ts.power_limit_keys(cluster_for(best["gpu"], best["gpus"], req.node),
                                                           v["power_limit_w"])))


def train_choices(v: dict[str, Any]) -> dict[str, tuple]:
    """TrainSearch.choices from the search-space options (each checked; empty = the default)."""
    from parasim.cost.memory import RECOMPUTE
    from parasim.search.space import parse_etp
    from parasim.training.schedules import schedule_names

    choices: dict[str, tuple] = {k: v[k] or () for k in ("tp", "pp", "cp", "ep", "micro_batch", "virtual_stages")}
    choices |= {k: str_list(v[k]) for k in ("recompute", "precision", "schedules")}
    choices["etp"] = parse_etp(v["etp"])
    zero = v["zero"]
    if zero:
        choices["zero"] = tuple(int(z) for z in str_list(zero) if z.isdigit() and int(z) <= 3) or ()
        if len(choices["zero"]) != len(str_list(zero)):
            raise InputError("zero", f"expected stages 0-3 separated by commas, got {zero!r}")
    for name, allowed in (("recompute", RECOMPUTE), ("precision", ("bf16", "fp16", "fp8")),
                          ("schedules", schedule_names())):
        bad = [x for x in choices[name] if x not in allowed]
        if bad:
            raise InputError(name, f"'{bad[0]}' is not one of {', '.join(allowed)}")
    return {k: x for k, x in choices.items() if x}


def varlen_choices(spec: str | None, balance: str | None) -> dict[str, Any]:
    """TrainSearch's varlen fields: the length spec, read once here so a bad one exits 2 before the
    search, and the strategies to try (all registered when not given)."""
    from parasim.training.length_dist import load_lengths
    from parasim.training.varlen_balance import STRATEGIES

    if spec is None:
        if balance is not None:
            raise InputError("varlen-balance", "balances documents: give --seq-len-dist")
        return {}
    load_lengths(spec)
    names = str_list(balance) if balance is not None else STRATEGIES.names()
    if not names:
        raise InputError("varlen-balance", f"give one or more of {STRATEGIES.help(', ')}")
    for name in names:
        STRATEGIES.get(name, field="varlen-balance")
    return {"seq_len_dist": spec, "varlen_balance": tuple(dict.fromkeys(names))}


def register(app: typer.Typer) -> None:
    app.add_typer(plan_app, name="plan")


# --- plan serve ------------------------------------------------------------------------------------------
def emit_schedulers(engine: str, given: list[str] | None) -> tuple[str, ...]:
    """The schedulers to search for `--emit ENGINE`: those of `--schedulers` (each must be one the
    engine's release runs), else every scheduler it runs; said on stderr, as it narrows the search."""
    from parasim.engines.launch import get_launcher
    from parasim.serving.schedulers import SCHEDULERS

    launcher = get_launcher(engine)
    runs = [s for s in SCHEDULERS.names() if launcher.runs(s)]
    if given:
        SCHEDULERS.get(given[0], field="schedulers")  # unknown names first, with the list of known ones
        bad = [s for s in given if not launcher.runs(s)]
        if bad:
            raise InputError("schedulers", f"{', '.join(bad)} cannot be run by {launcher.engine} {launcher.release} "
                                           f"(--emit {engine}); it runs {', '.join(runs)}")
        return tuple(given)
    typer.echo(f"note: --emit {engine}: searching the schedulers {launcher.engine} {launcher.release} runs: "
               f"{', '.join(runs)}", err=True)
    return tuple(runs)


def launch_mapping(engine: str, model: str, best: dict) -> dict:
    """The winner's launch commands (`engines.launch`) for the result's `emit` key."""
    from dataclasses import fields

    from parasim.engines.launch import launch_for
    from parasim.search.plan_serve import cluster_for
    from parasim.serving.plan import ServingPlan
    from parasim.specs.catalog import get_model

    plan = ServingPlan.from_mapping({f.name: best[f.name] for f in fields(ServingPlan) if best.get(f.name) is not None})
    return launch_for(engine, get_model(model), cluster_for(best["gpu"], best["gpus"]), plan).to_mapping()


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


def serve_slo_options(**given: Any) -> dict[str, Any]:
    """The SLO flags of `plan serve`, checked as `parasim serve` checks them (cli.serve_cmd.build_slo):
    any non-empty subset of ttft/tpot/itl/e2e in seconds; `--itl-percentile` only with `--slo-itl`;
    `--attainment` only with a per-request SLO."""
    from parasim.cli.serve_cmd import build_slo

    if not any(given[f"slo_{n}"] is not None for n in ("ttft", "tpot", "itl", "e2e")):
        raise InputError("slo", "give at least one SLO: --slo-ttft, --slo-tpot, --slo-itl and/or --slo-e2e (seconds)")
    opts = dict(given, attainment=given["attainment"] if given["attainment"] is not None else 0.9,
                attainment_given=given["attainment"] is not None)
    slo = build_slo(opts)
    out = {f"slo_{n}": getattr(slo, f"{n}_s") for n in ("ttft", "tpot", "itl", "e2e")}
    return out | {"itl_percentile": slo.itl_percentile, "attainment": slo.attainment,
                  "max_queueing_p50": given["max_queueing_p50"]}


def serve_defaults() -> dict[str, Any]:
    """plan serve's option defaults, by parameter name (to tell which options a user gave)."""
    import inspect

    out = {}
    for name, p in inspect.signature(plan_serve_cmd).parameters.items():
        d = p.default
        out[name] = getattr(d, "default", d)
    return out


@plan_app.command("serve", cls=RegistryHelp)
def plan_serve_cmd(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Catalog name or path to a HF config.json (required unless --models)."),
    gpu: list[str] = typer.Option(..., "--gpu", help="Accelerator id; repeat to search several GPU types."),
    max_gpus: int = typer.Option(..., "--max-gpus", help="GPU budget: plans use at most this many GPUs."),
    slo_ttft: Optional[float] = typer.Option(None, "--slo-ttft", help="Per-request TTFT SLO, seconds.", rich_help_panel=PANEL_SLO),
    slo_tpot: Optional[float] = typer.Option(None, "--slo-tpot", help="Per-request TPOT SLO, seconds per output token after the first.", rich_help_panel=PANEL_SLO),
    slo_e2e: Optional[float] = typer.Option(None, "--slo-e2e", help="Per-request end-to-end latency SLO, seconds.", rich_help_panel=PANEL_SLO),
    slo_itl: Optional[float] = typer.Option(None, "--slo-itl", help="SLO on the --itl-percentile of all inter-token gaps, seconds.", rich_help_panel=PANEL_SLO),
    itl_percentile: Optional[float] = typer.Option(None, "--itl-percentile", help="Percentile of the inter-token gaps --slo-itl applies to (default 99).", rich_help_panel=PANEL_SLO),
    attainment: Optional[float] = typer.Option(None, "--attainment", help="Share of requests that must meet the per-request SLOs (default 0.9).", rich_help_panel=PANEL_SLO),
    max_queueing_p50: Optional[float] = typer.Option(None, "--max-queueing-p50", help="Stability: median queueing delay bound, seconds (default 2 when no TTFT or E2E SLO is given).", rich_help_panel=PANEL_SLO),
    trace: Optional[Path] = typer.Option(None, "--trace", help="JSONL/CSV trace: parasim's columns, Vidur's, Azure's LLM inference trace or BurstGPT's, recognised from the header."),
    trace_columns: Optional[str] = typer.Option(None, "--trace-columns", help="Map another trace's columns: arrival=COL,prompt=COL,output=COL[,arrival_unit=s|ms|us|ns]."),
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
    schedulers: Optional[str] = typer.Option(None, "--schedulers", help="Schedulers to try, of {SCHEDULERS} (default {SEARCHED_SCHEDULERS}).", rich_help_panel=PANEL_SPACE),
    precisions: Optional[str] = typer.Option(None, "--precisions", help="Weight precisions, or weights/kv pairs, e.g. bf16,fp8,fp8/fp8 (default: only the model's own; a KV dtype not given is the model's).", rich_help_panel=PANEL_SPACE),
    token_budgets: Optional[str] = typer.Option(None, "--token-budgets", help="Chunked-prefill token budgets to try.", rich_help_panel=PANEL_SPACE),
    max_batches: Optional[str] = typer.Option(None, "--max-batches", help="Max running sequences to try.", rich_help_panel=PANEL_SPACE),
    screen_requests: int = typer.Option(300, "--screen-requests", help="Requests per screening run (stages 1-2).", rich_help_panel=PANEL_SPACE),
    refine: int = typer.Option(8, "--refine", help="Screened plans re-run on the whole workload per round.", rich_help_panel=PANEL_SPACE),
    ep: Optional[str] = typer.Option(None, "--ep", help="MoE: expert-parallel degrees to try over one-GPU attention-DP ranks (serve --ep), e.g. 1,8 (1: the plans without EP); `auto` (default): 1 and every divisor of the routed experts up to --max-gpus for a MoE model, 1 for a dense one.", rich_help_panel=PANEL_SPACE),
    workers: Workers = None,
    executor: Executor = "local",
    ray_address: RayAddress = None,
    json_out: JsonOut = False,
    json_file: JsonFile = None,
    emit_yaml: Optional[Path] = typer.Option(None, "--emit-yaml", help="Write the winner as a `parasim serve -c` config.", rich_help_panel=PANEL_RUN),
    emit: Optional[str] = typer.Option(None, "--emit", help="Print the command lines that run the winner on an engine, of {EMIT_ENGINES}; the search then covers only the schedulers that engine's release runs.", rich_help_panel=PANEL_RUN),
    report_file: ReportFile = None,
    profile: Profile = None,
    models: Optional[Path] = typer.Option(None, "--models", help="YAML/JSON file of several models sharing the cluster, each with its workload and SLOs (serve --models' format): find the fewest GPUs on which every model meets its SLO, the placement table, per-model attainment and totals (docs/serving.md, Several models).", rich_help_panel=PANEL_RUN),
) -> None:
    """Search GPU type x TP x PP x replicas x scheduler x token budget x max batch x precision x disaggregation."""
    args = dict(locals())
    v = limits.check(limits.PLAN_SERVE, args, names=limits.JSON_NAMES)

    from parasim.search.plan_serve import ServeSearch, emit_yaml_mapping, run_search
    from parasim.search.space import parse_serve_ep
    kw: dict[str, Any] = {"ep": parse_serve_ep(v["ep"])}
    if pp:
        kw["pp"] = v["pp"]
    if schedulers:
        kw["schedulers"] = str_list(schedulers)
    if emit is not None and models is None:
        kw["schedulers"] = emit_schedulers(emit, kw.get("schedulers"))
        kw["one_ep_group"] = True  # an engine process's EP group is all its data-parallel ranks
    if precisions:
        kw["precisions"] = precision_pairs(precisions)
    if token_budgets:
        kw["token_budgets"] = v["token_budgets"]
    if max_batches:
        kw["max_batches"] = v["max_batches"]
    if models is not None:  # several models: cli/plan_models.py
        from parasim.cli.plan_models import plan_models_cmd

        if ep is not None:
            raise InputError("ep", "a models file places each model on replicas of tp x pp GPUs and has no ep key "
                                   "(serve --models runs no expert-parallel plan); drop --ep")
        kw["ep"] = (1,)
        base = ServeSearch(model="", gpu=tuple(gpu), max_gpus=max_gpus, seed=seed, tp=v["tp"] or (),
                           screen_requests=screen_requests, refine=refine, workers=workers, executor=executor,
                           ray_address=ray_address, **kw)
        return plan_models_cmd(args, serve_defaults(), base, Bar(not json_out, "simulating plans"))
    if model is None:
        raise InputError("model", "required (a catalog name, see `parasim models`, or a config.json path), or --models FILE")
    kw |= serve_slo_options(slo_ttft=slo_ttft, slo_tpot=slo_tpot, slo_e2e=slo_e2e, slo_itl=slo_itl,
                            itl_percentile=itl_percentile, attainment=attainment, max_queueing_p50=max_queueing_p50)
    req = ServeSearch(model=model, gpu=tuple(gpu), max_gpus=max_gpus, trace=str(trace) if trace else None, trace_columns=trace_columns, rate=rate,
                      prompt_tokens=prompt_tokens, output_tokens=output_tokens, length_dist=length_dist,
                      length_sigma=length_sigma, requests=requests or 1000, seed=seed, objective=objective, top=top,
                      pareto=pareto, tp=v["tp"] or (), screen_requests=screen_requests, refine=refine,
                      workers=workers, executor=executor, ray_address=ray_address,
                      extra={"requests_given": requests is not None}, **kw)
    outputs.check(json_file, emit_yaml, report_file)
    with calibration(profile, executor=executor):
        out = search(run_search, req, json_out)
    workload_keys = out.pop("_workload_keys", None) if out else None
    if out:
        from parasim.serving.traces import trace_note

        note = trace_note(out["workload"].get("trace"))
        if note:
            typer.echo(f"note: {note}", err=True)
    add_expected_error(out, model, "serving", profile)
    report(out, "plan serve", top=top, json_out=json_out, json_file=json_file, render=render_serve,
           emit_yaml=emit_yaml, emit_mapping=lambda: emit_yaml_mapping({**out, "_workload_keys": workload_keys}, req, emit_yaml),
           report_file=report_file, launch=(lambda best: launch_mapping(emit, model, best)) if emit else None)
