"""Serving validation cases: `predict_case(case) -> CaseResult`.

A case names the software that was measured; null plan fields get what that software would
most plausibly have used (its `parasim.engines` profile: TensorRT-LLM, vLLM, SGLang, TGI,
LMDeploy, or the generic one), and every such choice is reported in `CaseResult.choices`. The
case's source decides whether its mean TPOT is per request or per output token.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from parasim.engines.lookup import profile_for
from parasim.engines.profile import ENGINES, Choice, EngineContext, EngineProfile
from parasim.errors import InputError
from parasim.serving.plan import ServingPlan
from parasim.serving.simulate import plan_pools, simulate
from parasim.serving.workload import Workload, generate, read_trace
from parasim.specs.validation_case import Case, CaseResult
from parasim.units import fmt_gib
from parasim.validation.memory import ALL_MEMORY_KEYS, memory_unit_bytes, oom_verdict


def _workload(case: Case) -> Workload:
    w = case.workload or {}
    n = w.get("requests")
    if w.get("trace"):
        path = (case.base_dir / str(w["trace"])).resolve()
        return read_trace(path, limit=int(n) if n else None)
    if not n:
        raise InputError(f"case {case.id}.workload.requests", "required without a trace")
    arrival = w.get("arrival", "burst")
    if arrival == "burst":
        return generate(requests=int(n), burst=True, prompt_tokens=int(w["prompt_tokens"]),
                        output_tokens=int(w["output_tokens"]))
    if isinstance(arrival, dict) and "poisson_rate" in arrival:
        return generate(requests=int(n), rate=float(arrival["poisson_rate"]), seed=int(arrival.get("seed", 0)),
                        prompt_tokens=int(w["prompt_tokens"]), output_tokens=int(w["output_tokens"]))
    raise InputError(f"case {case.id}.workload.arrival", "must be 'burst' or {poisson_rate: R, seed: S}")


def case_plan(case: Case, wl: Workload | None = None) -> tuple[ServingPlan, list[Choice], str]:
    """The plan a case ran: its stated fields, then its engine's profile for the rest. Returns the
    plan, every default taken (`Choice`: field, value, the report's sentence) and the engine name."""
    profile = profile_for(case.software)
    ctx = _context(case, profile, wl)
    _dp_attention(case, profile, ctx)
    profile().apply(ctx)
    if not ctx.stated.get("kv_dtype") and not ctx.kw.get("kv_dtype") and profile.fp8_cache_with_fp8_weights:
        ctx.choose("kv_cache: same precision as the weights' activations", "kv_dtype", None)
    return ServingPlan(**{k: v for k, v in ctx.kw.items() if v is not None}), ctx.choices, profile.name


def _context(case: Case, profile: type[EngineProfile], wl: Workload | None) -> EngineContext:
    """The case's stated plan fields as an EngineContext: weights bf16 when not published, and the
    case format's rule that an unstated cache is fp8 with fp8 weights (ServingPlan's default before
    it became the model's dtype), for engines whose FP8 configs quantize it too."""
    p = case.plan
    stated = {"max_batch": int(p["max_batch"]) if p.get("max_batch") else None, "kv_dtype": p.get("kv_cache"),
              "scheduler": p.get("scheduler")}
    kw: dict[str, Any] = {"tp": int(p.get("tp") or 1), "pp": int(p.get("pp") or 1),
                          "replicas": int(p.get("replicas") or 1), "weights": p.get("weights") or "bf16",
                          "kv_dtype": p.get("kv_cache")}
    ctx = EngineContext(software=case.software, source=case.source, model=case.model, acc=case.cluster.accelerator,
                        stated=stated, kw=kw, workload=lambda: wl if wl is not None else _workload(case),
                        server_tp=kw["tp"])
    if not p.get("weights"):
        ctx.choose("weights: bf16 (not published)", "weights", "bf16")
    if kw["weights"] == "fp8" and not kw["kv_dtype"] and profile.fp8_cache_with_fp8_weights:
        kw["kv_dtype"] = "fp8"
        ctx.choose("kv_cache: fp8 (not published; fp8 weights, as TensorRT-LLM's FP8 configs quantize the cache)",
                   "kv_dtype", "fp8")
    return ctx


def _dp_attention(case: Case, profile: type[EngineProfile], ctx: EngineContext) -> None:
    """Data-parallel attention with the experts spread over the DP ranks, as a source states it
    (each profile's `attention_dp`: SGLang `--enable-dp-attention --dp N`, vLLM
    `--data-parallel-size N --enable-expert-parallel`, TensorRT-LLM `enable_attention_dp: true`).
    Each rank becomes a replica of one GPU with its own batch and KV cache, the routed experts
    are spread over the N ranks (`ServingPlan.ep`), and the ranks step in lockstep (serving.lockstep). Other layouts are left as TP (and said as not
    modelled)."""
    kw = ctx.kw
    if not case.model.is_moe or (got := profile.attention_dp(ctx.text, kw["tp"], ctx.software)) is None:
        return
    dp, tp_total = got
    if dp < 2 or tp_total != dp or kw["pp"] != 1 or case.model.experts % dp:
        return
    kw.update(tp=1, replicas=kw["replicas"] * dp, ep=dp)
    ctx.choose(f"data-parallel attention over {dp} ranks (one GPU each, own batch and KV cache), routed experts "
               f"spread over the {dp} ranks (ep={dp}); the ranks run in lockstep (each iteration ends with the "
               "slowest rank; the experts see the group's tokens at the busiest rank's routed load)", "ep", dp)


#: a client concurrency limit in the source: `--max-concurrency N` (vllm bench serve, sglang.bench_serving and
#: their printed "Max request concurrency: N") or `--concurrency N` (trtllm-bench, genai-perf); not the
#: achieved average that bench_serving prints as "Concurrency: 507.99"
_MAX_CONCURRENCY = re.compile(r"(?:max[-_ ](?:re\w*[-_ ])?concurrency|--concurrency)\s*[=:]?\s*(\d+)(?![.\d])",
                              re.IGNORECASE)
#: engine features a source may name that the simulator does not model: said with the prediction
_DP_EP_NOTES = ("data-parallel attention (each rank its own batch and KV cache)",
                "expert parallelism (experts are split by TP)")
_NOT_MODELLED = (
    (re.compile(r"enable[-_]dp[-_]attention|data[-_]parallel[-_]attention", re.IGNORECASE), _DP_EP_NOTES[0]),
    (re.compile(r"speculative|\beagle\b|\bmtp\b|num[-_]speculative[-_]tokens|medusa", re.IGNORECASE),
     "speculative decoding"),
    (re.compile(r"enable[-_]mixed[-_]chunk", re.IGNORECASE), "SGLang's mixed prefill-decode chunks"),
    (re.compile(r"enable[-_]expert[-_]parallel|--ep[-_]size|expert[-_]parallel[-_]size", re.IGNORECASE),
     _DP_EP_NOTES[1]),
)


_PER_TOKEN = re.compile(r"per output token|per-token|histogram|/metrics|inter-token", re.IGNORECASE)
_PER_REQUEST = re.compile(r"benchmark_serving|bench_serving|bench serve|per request tpot|genai-perf|trtllm-bench|gptManagerBenchmark",
                          re.IGNORECASE)


def _tpot_basis(source: str, prof: str) -> str:
    """'token' or 'request': what the case's mean TPOT averages over. The source decides (vLLM's
    /metrics histogram: every inter-token gap; benchmark clients: each request's own mean); a
    vLLM source that says neither is read as the histogram."""
    if _PER_TOKEN.search(source):
        return "token"
    if _PER_REQUEST.search(source):
        return "request"
    return ENGINES.get(prof).tpot_basis


def _memory_predictions(case: Case, plan: ServingPlan) -> tuple[dict[str, float], bool, str]:
    """The memory keys the case measured, from the first pool's per-GPU split (`cost.memory.kv_budget`,
    what the engine computes at start-up): KV pool in blocks, tokens (as vLLM logs them: the blocks
    split over its KV cache groups, `KVBudget.reported_tokens`) and bytes, weights, and the
    whole budget (HBM x gpu_memory_utilization). Also whether it fits and a sentence saying so."""
    pool = plan_pools(case.model, case.cluster, plan)[0][0]
    kvb, unit = pool.kvb, memory_unit_bytes(case.source)
    values = {"kv_cache_tokens": float(kvb.reported_tokens), "kv_cache_blocks": float(kvb.blocks),
              "kv_cache_gb_per_gpu": max(kvb.kv, 0.0) / unit, "weights_gb_per_gpu": kvb.weights / unit,
              "peak_memory_gb_per_gpu": kvb.usable / unit}
    what = (f"weights {fmt_gib(kvb.weights)}, activations {fmt_gib(kvb.activations)} and runtime "
            f"{fmt_gib(kvb.reserved)} leave {fmt_gib(max(kvb.kv, 0.0))} of {fmt_gib(kvb.usable)} for the KV cache "
            f"({kvb.blocks} blocks of {kvb.block_size} tokens)")
    return {k: v for k, v in values.items() if k in case.measured}, kvb.blocks > 0, what


def _predict_memory_only(case: Case) -> CaseResult:
    """A case that measured only memory (an engine's start-up log): the plan and its memory split,
    no simulation (there is no workload to run)."""
    # no requests to serve: the engine's defaults that depend on them (vLLM V0's max_model_len)
    # fall back to the model's own (one 2-token request is shorter than any context)
    placeholder = generate(requests=1, burst=True, prompt_tokens=1, output_tokens=1)
    try:
        plan, choices, _ = case_plan(case, placeholder)
        pred, fits, what = _memory_predictions(case, plan)
    except InputError as e:
        return CaseResult(status="skipped", reason=f"{e.field}: {e.message}")
    choices.append(f"memory at start-up: {what}")
    verdict = oom_verdict(case, fits=fits, what=what)
    if verdict is not None:
        return CaseResult(status=verdict[0], predicted=pred, choices=choices, reason=verdict[1])
    return CaseResult(status="ok" if fits else "infeasible", predicted=pred, choices=choices)


def predict_case(case: Case) -> CaseResult:
    if case.kind != "serving":
        return CaseResult(status="skipped", reason="not a serving case")
    if case.workload is None and set(case.measured) <= {*ALL_MEMORY_KEYS, "fits"}:
        return _predict_memory_only(case)
    try:
        wl = _workload(case)
    except InputError as e:  # a missing or malformed workload / trace: the case cannot be run
        return CaseResult(status="skipped", reason=f"{e.field}: {e.message}")
    try:
        plan, choices, prof = case_plan(case, wl)
        for rx, what in _NOT_MODELLED:
            if rx.search(case.source) and not (plan.ep > 1 and what in _DP_EP_NOTES):
                choices.append(f"not modelled: {what} (named in the source); predicted without it")
        mc = _MAX_CONCURRENCY.search(case.source)
        if mc:
            choices.append(f"closed-loop client: at most {mc.group(1)} requests out at once "
                           "(--max-concurrency in the source)")
        res = simulate(case.model, case.cluster, plan, wl, seed=0, max_concurrency=int(mc.group(1)) if mc else None)
        memory, _, what = _memory_predictions(case, plan)
    except InputError as e:
        return CaseResult(status="infeasible", reason=f"{e.field}: {e.message}")
    verdict = oom_verdict(case, fits=res.feasible, what=f"{res.reason}: {res.message}" if not res.feasible else what)
    if verdict is not None:
        return CaseResult(status=verdict[0], predicted=memory, choices=choices, reason=verdict[1])
    if not res.feasible:
        # the plan cannot hold a single request (e.g. the weights alone exceed the GPU): a result,
        # reported as infeasible with the memory breakdown, not an empty "ok"
        return CaseResult(status="infeasible", choices=choices, reason=f"{res.reason}: {res.message}")
    s = res.summary
    # every rate and every latency statistic the summary has (mean, p50 = median, p90, p99)
    pred: dict[str, float] = {k: s[k] for k in ("output_tokens_per_s", "requests_per_s", "input_tokens_per_s",
                                                "total_tokens_per_s")}
    for name in ("ttft", "tpot", "itl", "e2e", "queueing"):
        for stat in ("mean", "p50", "p90", "p99"):
            pred[f"{name}_{stat}_s"] = s[f"{name}_{stat}_s"]
        pred[f"{name}_median_s"] = s[f"{name}_p50_s"]
    # p95 (genai-perf and trtllm-bench print it) from the per-request columns
    for name in ("ttft", "tpot", "e2e", "queueing"):
        col = res.requests[f"{name}_s"]
        col = col[np.isfinite(col)]
        if col.size:
            pred[f"{name}_p95_s"] = float(np.percentile(col, 95))
    # per-GPU rates, as InferenceMAX-style dashboards and NVIDIA's older tables state them
    for k in ("output_tokens_per_s", "input_tokens_per_s", "total_tokens_per_s", "requests_per_s"):
        if s[k] is not None:
            pred[f"{k[:-len('_per_s')]}_per_s_per_gpu"] = s[k] / s["gpus"]
    if any(k.startswith("tpot_") for k in case.measured):
        if _tpot_basis(case.source, prof) == "token":
            for stat in ("mean", "p50", "p90", "p99", "median"):
                pred[f"tpot_{stat}_s"] = pred[f"itl_{stat}_s"]
            pred.pop("tpot_p95_s", None)  # the per-token distribution has no p95 here
            choices.append("TPOT predicted per output token (every inter-token gap), as vLLM's /metrics histogram "
                           "measures it")
        else:
            choices.append("TPOT predicted per request ((E2E - TTFT) / (output - 1) of each request), as benchmark "
                           "clients report it")
    if s["completed"] < s["requests"]:
        choices.append(f"{s['requests'] - s['completed']} requests could not fit in the KV cache and were dropped")
    pred = {k: float(v) for k, v in pred.items() if v is not None and np.isfinite(v)}
    return CaseResult(status="ok", predicted={**pred, **memory}, choices=choices)
