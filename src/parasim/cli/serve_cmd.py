"""`parasim serve`: simulate one serving plan on a workload (or search its capacity).

Every flag has a config-file key of the same name with underscores (`-c config.yaml`); flags
given on the command line override the file. Paths in a config file are relative to the file.
A plan that cannot run (the weights leave no room for a KV cache, or a request can never fit it)
is still printed, with why, and exits 1; a plan that runs but misses its SLOs is an answer (0).
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import Any, Optional

import typer

from parasim.cli import limits, outputs
from parasim.cli.profile_opt import HELP as PROFILE_HELP
from parasim.cli.profile_opt import applied, calibration, engine_name, profile_errors
from parasim.cli.config import read_mapping
from parasim.cli.names import RegistryHelp
from parasim.errors import InputError, OutputError, write_output
from parasim.report.serve import render
from parasim.report.tables import dumps
from parasim.specs import edge
from parasim.specs.catalog import cluster_for, get_accelerator, get_model

@cache
def plan_keys() -> tuple[str, ...]:
    """The plan's config keys: ServingPlan's fields, declared there once (imported on use, so that
    `parasim --help` does not load the simulator)."""
    from parasim.serving.plan import ServingPlan

    return tuple(f.name for f in dataclasses.fields(ServingPlan))


WORKLOAD_KEYS = ("trace", "trace_columns", "workflow", "workflow_mode", "rate", "requests", "seed", "arrival", "cv", "prompt_tokens", "output_tokens",
                 "prompt_dist", "output_dist", "burst", "length_dist", "length_sigma", "max_concurrency", "models")
SLO_KEYS = ("slo_ttft", "slo_tpot", "slo_itl", "slo_e2e", "itl_percentile", "attainment", "max_queueing_p50")
OTHER_KEYS = ("model", "gpu", "gpus", "gpus_per_node", "engine", *SLO_KEYS, "requests_out", "json_out", "bench_json", "capacity",
              "chunk_size", "profile", "timeline", "timeline_requests", "sweep_rate", "workers", "report")
PATH_KEYS = ("trace", "workflow", "prompt_dist", "output_dist", "requests_out", "json_out", "bench_json", "model", "profile",
             "timeline", "report", "models")
DEFAULTS: dict[str, Any] = {"requests": 1000, "seed": 0, "arrival": "poisson", "cv": 1.0, "prompt_tokens": 512,
                            "output_tokens": 128, "burst": False, "capacity": False, "attainment": 0.9,
                            "length_dist": "fixed"}  # length_sigma: serving.workload.LENGTH_SIGMA


def load_config(path: Path) -> dict[str, Any]:
    data = read_mapping(path)
    out: dict[str, Any] = {}
    for key, v in data.items():
        all_keys = plan_keys() + WORKLOAD_KEYS + OTHER_KEYS
        if key not in all_keys:
            raise InputError(f"{path.name}:{key}", f"unknown key; allowed: {', '.join(sorted(all_keys))}")
        v = limits.value_of(limits.SERVE[key], f"{path.name}:{key}", v) if v is not None else None
        if key in PATH_KEYS and isinstance(v, str) and v and not (key == "model" and not _model_path(path, v)):
            p = Path(v)
            v = str(p if p.is_absolute() else (path.parent / p))
        out[key] = v
    if "chunk_size" in out:
        out.setdefault("token_budget", out.pop("chunk_size"))
    return out


def _model_path(config: Path, value: str) -> bool:
    """Whether a config's `model:` names a file or checkpoint folder (relative to the config file)
    rather than a catalog model."""
    return value.endswith((".json", ".yaml", ".yml")) or (not Path(value).is_absolute() and (config.parent / value).exists())


def build(opts: dict[str, Any]):
    """(model, cluster, plan, workload, slo) from merged options."""
    from parasim.serving.plan import ServingPlan
    from parasim.serving.workload import generate, read_trace

    if not opts.get("model"):
        raise InputError("model", "required (a catalog name, see `parasim models`, or a config.json path)")
    if not opts.get("gpu"):
        raise InputError("gpu", "required (an accelerator id, see `parasim gpus`)")
    model = get_model(str(opts["model"]))
    acc = get_accelerator(str(opts["gpu"]))
    plan = ServingPlan.from_mapping({k: opts[k] for k in plan_keys() if opts.get(k) is not None})
    gpus = opts["gpus"] if opts.get("gpus") is not None else plan.gpus()
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        raise InputError("gpus", f"must be a positive integer, got {gpus!r}")
    gpn = opts.get("gpus_per_node")
    cluster = cluster_for(acc, gpus, gpus_per_node=int(gpn) if gpn is not None else None)
    if plan.is_disagg:
        plan.disagg_split(cluster.gpus)
    elif plan.gpus() > cluster.gpus:
        raise InputError("gpus", f"tp*pp*replicas = {plan.gpus()} exceeds --gpus {cluster.gpus}")
    for k in ("requests", "rate", "cv", "prompt_tokens", "output_tokens", "length_sigma", "max_concurrency"):
        v = opts.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise InputError(k, f"must be a positive number, got {v!r}")
    seed = opts.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError("seed", f"must be an integer >= 0, got {seed!r}")
    a = opts.get("attainment")
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a <= 1:
        raise InputError("attainment", f"must be in (0, 1], got {a!r}")
    slo = build_slo(opts)
    rate = opts.get("rate")
    if opts.get("workflow"):
        return model, cluster, plan, _workflow(opts, model), slo
    if opts.get("workflow_mode"):
        raise InputError("workflow_mode", "sets how a --workflow file's calls are issued: give --workflow FILE")
    if not opts.get("trace") and not opts.get("burst") and rate is None:
        if not opts.get("capacity"):
            raise InputError("rate", "required: give --rate R (requests/s), --burst, --trace FILE, or --capacity "
                                     "to find the highest rate the SLOs allow")
        rate = 1.0  # --capacity without --rate: only the lengths are used (they do not depend on the rate)
    if opts.get("trace"):
        from parasim.serving.traces import parse_trace_columns, trace_note

        wl = read_trace(opts["trace"], limit=opts.get("requests_explicit"),
                        columns=parse_trace_columns(opts.get("trace_columns")),
                        max_total_tokens=model.max_seq_len, model_name=model.name)
        if trace_note(wl.trace):
            typer.echo(f"note: {trace_note(wl.trace)}", err=True)
    elif opts.get("trace_columns"):
        raise InputError("trace_columns", "maps the columns of a --trace file; give --trace")
    else:
        wl = generate(**generate_kw(opts, model), rate=rate, seed=int(opts["seed"]), burst=bool(opts.get("burst")))
    if opts.get("engine"):
        plan = _engine_plan(opts, model, acc, wl)
    return model, cluster, plan, wl, slo


#: options a --workflow file replaces (it sets the arrivals, the lengths and when each call is sent)
WORKFLOW_CONFLICTS = ("trace", "rate", "burst", "max_concurrency", "capacity", "sweep_rate", "prompt_dist",
                      "output_dist", "requests_explicit", "engine")


def _workflow(opts: dict[str, Any], model):
    """The workload of a --workflow file (serving.workflow), its dependencies kept in opts["_deps"]."""
    from parasim.serving.workflow import expand, read_workflows

    clash = next((k for k in WORKFLOW_CONFLICTS if opts.get(k)), None)
    if clash:
        name = "requests" if clash == "requests_explicit" else clash
        raise InputError(name, f"--workflow FILE sets the arrivals, the lengths and when each call is sent; drop --{name.replace('_', '-')}")
    wl, deps = expand(read_workflows(opts["workflow"]), mode=str(opts.get("workflow_mode") or "parallel"),
                      seed=int(opts["seed"]), max_total_tokens=model.max_seq_len)
    opts["_deps"] = deps
    return wl


def generate_kw(opts: dict[str, Any], model) -> dict[str, Any]:
    """serving.workload.generate's keywords from merged options, but the rate, burst and seed."""
    from parasim.serving.workload import LENGTH_SIGMA

    return dict(requests=int(opts["requests"]), arrival=str(opts["arrival"]), cv=float(opts["cv"]),
                prompt_tokens=int(opts["prompt_tokens"]), output_tokens=int(opts["output_tokens"]),
                prompt_dist=opts.get("prompt_dist"), output_dist=opts.get("output_dist"),
                length_dist=str(opts["length_dist"]), length_sigma=float(opts.get("length_sigma") or LENGTH_SIGMA),
                max_total_tokens=model.max_seq_len if opts["length_dist"] == "lognormal" else None)


