"""`parasim train`: simulate one optimizer step of a training plan.

Every flag has a config-file twin (`-c plan.yaml`, same names with dashes or underscores); a
flag given on the command line overrides the file. `--json` prints the TrainingResult (with
`expected_error`: the validated error of the nearest category of published runs),
`--json-out FILE` also writes it. A plan that does not fit in memory is still printed, with its
memory breakdown, and exits 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from parasim.cli import limits, outputs
from parasim.cli import train_stack as ts
from parasim.cli.config import read_mapping
from parasim.cli.names import RegistryHelp
from parasim.cli.profile_opt import HELP as PROFILE_HELP
from parasim.cli.profile_opt import applied, calibration, profile_errors
from parasim.errors import InputError
from parasim.report.tables import print_json
from parasim.report.train import render

CLUSTER_KEYS = ("model", "gpu", "gpus", "gpus_per_node", "inter_node_gbps", "node_groups", "mixed_placement",
                "mixed_split", "power_limit_w")
#: failure and checkpoint assumptions (training/goodput.py) and the token budget: not plan fields
GOODPUT_KEYS = ("tokens", "mtbf_gpu_hours", "checkpoint_bw_gbps", "storage_bw_gbps", "restart_s", "async_save",
                "save_interval")
OUTPUT_KEYS = ("json", "config", "json_file", "profile", "timeline", "report")
PANEL_PAR = "Parallelism"
PANEL_BATCH, PANEL_OVERLAP = ts.PANEL_BATCH, ts.PANEL_OVERLAP
PANEL_GOODPUT = "Failures and checkpoints (goodput)"


def load_config(path: Path) -> dict[str, Any]:
    """The file's keys (a nested `plan:` block flattened), each checked against cli.limits.TRAIN."""
    out = read_mapping(path)
    if isinstance(out.get("plan"), dict):  # allow a nested `plan:` block
        for k, v in out.pop("plan").items():
            out.setdefault(str(k).replace("-", "_"), v)
    return limits.check(limits.TRAIN, out, where=f"{path.name}:")


def merge(file_opts: dict[str, Any], flags: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict]]:
    """Flags over the config file. A flag that makes a file value it does not name meaningless wins
    too, and the file value it displaced is returned in `overrides` (printed), never dropped silently:

    * `--schedule 1f1b|gpipe` against the file's `virtual_stages: N > 1`: v = 1;
    * `--virtual-stages N` against the file's `schedule`: interleaved for N > 1 (over gpipe; 1f1b
      with N > 1 is interleaved 1F1B anyway), 1f1b for N = 1 (over interleaved);
    * a degree or GPU count flag (`--tp/--pp/--cp/--gpus`) against the file's `dp`: dp is derived
      again from gpus / (tp*pp*cp) when the file's dp no longer multiplies out;
    * `--gpu` against the file's `node_groups` (a mixed cluster): the flag's GPUs are used.
    Anything else that contradicts is an input error from the plan validator, naming the field.
    """
    from parasim.training.schedules import SCHEDULES, for_virtual_stages, resolve_name

    opts = {**file_opts, **flags}
    overrides: dict[str, dict] = {}

    def displace(key: str, used: Any, by: str) -> None:
        overrides[key] = {"file": file_opts[key], "used": used, "by": by}
        if used is None:
            opts.pop(key, None)
        else:
            opts[key] = used

    def as_int(v: Any) -> int | None:  # malformed values are left for the validator to name
        if isinstance(v, str) and v.strip().isdigit():
            return int(v)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    if "schedule" in flags and "virtual_stages" not in flags and not (
            flags["schedule"] in SCHEDULES and SCHEDULES.get(flags["schedule"]).chunked):
        v = as_int(file_opts.get("virtual_stages"))
        if v is not None and v > 1:
            displace("virtual_stages", 1, f"--schedule {flags['schedule']}")
    if "virtual_stages" in flags and "schedule" not in flags and file_opts.get("schedule") in SCHEDULES:
        v, fs = flags["virtual_stages"], file_opts["schedule"]
        used = for_virtual_stages(fs, v)
        if used != resolve_name(fs, v):  # (1f1b with v > 1 is interleaved 1F1B: no contradiction)
            displace("schedule", used, f"--virtual-stages {v}")
    if "gpu" in flags and "node_groups" in file_opts:  # the flag's GPUs replace the file's node groups
        overrides["node_groups"] = {"file": file_opts["node_groups"], "used": flags["gpu"], "by": f"--gpu {flags['gpu']}"}
        opts.pop("node_groups")
    moved = [k for k in ("tp", "pp", "cp", "gpus") if k in flags]
    if moved and "dp" not in flags and as_int(file_opts.get("dp")) is not None:
        degrees = [as_int(opts.get(k, 1)) for k in ("tp", "pp", "cp", "dp")]
        gpus = as_int(opts.get("gpus"))
        if None not in degrees and gpus is not None and degrees[0] * degrees[1] * degrees[2] * degrees[3] != gpus:
            displace("dp", None, " ".join(f"--{k} {flags[k]}" for k in moved))
    return opts, overrides