def _engine_plan(opts: dict[str, Any], model, acc, wl):
    """The plan with `--engine`'s defaults for the fields not given (kept in opts["engine_defaults"]
    for the output)."""
    from parasim.engines.apply import engine_defaults
    from parasim.serving.plan import ServingPlan

    given = {k: opts[k] for k in plan_keys() if opts.get(k) is not None}
    software, fields, choices = engine_defaults(str(opts["engine"]), model, acc, given, wl)
    opts["engine_defaults"] = {"engine": software, "defaults": fields, "choices": [str(c) for c in choices]}
    return ServingPlan.from_mapping(fields | given)


def build_slo(opts: dict[str, Any]):
    """The SLO of merged options, each value checked at the edge (seconds; a millisecond figure is
    refused with a hint). `itl_percentile` needs `slo_itl`; an `attainment` given with only an ITL
    SLO would apply to nothing, so it is refused too."""
    from parasim.serving.metrics import SLO, slo_seconds

    vals = {n: slo_seconds(n, opts.get(f"slo_{n}")) for n in ("ttft", "tpot", "itl", "e2e")}
    pct = edge.number("itl_percentile", opts.get("itl_percentile"), lo=0, lo_open=True, hi=100, allow_none=True)
    if pct is not None and vals["itl"] is None:
        raise InputError("itl_percentile", "applies to the ITL SLO only: give --slo-itl S too (or drop it)")
    if opts.get("attainment_given") and vals["itl"] is not None and not any(vals[n] for n in ("ttft", "tpot", "e2e")):
        raise InputError("attainment", "applies to the per-request SLOs (--slo-ttft, --slo-tpot, --slo-e2e); "
                                       "the ITL SLO takes --itl-percentile instead")
    edge.positive_float("max_queueing_p50", opts.get("max_queueing_p50"), allow_none=True)
    return SLO(ttft_s=vals["ttft"], tpot_s=vals["tpot"], itl_s=vals["itl"], e2e_s=vals["e2e"],
               itl_percentile=float(pct) if pct is not None else 99.0, attainment=float(opts["attainment"]))


def run(opts: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    from parasim.search.capacity import CapacityResult, capacity
    from parasim.serving.simulate import simulate

    model, cluster, plan, wl, slo = build(opts)
    mc = opts.get("max_concurrency")
    if opts.get("capacity"):
        if mc is not None:
            raise InputError("max_concurrency", "--capacity searches an open-loop arrival rate; drop --max-concurrency")
        if not slo.given:
            raise InputError("capacity", "needs an SLO: give --slo-ttft, --slo-tpot, --slo-itl and/or --slo-e2e")
    limit = slo.queueing_limit_s(opts.get("max_queueing_p50"))
    searched = bool(opts.get("capacity")) and not opts.get("trace") and not opts.get("burst") and opts.get("rate") is None
    if searched and opts.get("timeline"):
        raise InputError("timeline", "records one simulated run: give --rate (or --trace, --burst) with --capacity")
    res = None
    if not searched:
        res = simulate(model, cluster, plan, wl, slo=slo, seed=int(opts["seed"]),
                       max_concurrency=int(mc) if mc is not None else None,
                       record=bool(opts.get("timeline") or opts.get("report")), deps=opts.get("_deps"))
    cap = None
    if opts.get("capacity"):
        cap = (CapacityResult(0.0, [], None, queueing_limit_s=limit) if res is not None and not res.feasible
               else capacity(model, cluster, plan, slo=slo, requests=len(wl), seed=int(opts["seed"]),
                             lengths=(wl.prompt_tokens, wl.output_tokens), arrival=str(opts["arrival"]),
                             cv=float(opts["cv"]), max_queueing_p50_s=opts.get("max_queueing_p50")))
    shown = "given_rate"
    if res is None:  # no --rate: show the run at the capacity (else the least loaded probe, else the burst)
        res, shown = next((r, k) for r, k in ((cap.result, "capacity"), (cap.lowest, "lowest_probe"),
                                              (cap.burst, "burst")) if r is not None)
    out = {"command": "serve", **res.to_dict()}
    if slo.given:
        q = res.summary.get("queueing_p50_s")
        out["stability"] = {"max_queueing_p50_s": limit, "queueing_p50_s": q,
                            "stable": None if limit is None or q is None else q <= limit}
    if cap is not None:
        out["capacity_requests_per_s"] = cap.requests_per_s
        out["summary"]["capacity_requests_per_s"] = cap.requests_per_s
        out["capacity"] = cap.to_dict() | {"attainment": slo.attainment if slo.per_request else None,
                                           "summary_at": shown}
    add_engine_notes(out["inputs"], opts)
    if plan.spec_method:
        add_spec_notes(out, plan)
    if plan.overlap != "none":
        add_overlap_note(out["inputs"], plan)
    out["expected_error"] = expected_error(opts, model, cluster, plan)
    return out, res


def add_spec_notes(out: dict[str, Any], plan) -> None:
    """Speculative decoding's derived figures (JSON `speculative`) and a note on what is averaged."""
    from parasim.serving.speculative import tokens_per_step

    k, a = int(plan.num_speculative_tokens), float(plan.spec_acceptance)
    e = tokens_per_step(a, k)
    out["speculative"] = {"method": plan.spec_method, "num_speculative_tokens": k, "acceptance": a,
                          "draft_model": plan.draft_model, "tokens_per_step": e,
                          "vllm_acceptance_rate": (e - 1.0) / k}
    out["inputs"]["notes"] = [*out["inputs"].get("notes", []),
                              f"speculative decoding ({plan.spec_method}, K={k}, acceptance {a:g}): {e:.2f} tokens per "
                              f"verify step on average (vLLM's logged acceptance rate {(e - 1.0) / k:.2f}); tokens "
                              "are spread evenly over the step, so ITL percentiles are smoother than measured"]


def add_overlap_note(inputs: dict[str, Any], plan) -> None:
    """What `--overlap` changed, and that no published run of it is in the validation set."""
    from parasim.serving.plan import DEFAULT_NANO_BATCHES

    n = plan.nano_batches or DEFAULT_NANO_BATCHES
    inputs["notes"] = [*inputs.get("notes", []),
                       f"intra-device overlap ({plan.overlap}): each iteration runs as the faster of the sequential "
                       f"schedule and 2 .. {n} nano-batches whose GEMMs, decode attention and TP all-reduces share the "
                       "GPU (docs/serving.md, Intra-device overlap); not validated against published runs"]


def add_engine_notes(inputs: dict[str, Any], opts: dict[str, Any]) -> None:
    """`--engine`'s defaults (kept by build in opts["engine_defaults"]) into a result's inputs and notes."""
    e = opts.get("engine_defaults")
    if e:
        inputs["engine"] = e
        # why each default was taken (e.g. which scheduling rule the release ran), not only its value
        inputs["notes"] = [f"defaults used ({e['engine']}): " + " ".join(f"{k}={v}" for k, v in e["defaults"].items()),
                           *(f"{e['engine']}: {c}" for c in e.get("choices", [])), *inputs.get("notes", [])]


def expected_error(opts: dict[str, Any], model, cluster, plan) -> dict[str, Any]:
    """The validated error of the nearest category of published runs (the engine's when --engine names one)."""
    from parasim.validation.expected_error import SERVING_METRICS, serving_expected

    software = (opts.get("engine_defaults") or {}).get("engine")
    own = profile_errors(opts.get("profile"), engine_name(opts.get("engine")), cluster.accelerator.id, SERVING_METRICS)
    out = serving_expected(model, cluster.accelerator, weights=plan.weights or model.native_weights, software=software,
                           profile_errors=own)
    return unvalidated_spec(out, plan.spec_method) if plan.spec_method else out


def unvalidated_spec(e: dict[str, Any], method: str) -> dict[str, Any]:
    """No published speculative-decoding run is in the validation set: every metric class says so
    (status `unvalidated`), keeping plain decoding's figures of the category for reference."""
    def mark(x: dict[str, Any]) -> dict[str, Any]:
        plain = (f"; plain decoding in this category: ±{x['p50_abs_pct']:.1f} % p50, ±{x['p90_abs_pct']:.1f} % p90"
                 if x.get("p50_abs_pct") is not None else "")
        return {**x, "status": "unvalidated", "plain_decoding": {k: x.get(k) for k in ("p50_abs_pct", "p90_abs_pct", "runs")},
                "note": f"speculative decoding ({method}) is not validated against published runs{plain}"}

    out = mark(e)
    if isinstance(e.get("by_metric"), dict):
        out["by_metric"] = {m: mark(x) for m, x in e["by_metric"].items()}
    return out


def bench_meta(opts: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """request_rate / burstiness / max_concurrency as vLLM's result file states them, and the
    percentiles to write (BENCH_PERCENTILES and the ITL SLO's)."""
    from parasim.report.vllm_bench import BENCH_PERCENTILES

    if opts.get("trace"):
        rate, burstiness = out["inputs"]["workload"].get("offered_requests_per_s"), None
    else:
        at = out.get("capacity", {}).get("summary_at", "given_rate")
        if opts.get("burst") or at == "burst":
            rate = "inf"
        elif at == "capacity":
            rate = out["capacity_requests_per_s"]
        elif at == "lowest_probe":
            rate = min(p["requests_per_s"] for p in out["capacity"]["probes"])
        else:
            rate = opts.get("rate")
        burstiness = None if rate == "inf" else (1.0 if opts["arrival"] == "poisson" else 1.0 / float(opts["cv"]) ** 2)
    slo = out["inputs"]["slo"]
    pct = set(BENCH_PERCENTILES) | ({float(slo["itl_percentile"])} if slo.get("itl_s") is not None else set())
    return {"request_rate": rate, "burstiness": burstiness, "max_concurrency": opts.get("max_concurrency"),
            "percentiles": tuple(sorted(pct))}


def _flags(args: dict[str, Any]) -> dict[str, Any]:
    """The command's options under their config-file keys (every parameter but --config and
    --json), paths as text: the options are declared once, in the signature."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in args.items() if k not in ("config", "json_output")}


def serve_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config; keys are these flags' names with underscores."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Catalog model name or path to a HF config.json.", rich_help_panel="Plan"),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Accelerator id (see `parasim gpus`).", rich_help_panel="Plan"),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="GPUs in the cluster (default: what the plan uses).", rich_help_panel="Plan"),
    tp: Optional[int] = typer.Option(None, "--tp", help="Tensor-parallel degree per replica.", rich_help_panel="Plan"),
    pp: Optional[int] = typer.Option(None, "--pp", help="Pipeline-parallel degree per replica.", rich_help_panel="Plan"),
    replicas: Optional[int] = typer.Option(None, "--replicas", help="Data-parallel replicas behind the router.", rich_help_panel="Plan"),
    engine: Optional[str] = typer.Option(None, "--engine", help="NAME[==VERSION]: take that serving engine's defaults (as `parasim validate` replays its cases) for the plan fields not given, e.g. vllm==0.6.0; engines: nim, tensorrt-llm, vllm, sglang, tgi, lmdeploy. Printed as \"defaults used\"; explicit flags win.", rich_help_panel="Plan"),
    ep: Optional[int] = typer.Option(None, "--ep", help="MoE: spread the routed experts over this many one-GPU replicas (data-parallel attention; needs --tp 1).", rich_help_panel="Plan"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="{SCHEDULERS}.", rich_help_panel="Plan"),
    token_budget: Optional[int] = typer.Option(None, "--token-budget", "--chunk-size", help="Tokens per iteration (chunk size).", rich_help_panel="Plan"),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Max running sequences per engine (default 256).", rich_help_panel="Plan"),
    block_size: Optional[int] = typer.Option(None, "--block-size", help="KV block size in tokens (default 16).", rich_help_panel="Plan"),
    weights: Optional[str] = typer.Option(None, "--weights", help="Weight precision: bf16, fp16, fp8, int8, int4, fp4 (default: the model's own). A format the GPU has no unit for runs weight-only where an engine can (FP8/FP4 Marlin on NVIDIA Ampere+), else it is an error naming the GPUs that can.", rich_help_panel="Plan"),
    kv_dtype: Optional[str] = typer.Option(None, "--kv-dtype", help="KV-cache precision (default: the model's dtype, also with quantized weights).", rich_help_panel="Plan"),
    prefix_cache: Optional[bool] = typer.Option(None, "--prefix-cache/--no-prefix-cache", help="Reuse shared-prefix KV blocks (default off; batchllm always on).", rich_help_panel="Plan"),
    router: Optional[str] = typer.Option(None, "--router", help="{ROUTERS}.", rich_help_panel="Plan"),
    gpu_memory_utilization: Optional[float] = typer.Option(None, "--gpu-memory-utilization", help="Share of HBM the engine may use (default 0.9).", rich_help_panel="Plan"),
    kv_reservation: Optional[str] = typer.Option(None, "--kv-reservation", help="incremental (grow and preempt), full (reserve prompt+output) or estimated (SGLang: grow, admit beside the running requests' estimated output).", rich_help_panel="Plan"),
    iteration_overhead_s: Optional[float] = typer.Option(None, "--iteration-overhead-s", help="CPU/launch overhead per iteration (s).", rich_help_panel="Plan"),
    eager_prefill_layer_s: Optional[float] = typer.Option(None, "--eager-prefill-layer-s", help="Host dispatch time per layer of an eager (no CUDA graph) prefill; a prefill iteration takes at least layers x this (vLLM 0.6 cases: eager_layer_dispatch_s, 0.26 ms; 0.36 ms with TP).", rich_help_panel="Plan"),
    output_delay_s: Optional[float] = typer.Option(None, "--output-delay-s", help="Time from an iteration's end to its tokens being reported (vLLM >= 0.6 async output processing: VLLM_ASYNC_OUTPUT_DELAY_S); adds to TTFT and E2E, not to TPOT.", rich_help_panel="Plan"),
    act_quant: Optional[str] = typer.Option(None, "--act-quant", help="fp8/int8/fp4 weights: how activations are quantized before each linear: fused (default; inside the producing kernel), static or dynamic (separate kernels before all four linears, as vLLM 0.6 runs them; dynamic for --quantization fp8 on a 16-bit checkpoint), or as TensorRT-LLM's PyTorch backend runs them: norms_act (separate before QKV, gate/up and down), norms (QKV and gate/up), act (down only).", rich_help_panel="Plan"),
    attention: Optional[str] = typer.Option(None, "--attention", help="prefill attention kernel: flash (the catalog's best, FA3 on Hopper; default) or flash2 (FlashAttention-2 generation, as vLLM before 0.7 runs it).", rich_help_panel="Plan"),
    custom_allreduce: Optional[bool] = typer.Option(None, "--custom-allreduce/--no-custom-allreduce", help="TP all-reduce by the engine's one/two-shot kernel inside an NVLink domain (default on); off = NCCL only, as vLLM's --disable-custom-all-reduce.", rich_help_panel="Plan"),
    schedule_ahead: Optional[bool] = typer.Option(None, "--schedule-ahead/--no-schedule-ahead", help="The engine forms its next batch while the current one runs (SGLang >= 0.4's overlap scheduler, vLLM >= 0.14's async scheduling, TensorRT-LLM's PyTorch overlap scheduler from 0.20: those engines' default): a request arriving during an iteration joins the one after next at the earliest.", rich_help_panel="Plan"),
    prefill_gpus: Optional[int] = typer.Option(None, "--prefill-gpus", help="disagg: GPUs in the prefill pool.", rich_help_panel="Disaggregation"),
    prefill_tp: Optional[int] = typer.Option(None, "--prefill-tp", help="disagg: TP of prefill instances.", rich_help_panel="Disaggregation"),
    decode_gpus: Optional[int] = typer.Option(None, "--decode-gpus", help="disagg: GPUs in the decode pool.", rich_help_panel="Disaggregation"),
    decode_tp: Optional[int] = typer.Option(None, "--decode-tp", help="disagg: TP of decode instances.", rich_help_panel="Disaggregation"),
    prefill_pp: Optional[int] = typer.Option(None, "--prefill-pp", help="disagg: pipeline stages of prefill instances (default --pp).", rich_help_panel="Disaggregation"),
    decode_pp: Optional[int] = typer.Option(None, "--decode-pp", help="disagg: pipeline stages of decode instances (default --pp).", rich_help_panel="Disaggregation"),
    max_queued: Optional[int] = typer.Option(None, "--max-queued", help="Admission control: shed (refuse) a request that finds this many requests queued at its engine, as a gateway returning 429, instead of queueing it; counted in the summary's `shed` (default: queue without bound).", rich_help_panel="Plan"),
    autoscale_max: Optional[int] = typer.Option(None, "--autoscale-max", help="Autoscale between --replicas and this many replicas on the requests in flight, as a Kubernetes HPA does (docs/serving.md, Autoscaling); needs --autoscale-target and --autoscale-startup-s.", rich_help_panel="Autoscaling"),
    autoscale_target: Optional[float] = typer.Option(None, "--autoscale-target", help="Requests in flight (queued or running) per replica the autoscaler aims at.", rich_help_panel="Autoscaling"),
    autoscale_interval_s: Optional[float] = typer.Option(None, "--autoscale-interval-s", help="Seconds between the autoscaler's looks at the metric (default 15, HPA's sync period).", rich_help_panel="Autoscaling"),
    autoscale_startup_s: Optional[float] = typer.Option(None, "--autoscale-startup-s", help="Seconds from asking for a replica to it serving (scheduling, image pull, loading the weights).", rich_help_panel="Autoscaling"),
    autoscale_down_delay_s: Optional[float] = typer.Option(None, "--autoscale-down-delay-s", help="Scale down only to the highest recommendation of this many seconds (default 300, HPA's stabilization window).", rich_help_panel="Autoscaling"),
    spec_method: Optional[str] = typer.Option(None, "--spec-method", help="Speculative decoding: draft (a smaller model, --draft-model), eagle (an EAGLE-style head) or ngram (prompt lookup); needs --num-speculative-tokens and --spec-acceptance (docs/serving.md, Speculative decoding).", rich_help_panel="Speculative decoding"),
    num_speculative_tokens: Optional[int] = typer.Option(None, "--num-speculative-tokens", help="Draft tokens proposed per step, K (vLLM's name; 1 .. 16).", rich_help_panel="Speculative decoding"),
    spec_acceptance: Optional[float] = typer.Option(None, "--spec-acceptance", help="Chance each draft token is accepted given the ones before it were, in (0, 1]; a step then emits (1 - a^(K+1)) / (1 - a) tokens on average.", rich_help_panel="Speculative decoding"),
    draft_model: Optional[str] = typer.Option(None, "--draft-model", help="--spec-method draft: the drafting model (a catalog name or config path; same tokenizer as --model).", rich_help_panel="Speculative decoding"),
    overlap: Optional[str] = typer.Option(None, "--overlap", help="Intra-device overlap: none (default) or nanoflow (NanoFlow's nano-batches: GEMMs, decode attention and TP all-reduces of different nano-batches share the GPU's SMs; docs/serving.md, Intra-device overlap).", rich_help_panel="Plan"),
    nano_batches: Optional[int] = typer.Option(None, "--nano-batches", help="--overlap nanoflow: nano-batches per iteration, 2 .. 16 (default 4, NanoFlow's 70B pipeline).", rich_help_panel="Plan"),
    migration: Optional[str] = typer.Option(None, "--migration", help="Live-migrate decoding requests from the most to the least loaded replica, as Llumnix does: llumnix (docs/serving.md, Migration); needs --replicas 2 or more.", rich_help_panel="Migration"),
    migration_interval_s: Optional[float] = typer.Option(None, "--migration-interval-s", help="Seconds between the migration policy's pairings (default 0.05, Llumnix's polling interval).", rich_help_panel="Migration"),
    migrate_out_threshold: Optional[float] = typer.Option(None, "--migrate-out-threshold", help="An instance whose freeness (free KV blocks per request, queued demand counted) is below this migrates out; one above takes requests in (default 3, Llumnix's).", rich_help_panel="Migration"),
    trace: Optional[Path] = typer.Option(None, "--trace", help="JSONL/CSV trace: parasim's (arrival_s, prompt_tokens, output_tokens[, prefix_id, prefix_tokens]), Vidur's, Azure's LLM inference trace or BurstGPT's, recognised from the header (docs/serving.md, Trace formats).", rich_help_panel="Workload"),
    trace_columns: Optional[str] = typer.Option(None, "--trace-columns", help="Map another trace's columns: arrival=COL,prompt=COL,output=COL[,arrival_unit=s|ms|us|ns].", rich_help_panel="Workload"),
    rate: Optional[float] = typer.Option(None, "--rate", help="Generated arrivals per second.", rich_help_panel="Workload"),
    requests: Optional[int] = typer.Option(None, "--requests", help="Generated requests (default 1000); with --trace, the first N.", rich_help_panel="Workload"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Generator seed (default 0).", rich_help_panel="Workload"),
    arrival: Optional[str] = typer.Option(None, "--arrival", help="poisson or gamma.", rich_help_panel="Workload"),
    cv: Optional[float] = typer.Option(None, "--cv", help="Gamma arrivals: coefficient of variation.", rich_help_panel="Workload"),
    prompt_tokens: Optional[int] = typer.Option(None, "--prompt-tokens", help="Prompt length, or its mean with --length-dist lognormal (default 512).", rich_help_panel="Workload"),
    output_tokens: Optional[int] = typer.Option(None, "--output-tokens", help="Output length, or its mean with --length-dist lognormal (default 128).", rich_help_panel="Workload"),
    length_dist: Optional[str] = typer.Option(None, "--length-dist", help="fixed (default) or lognormal (means --prompt-tokens/--output-tokens, capped at the model's context).", rich_help_panel="Workload"),
    length_sigma: Optional[float] = typer.Option(None, "--length-sigma", help="Lognormal sigma of the lengths (default 0.5).", rich_help_panel="Workload"),
    prompt_dist: Optional[Path] = typer.Option(None, "--prompt-dist", help="File of prompt lengths (one per line, or length,weight).", rich_help_panel="Workload"),
    output_dist: Optional[Path] = typer.Option(None, "--output-dist", help="File of output lengths.", rich_help_panel="Workload"),
    burst: Optional[bool] = typer.Option(None, "--burst", help="All requests at t = 0.", rich_help_panel="Workload"),
    max_concurrency: Optional[int] = typer.Option(None, "--max-concurrency", help="Closed-loop client, as benchmark clients' --max-concurrency: at most N requests out at once; the next is sent when one comes back (not before its arrival time).", rich_help_panel="Workload"),
    slo_ttft: Optional[float] = typer.Option(None, "--slo-ttft", help="Per-request TTFT SLO, seconds.", rich_help_panel="SLO"),
    slo_tpot: Optional[float] = typer.Option(None, "--slo-tpot", help="Per-request TPOT SLO, seconds per output token after the first.", rich_help_panel="SLO"),
    slo_e2e: Optional[float] = typer.Option(None, "--slo-e2e", help="Per-request end-to-end latency SLO, seconds.", rich_help_panel="SLO"),
    slo_itl: Optional[float] = typer.Option(None, "--slo-itl", help="SLO on the --itl-percentile of all inter-token gaps, seconds (Sarathi-Serve's P99 TBT).", rich_help_panel="SLO"),
    itl_percentile: Optional[float] = typer.Option(None, "--itl-percentile", help="Percentile of the inter-token gaps --slo-itl applies to (default 99).", rich_help_panel="SLO"),
    attainment: Optional[float] = typer.Option(None, "--attainment", help="Share of requests that must meet the per-request SLOs (default 0.9).", rich_help_panel="SLO"),
    capacity: Optional[bool] = typer.Option(None, "--capacity", help="Search the highest Poisson rate that meets the SLOs stably (without --rate: show the run at that rate).", rich_help_panel="SLO"),
    max_queueing_p50: Optional[float] = typer.Option(None, "--max-queueing-p50", help="Stability: median queueing delay bound, seconds (default 2, Sarathi-Serve's, when no TTFT or E2E SLO is given).", rich_help_panel="SLO"),
    requests_out: Optional[Path] = typer.Option(None, "--requests-out", help="Write per-request results (.csv or .jsonl).", rich_help_panel="Output"),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table.", rich_help_panel="Output"),
    json_out: Optional[Path] = typer.Option(None, "--json-out", help="Also write the JSON object to FILE.", rich_help_panel="Output"),
    bench_json: Optional[Path] = typer.Option(None, "--bench-json", help="Also write the run as a vLLM benchmark result file (its key names, milliseconds).", rich_help_panel="Output"),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write a self-contained HTML report to FILE (inputs, plan, expected error, figures; docs/report.md).", rich_help_panel="Output"),
    profile: Optional[Path] = typer.Option(None, "--profile", help=PROFILE_HELP + " The software is --engine's; without it a profile of one software is taken as the user's.", rich_help_panel="Plan"),
    timeline: Optional[Path] = typer.Option(None, "--timeline", help="Also write the run as a Chrome trace (open in ui.perfetto.dev): every iteration per replica, KV-cache and queue counters, request spans; the JSON gains `series` and `distributions`.", rich_help_panel="Output"),
    timeline_requests: Optional[int] = typer.Option(None, "--timeline-requests", help="Requests drawn as spans in the --timeline file: the first N by arrival (default 1000; 0 = none). Iterations are all recorded.", rich_help_panel="Output"),
    workflow: Optional[Path] = typer.Option(None, "--workflow", help="YAML/JSON file of compound LLM workflows (DAGs of calls: fan-out/fan-in, chains with tool latencies) arriving as Poisson streams; instead of --rate/--trace; the result gains per-workflow end-to-end latency (docs/serving.md, Workflows).", rich_help_panel="Workload"),
    workflow_mode: Optional[str] = typer.Option(None, "--workflow-mode", help="parallel (default: each call sent when the calls it waits for are done) or sequential (every call of a workflow after the one before it).", rich_help_panel="Workload"),
    sweep_rate: Optional[str] = typer.Option(None, "--sweep-rate", help="LO:HI:N: run the plan at N generated arrival rates linear from LO to HI requests/s (both included) and tabulate each rate's metrics with the capacity knee (docs/serving.md, Load sweeps); instead of --rate.", rich_help_panel="Workload"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="--sweep-rate: worker processes (default: cores); the result does not depend on it.", rich_help_panel="Workload"),
    models: Optional[Path] = typer.Option(None, "--models", help="YAML/JSON file of several models sharing the cluster (--gpu, --gpus), each with its own workload, SLOs and optional placement (gpus, tp, replicas, scheduler); GPUs are partitioned among them; the result gives per-model metrics (`summary.models`) and cluster totals (docs/serving.md, Several models).", rich_help_panel="Workload"),
) -> None:
    """Simulate serving a model on GPUs: TTFT, TPOT, throughput, SLO attainment, energy and cost.

    The JSON object is deterministic for the same inputs and seed except `sim_wall_s`, the
    simulator's own wall-clock time.
    """
    given = limits.check(limits.SERVE, _flags(locals()), dashes=False)  # first: locals() are the options
    opts: dict[str, Any] = dict(DEFAULTS)
    cfg = load_config(Path(limits.path("config", config))) if config is not None else {}
    opts.update(cfg)
    opts.update({k: v for k, v in given.items() if v is not None})
    opts["requests_explicit"] = given["requests"] if given["requests"] is not None else cfg.get("requests")
    opts["attainment_given"] = given["attainment"] is not None or "attainment" in cfg
    if opts.get("models") is not None:  # several models: their own workloads, SLOs and plans (cli/serve_models.py)
        from parasim.cli.serve_models import serve_models

        return serve_models(opts, {k for k, v in given.items() if v is not None} | set(cfg), json_output)
    if opts.get("bench_json") is not None:
        edge.text_value("bench_json", opts["bench_json"])
    if opts.get("requests_out") and Path(opts["requests_out"]).suffix.lower() not in (".csv", ".jsonl"):
        raise InputError("requests_out", f"file must end in .csv or .jsonl, got '{Path(opts['requests_out']).name}'")
    if opts.get("timeline_requests") is not None and not opts.get("timeline"):
        raise InputError("timeline_requests", "caps the requests traced in a --timeline file: give --timeline FILE")
    outputs.check(opts.get("requests_out"), opts.get("json_out"), opts.get("bench_json"), opts.get("timeline"),
                  opts.get("report"))
    sweeping = opts.get("sweep_rate") is not None or opts.get("workers") is not None
    with calibration(opts.get("profile"), software=engine_name(opts.get("engine"))):
        out, res = (run_sweep(opts), None) if sweeping else run(opts)
    if opts.get("profile"):
        out["inputs"]["calibration"] = applied(opts["profile"], engine_name(opts.get("engine")), str(out["inputs"]["gpu"]))
    text = dumps(out)
    if json_output:
        typer.echo(text)
    elif sweeping:
        from parasim.report.sweep import render_sweep

        render_sweep(json.loads(text))
    else:
        render(json.loads(text))
    _write_files(opts, out, res, text)  # a sweep refuses --requests-out, --bench-json and --timeline (cli/serve_sweep.py)
    if not out["feasible"]:
        raise typer.Exit(1)


def run_sweep(opts: dict[str, Any]) -> dict[str, Any]:
    """`--sweep-rate`: the plan built as for one run (at LO), then run at every rate (cli/serve_sweep.py)."""
    from parasim.cli.serve_sweep import check_sweep_options, sweep_result

    check_sweep_options(opts)
    o = {**opts, "rate": opts["sweep_rate"][0]}
    model, cluster, plan, _, slo = build(o)
    out = sweep_result(o, model, cluster, plan, slo, generate_kw(opts, model))
    add_engine_notes(out["inputs"], o)
    out["expected_error"] = expected_error(o, model, cluster, plan)
    return out


def _write_files(opts: dict[str, Any], out: dict[str, Any], res, text: str) -> None:
    """--json-out, --requests-out, --bench-json, --timeline and --report, each only when asked for."""
    if opts.get("json_out"):
        outputs.write_text(opts["json_out"], text + "\n")
    if opts.get("report"):
        outputs.write_report(opts["report"], [out])
    if opts.get("requests_out"):
        from parasim.serving.metrics import write_requests

        try:
            write_requests(res.requests, opts["requests_out"])
        except OSError as e:
            raise OutputError(str(opts["requests_out"]), e.strerror or str(e)) from None
    if opts.get("bench_json"):
        from parasim.report.vllm_bench import bench_result

        write_output(opts["bench_json"], dumps(bench_result(res, **bench_meta(opts, out))) + "\n")
    if opts.get("timeline"):
        from parasim.report.serve_trace import DEFAULT_REQUESTS, trace_events
        from parasim.report.trace import dumps_trace

        n = opts.get("timeline_requests")
        events = trace_events(res.recording, res.requests, DEFAULT_REQUESTS if n is None else int(n))
        outputs.write_text(opts["timeline"], dumps_trace(events))
        typer.echo(f"timeline: {opts['timeline']} (open it in Perfetto or chrome://tracing)", err=True)


def register(app: typer.Typer) -> None:
    app.command("serve", cls=RegistryHelp)(serve_cmd)