def _named_cudnn(cluster, plan, defaults: dict[str, Any]):
    """Transformer Engine attention on Blackwell with no cuDNN release given is priced at the newest
    published cuDNN curve (cost.attn_shape.CUDNN_DEFAULT); the plan states that version and it is
    listed among the defaults used, since the release moves the step by several per cent."""
    from dataclasses import replace

    from parasim.cost.attn_shape import assumed_cudnn_version

    acc = getattr(cluster, "accelerator", None)
    version = assumed_cudnn_version(getattr(acc, "generation", None), plan.te_fused_attention, plan.cudnn_version)
    if version is None:
        return plan, defaults
    return replace(plan, cudnn_version=version), {**defaults, "cudnn_version": version}


def build(options: dict[str, Any]):
    """(model, cluster, plan, defaults) from merged options; raises InputError naming the bad field."""
    from parasim.specs.catalog import cluster_for, get_accelerator, get_model
    from parasim.specs.mixed import power_limited
    from parasim.training.defaults import resolve_plan

    mixed = _mixed_cluster(options)
    for key in ("model", "gpu", "gpus") if mixed is None else ("model",):
        if options.get(key) is None:
            raise InputError(key, f"required (give --{key} or `{key}:` in the config file)")
    model = get_model(str(options["model"]))
    ts.check_moe(model, options)
    if mixed is not None:
        gpus, cluster = mixed.gpus, mixed
    else:
        acc = get_accelerator(str(options["gpu"]))
        try:
            gpus = int(options["gpus"])
        except (TypeError, ValueError):
            raise InputError("gpus", f"must be a positive integer, got {options['gpus']!r}") from None
        nic = None
        if options.get("inter_node_gbps") is not None:
            gbps = float(options["inter_node_gbps"])
            if gbps <= 0:
                raise InputError("inter-node-gbps", f"must be positive, got {gbps}")
            nic = gbps * 1e9 / 8
        gpn = options.get("gpus_per_node")
        cluster = cluster_for(acc, gpus, gpus_per_node=int(gpn) if gpn is not None else None,
                              nic_bw_bytes_per_s_per_gpu=nic)
    cluster = power_limited(cluster, options.get("power_limit_w"))
    plan_keys = {k: v for k, v in options.items() if k not in (*CLUSTER_KEYS, *OUTPUT_KEYS, *GOODPUT_KEYS)}
    # degrees that must divide the model are checked before dp is derived from them
    from parasim.cost.layer import Sharding, check_sharding

    try:
        check_sharding(model, Sharding(tp=int(plan_keys.get("tp") or 1)))
    except (TypeError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError("tp", f"must be a positive integer, got {plan_keys.get('tp')!r}") from None
    plan, defaults = resolve_plan(model, plan_keys, gpus)
    plan, defaults = _named_cudnn(cluster, plan, defaults)
    try:
        plan.check(model, gpus)
    except InputError as e:
        if e.field == "global-batch" and "global_batch" in defaults:
            raise InputError("global-batch", f"{e.message} (the global batch was not given and defaulted to "
                                             f"dp*micro_batch = {plan.global_batch}; give --global-batch)") from None
        raise
    return model, cluster, plan, defaults


def _mixed_cluster(options: dict[str, Any]):
    """The MixedCluster of `--gpu TYPE:COUNT,...` or the config's `node_groups:` (None for one GPU
    type); a given --gpus must equal the groups' sum."""
    from parasim.specs.mixed import groups_from_text, is_mixed, mixed_cluster

    groups, gpu = options.get("node_groups"), options.get("gpu")
    if groups is not None and gpu is not None:
        raise InputError("node_groups", "give either node_groups (in the config file) or gpu, not both")
    if groups is None and not is_mixed(gpu):
        for key in ("mixed_placement", "mixed_split"):
            if options.get(key) is not None:
                raise InputError(key.replace("_", "-"), "applies to a mixed cluster only (--gpu TYPE:COUNT,TYPE:COUNT "
                                                        "or node_groups in the config file)")
        return None
    node = {"gpus_per_node": options.get("gpus_per_node"), "inter_node_gbps": options.get("inter_node_gbps")}
    if groups is not None:  # flags fill what a group does not say
        mixed = mixed_cluster([{**{k: v for k, v in node.items() if v is not None}, **g} for g in groups])
    else:
        mixed = mixed_cluster(groups_from_text(str(gpu), **node), field="gpu")
    if options.get("gpus") is not None and options["gpus"] != mixed.gpus:
        raise InputError("gpus", f"{options['gpus']} is not the sum of the GPU groups ({mixed.label} = {mixed.gpus}); "
                                 "leave --gpus out or give the sum")
    return mixed


def train_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with any of these options."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Catalog name or path to a HF config.json."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Accelerator id (see `parasim gpus`), or a mixed cluster TYPE:COUNT,TYPE:COUNT (e.g. h100-sxm:64,a100-sxm-80gb:64)."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="Total GPUs (optional with TYPE:COUNT: then their sum)."),
    gpus_per_node: ts.GpusPerNode = None,
    inter_node_gbps: ts.InterNodeGbps = None,
    power_limit_w: ts.PowerLimitW = None,
    tp: Optional[int] = typer.Option(None, "--tp", help="Tensor-parallel degree.", rich_help_panel=PANEL_PAR),
    pp: Optional[int] = typer.Option(None, "--pp", help="Pipeline-parallel degree.", rich_help_panel=PANEL_PAR),
    dp: Optional[int] = typer.Option(None, "--dp", help="Data-parallel degree (derived from gpus when omitted).", rich_help_panel=PANEL_PAR),
    cp: Optional[int] = typer.Option(None, "--cp", help="Context-parallel degree (ring attention).", rich_help_panel=PANEL_PAR),
    ep: Optional[int] = typer.Option(None, "--ep", help="Expert-parallel degree (MoE).", rich_help_panel=PANEL_PAR),
    etp: Optional[int] = typer.Option(None, "--etp", help="Expert tensor-parallel degree (MoE; default: tp, Megatron-Core's). ep*etp must divide tp*cp*dp (MoE parallel folding).", rich_help_panel=PANEL_PAR),
    virtual_stages: Optional[int] = typer.Option(None, "--virtual-stages", help="Model chunks per pipeline rank (interleaved).", rich_help_panel=PANEL_PAR),
    sequence_parallel: Optional[bool] = typer.Option(None, "--sequence-parallel/--no-sequence-parallel", help="Megatron sequence parallelism.", rich_help_panel=PANEL_PAR),
    zero: Optional[int] = typer.Option(None, "--zero", help="ZeRO stage 0-3 (1 = distributed optimizer, 3 = FSDP).", rich_help_panel=PANEL_PAR),
    fsdp_shard: Optional[int] = typer.Option(None, "--fsdp-shard", help="With --zero 3: shard the model state over groups of this many data-parallel ranks and replicate it across the groups (hybrid sharding: PyTorch HYBRID_SHARD / HSDP, MaxText ici_fsdp x dcn_data); must divide dp*cp. Default: one group of all (full shard).", rich_help_panel=PANEL_PAR),
    micro_batch: Optional[int] = typer.Option(None, "--micro-batch", help="Sequences per micro-batch.", rich_help_panel=PANEL_BATCH),
    global_batch: Optional[int] = typer.Option(None, "--global-batch", help="Sequences per optimizer step.", rich_help_panel=PANEL_BATCH),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Tokens per sequence.", rich_help_panel=PANEL_BATCH),
    seq_len_dist: Optional[str] = typer.Option(None, "--seq-len-dist", help="Document lengths, packed: a file (one length, or length,count, per line) or lognormal:median=N,sigma=S | pareto:min=N,alpha=A | fixed:length=N [,seed=K,max=N].", rich_help_panel=PANEL_BATCH),
    varlen_balance: Optional[str] = typer.Option(None, "--varlen-balance", help="How documents spread over dp*cp ranks: {VARLEN_BALANCE} (docs/training.md).", rich_help_panel=PANEL_BATCH),
    recompute: Optional[str] = typer.Option(None, "--recompute", help="none | selective | full | selective_op (torchtitan's op-level SAC) | dots (every matmul output saved, elementwise ops recomputed: MaxText's minimal / minimal_flash).", rich_help_panel=PANEL_BATCH),
    precision: Optional[str] = typer.Option(None, "--precision", help="bf16 | fp16 | fp8.", rich_help_panel=PANEL_BATCH),
    grad_dtype: ts.GradDtype = None,
    recompute_modules: ts.RecomputeModules = None,
    moe_imbalance: ts.MoeImbalance = None,
    moe_capacity_factor: ts.MoeCapacityFactor = None,
    moe_a2a: ts.MoeA2a = None,
    moe_a2a_overlap: ts.MoeA2aOverlap = None,
    moe_routing: ts.MoeRouting = None,
    cuda_graph_scope: ts.CudaGraphScope = None,
    cudnn_version: ts.CudnnVersion = None,
    overlap_grad_reduce: ts.OverlapGradReduce = None,
    overlap_param_gather: ts.OverlapParamGather = None,
    tp_comm_overlap: ts.TpCommOverlap = None,
    overlap_p2p_comm: ts.OverlapP2pComm = None,
    schedule: Optional[str] = typer.Option(None, "--schedule", help="{SCHEDULES}.", rich_help_panel=PANEL_OVERLAP),
    attention: ts.Attention = None,
    kernels: ts.Kernels = None,
    fsdp_layout: ts.FsdpLayout = None,
    cp_ring: ts.CpRing = None,
    param_state: ts.ParamState = None,
    fp8_recipe: ts.Fp8Recipe = None,
    fp8_param_gather: ts.Fp8ParamGather = None,
    cross_entropy: ts.CrossEntropy = None,
    tokens: Optional[float] = typer.Option(None, "--tokens", help="Tokens to train: adds time_to_train_s (wall time, failures included).", rich_help_panel=PANEL_GOODPUT),
    mtbf_gpu_hours: Optional[float] = typer.Option(None, "--mtbf-gpu-hours", help="Hours between job-stopping failures per GPU (default 50,000: Llama 3's 419 in 54 days on 16K H100).", rich_help_panel=PANEL_GOODPUT),
    checkpoint_bw_gbps: Optional[float] = typer.Option(None, "--checkpoint-bw-gbps", help="Checkpoint write/read bandwidth per node, Gbit/s (default 200).", rich_help_panel=PANEL_GOODPUT),
    storage_bw_gbps: Optional[float] = typer.Option(None, "--storage-bw-gbps", help="Checkpoint storage bandwidth for the whole job, Gbit/s (default 16,000 = Llama 3's 2 TB/s).", rich_help_panel=PANEL_GOODPUT),
    restart_s: Optional[float] = typer.Option(None, "--restart-s", help="Seconds from a failure to training again, before the checkpoint load (default 600).", rich_help_panel=PANEL_GOODPUT),
    async_save: Optional[bool] = typer.Option(None, "--async-save/--no-async-save", help="Write checkpoints in the background after a host snapshot (Megatron --async-save; default off).", rich_help_panel=PANEL_GOODPUT),
    save_interval: ts.SaveInterval = None,
    mixed_placement: Optional[str] = typer.Option(None, "--mixed-placement", help="Mixed GPU types: stages (each group holds whole pipeline stages; default) | replicas (each group holds whole pipeline replicas, DP across types).", rich_help_panel=PANEL_PAR),
    mixed_split: Optional[str] = typer.Option(None, "--mixed-split", help="Mixed GPU types: balanced (layers, or micro-batches with replicas, by each group's speed; the default with two types or more) | even (the plain split) | layers per pipeline rank, e.g. 30,30,10,10.", rich_help_panel=PANEL_PAR),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    json_file: Optional[Path] = typer.Option(None, "--json-out", help="Also write the JSON object to FILE."),
    timeline: Optional[Path] = typer.Option(None, "--timeline", help="Also write the step as a Chrome trace (Perfetto, chrome://tracing) to FILE; the JSON gains `timeline`."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write a self-contained HTML report to FILE (inputs, plan, expected error, figures; docs/report.md)."),
    profile: Optional[Path] = typer.Option(None, "--profile", help=PROFILE_HELP + " A profile of one software is taken as the user's."),
) -> None:
    """Simulate one optimizer step: step time, tokens/s, MFU, peak memory and a time breakdown."""
    given = limits.check(limits.TRAIN, dict(locals()), names=limits.JSON_NAMES)
    flags = {k: v for k, v in given.items()
             if k not in ("config", "json_out", "json_file", "timeline", "report") and v is not None}
    file_opts = load_config(Path(given["config"])) if config is not None else {}
    json_file = json_file or _path(config, file_opts.pop("json_out", None))
    timeline = timeline or _path(config, file_opts.pop("timeline", None), "timeline")
    report = report or _path(config, file_opts.pop("report", None), "report")
    opts, overrides = merge(file_opts, flags)
    prof = _path(config, opts.get("profile")) if "profile" in file_opts and "profile" not in flags else opts.get("profile")
    with calibration(prof):
        model_spec, cluster, plan, defaults = build(opts)
    for k, o in overrides.items():  # a displaced dp is derived again: say what it became
        if o["used"] is None:
            o["used"] = getattr(plan, k)
    outputs.check(json_file, timeline, report)
    from parasim.training import simulate
    from parasim.validation.expected_error import TRAINING_METRICS, training_expected

    from parasim.specs.mixed import MixedCluster

    if isinstance(cluster, MixedCluster):
        from parasim.training.hetero import simulate_mixed

        res = simulate_mixed(model_spec, cluster, plan, placement=opts.get("mixed_placement") or "stages",
                             split=opts.get("mixed_split"), timeline=timeline is not None or report is not None)
    else:
        res = simulate(model_spec, cluster, plan, timeline=timeline is not None or report is not None)  # the report's Gantt
    expected = training_expected(model_spec, cluster.accelerator, zero=plan.zero, precision=plan.precision,
                                 profile_errors=profile_errors(prof, None, cluster.accelerator.id, TRAINING_METRICS))
    power = ts.power_limit_keys(cluster, opts.get("power_limit_w"))
    out = {"command": "train", **res.to_dict(), **power, **goodput_keys(model_spec, cluster, res, opts),
           "defaults": defaults, "overrides": overrides, "expected_error": expected}
    if prof is not None:
        out["calibration"] = applied(prof, None, cluster.accelerator.id)
    if json_out:
        print_json(out)
    else:
        render(res, plan, defaults, overrides, expected, goodput=out)
        if power:
            typer.echo(ts.power_limit_line(power))
    if json_file:
        outputs.write_json(json_file, out)
    if timeline:
        from parasim.report.train_trace import dumps as trace_text

        outputs.write_text(timeline, trace_text(out))
        if not json_out:
            typer.echo(f"timeline: {timeline} (open it in Perfetto or chrome://tracing)", err=True)
    if report:
        outputs.write_report(report, [out])
    if not res.fits:
        raise typer.Exit(1)


def goodput_keys(model, cluster, res, opts: dict[str, Any]) -> dict[str, Any]:
    """The result's goodput block (always, from the catalog's assumptions and the flags) and
    time_to_train_s (with --tokens; null otherwise)."""
    from parasim.training.goodput import Reliability, result_keys

    rel = Reliability.from_options({k: opts.get(k) for k in GOODPUT_KEYS})
    return result_keys(model, gpus=cluster.gpus, gpus_per_node=cluster.gpus_per_node, step_time_s=res.step_time_s,
                       tokens_per_s=res.tokens_per_s, r=rel, tokens=opts.get("tokens"),
                       param_state=res.plan.get("param_state", "megatron"))


def _path(config: Path | None, value: Any, key: str = "json_out") -> Path | None:
    """A path from the config file, relative to the file (as `parasim serve -c` reads them)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(key, f"must be a file path, got {value!r}")
    p = Path(value)
    return p if p.is_absolute() or config is None else config.parent / p


def register(app: typer.Typer) -> None:
    app.command("train", cls=RegistryHelp)(train_cmd)
