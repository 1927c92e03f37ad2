"""Serving validation cases: `predict_case(case) -> CaseResult`.

A case names the software that was measured; null plan fields get what that software would
most plausibly have used, and every such choice is reported in `CaseResult.choices`.

* TensorRT-LLM, by the release named in `software` (see `trtllm_setup`):
  - v0.11 (gptManagerBenchmark, the v0.11 perf-overview methodology): in-flight batching with
    chunked context (`sarathi` with budget = max_num_tokens), the per-network max_num_tokens /
    max_batch_size of that page's engine-build table, kv_cache_free_gpu_mem_fraction 0.99.
  - v0.12 - v0.14 (trtllm-bench on TensorRT engines): the sizes trtllm-bench looked up in its
    shipped per-model file (`TRTLLM_BENCH_LOOKUP`), KV fraction 0.90 (the tool's default).
  - v0.15 - v0.18 (trtllm-bench on TensorRT engines) and v0.19+ / "pytorch" / no version
    (trtllm-bench on the PyTorch backend): max_batch_size and max_num_tokens from trtllm-bench's
    published sizing rule (`trtllm_bench_settings`), KV fraction 0.95 (the perf-overview says
    most runs raised it from the 0.90 default to 0.95). The PyTorch flow does not chunk prompts
    unless asked (`continuous`, budget at least ISL + max_batch_size, as trtllm-bench forces);
    the engine flow keeps chunked context.
  - Always: KV reserved for prompt + output at admission (GUARANTEED_NO_EVICT, the default
    capacity policy), tokens_per_block 64. The engine flows (up to 0.18) also take the C++
    runtime's runtime and decoder buffers (`runtime_buffer_bytes`) off the free memory first.
* vLLM, by release (see `parasim.engines.vllm`): the V0 engine (< 0.8; prefill first,
  no chunking, 256 sequences, eager prefill, async output from 0.6) or the V1 engine (>= 0.8 or
  unnamed; chunked prefill, budget and max_num_seqs by GPU size and offline/server use);
  gpu_memory_utilization 0.9 unless the source states another value. vLLM's TPOT histogram is
  the per-output-token mean (every inter-token gap), so `tpot_mean_s` is predicted as the mean
  inter-token latency.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np

from parasim.cost.dtypes import dtype_bytes
from parasim.cost.memory import (RUNTIME_RESERVED_BYTES, activation_workspace_bytes, kv_cache_bytes_per_token_per_gpu,
                                  weight_bytes_per_gpu)
from parasim.errors import InputError
from parasim.engines.lmdeploy import lmdeploy_setup
from parasim.engines.host import ITERATION_OVERHEAD_S
from parasim.serving.plan import ServingPlan
from parasim.engines.sglang import SGLANG_PAGE, sglang_setup
from parasim.serving.simulate import simulate
from parasim.engines.software import SourceFlags, software_profile
from parasim.engines.tgi import tgi_setup
from parasim.engines.trtllm import TRTLLM_BLOCK, runtime_buffer_bytes, trtllm_setup
from parasim.engines.vllm import (
    V0_MIN_BATCHED_TOKENS,
    VLLM_BLOCK,
    VLLM_GPU_MEMORY_UTILIZATION,
    vllm_setup,
)
from parasim.serving.workload import Workload, generate, read_trace
from parasim.specs.validation_case import Case, CaseResult
from parasim.units import fmt_gib


def _workload(case: Case, choices: list[str]) -> Workload:
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


def case_plan(case: Case, wl: Workload | None = None) -> tuple[ServingPlan, list[str], str]:
    p = case.plan
    prof = software_profile(case.software)
    choices: list[str] = []
    weights = p.get("weights") or "bf16"
    if not p.get("weights"):
        choices.append("weights: bf16 (not published)")
    kw: dict[str, Any] = {"tp": int(p.get("tp") or 1), "pp": int(p.get("pp") or 1),
                          "replicas": int(p.get("replicas") or 1), "weights": weights,
                          "kv_dtype": p.get("kv_cache")}
    if weights == "fp8" and not kw["kv_dtype"] and prof not in ("vllm", "sglang"):
        # the case format's rule (ServingPlan's default before it became the model's dtype): an
        # unstated cache is fp8 with fp8 weights, as TensorRT-LLM's FP8 configs quantize it too
        kw["kv_dtype"] = "fp8"
        choices.append("kv_cache: fp8 (not published; fp8 weights, as TensorRT-LLM's FP8 configs quantize the cache)")
    model, acc = case.model, case.cluster.accelerator
    text = case.source + " " + case.software  # where a source states engine flags
    stated_batch = int(p["max_batch"]) if p.get("max_batch") else None
    server_tp = kw["tp"]  # the engine's own --tp, which some defaults follow
    _dp_attention(case, prof, text, kw, choices)
    if prof == "tensorrt-llm":
        wl = wl if wl is not None else _workload(case, choices)
        kv_dtype = ServingPlan(weights=weights, kv_dtype=kw["kv_dtype"]).kv
        setup = trtllm_setup(case.software, model, acc, tp=server_tp, pp=kw["pp"],
                             isl=float(wl.prompt_tokens.mean()), max_isl=int(wl.prompt_tokens.max()),
                             osl=float(wl.output_tokens.mean()), weights=weights, kv_dtype=kv_dtype,
                             max_seq=int((wl.prompt_tokens + wl.output_tokens).max()))
        stated = _TRTLLM_FLAGS.stated(text)
        if stated:
            # trtllm-bench flags a source states win over the release's sizing (--max_batch_size is per rank)
            setup = replace(setup, max_batch=int(stated.get("max_batch_size") or setup.max_batch),
                            max_num_tokens=int(stated.get("max_num_tokens") or setup.max_num_tokens),
                            kv_fraction=float(stated.get("kv_cache_free_gpu_mem_fraction") or setup.kv_fraction),
                            flow=setup.flow + " (the values the source states replace these: "
                            + ", ".join(f"{k} {v:g}" for k, v in stated.items()) + ")")
        kw.update(scheduler=_scheduler(p, "sarathi" if setup.chunked else "continuous"),
                  token_budget=setup.max_num_tokens,
                  kv_reservation=setup.kv_reservation, block_size=TRTLLM_BLOCK,
                  iteration_overhead_s=ITERATION_OVERHEAD_S["tensorrt-llm"], max_batch=stated_batch or setup.max_batch)
        # kv_cache_free_gpu_mem_fraction applies to what is left after weights, activations and (C++
        # runtime) the runtime and decoder buffers, which hold the logits the activation estimate counts
        w = weight_bytes_per_gpu(model, tp=kw["tp"], pp=kw["pp"], weights=weights, ep=kw.get("ep", 1))
        act_kw = dict(tp=kw["tp"], tokens=setup.max_num_tokens, act_bytes=2.0)
        rb = runtime_buffer_bytes(model, kw["max_batch"]) if setup.cpp_runtime else 0.0
        logit_rows = 0 if setup.cpp_runtime else kw["max_batch"]  # the C++ runtime's buffers hold the logits
        used = w + activation_workspace_bytes(model, logit_rows=logit_rows, **act_kw) + RUNTIME_RESERVED_BYTES + rb
        buffers = f", after {fmt_gib(rb)} of runtime and decoder buffers" if setup.cpp_runtime else ""
        kv = setup.kv_fraction * max(acc.hbm_bytes - used, 0.0)
        kw["gpu_memory_utilization"] = _utilization_leaving(kv, model, acc, kw)
        policy = ("KV booked per step (MAX_UTILIZATION; paused requests recompute)" if setup.kv_reservation == "incremental"
                  else "KV reserved for prompt+output (GUARANTEED_NO_EVICT)")
        choices.append(f"{setup.flow}; tokens_per_block {TRTLLM_BLOCK}, {policy}, "
                       f"KV = {setup.kv_fraction:.0%} of free memory{buffers}")
    elif prof == "vllm":
        m = _GPU_UTIL.search(text)
        util = float(m.group(1)) if m else VLLM_GPU_MEMORY_UTILIZATION
        setup = vllm_setup(case.software, case.source, acc, tp=kw["tp"], weights=weights)
        kw.update(scheduler=_scheduler(p, setup.scheduler), block_size=VLLM_BLOCK,
                  gpu_memory_utilization=util, iteration_overhead_s=ITERATION_OVERHEAD_S["vllm"],
                  eager_prefill_layer_s=setup.eager_prefill_layer_s, output_delay_s=setup.output_delay_s,
                  token_budget=setup.token_budget, act_quant=setup.act_quant, custom_allreduce=setup.custom_allreduce,
                  max_batch=stated_batch or setup.max_num_seqs)
        choices.append(f"{setup.why}; block {VLLM_BLOCK}, gpu_memory_utilization {util}"
                       + ("" if m else " (default; not in the source)"))
        if setup.engine == "v0" and not setup.chunked:
            wl = wl if wl is not None else _workload(case, choices)
            max_len, why = _max_model_len(case, wl)
            kw["token_budget"] = max(V0_MIN_BATCHED_TOKENS, max_len)
            choices.append(f"max_model_len {max_len} ({why}), so max_num_batched_tokens {kw['token_budget']}")
        # engine limits the source states win over the release's defaults
        if mt := _MAX_BATCHED.search(text):
            kw["token_budget"] = int(mt.group(1))
            choices.append(f"max_num_batched_tokens {kw['token_budget']} (from the source)")
        if not p.get("max_batch") and (ms := _MAX_SEQS.search(text)):
            kw["max_batch"] = int(ms.group(1))
            choices.append(f"max_num_seqs {kw['max_batch']} (from the source)")
        if not p.get("kv_cache"):
            kw["kv_dtype"] = _auto_kv_dtype(text, weights, "vLLM", choices)
    elif prof == "sglang":
        if not p.get("kv_cache"):
            kw["kv_dtype"] = _auto_kv_dtype(text, weights, "SGLang", choices)
        kv_dtype = ServingPlan(weights=weights, kv_dtype=kw["kv_dtype"]).kv
        setup = sglang_setup(case.software, case.source, model, acc, tp=server_tp, pp=kw["pp"], weights=weights,
                             kv_dtype=kv_dtype, ep=kw.get("ep", 1))
        kw.update(scheduler=_scheduler(p, "sglang"), block_size=SGLANG_PAGE,
                  token_budget=setup.chunked_prefill_size, kv_reservation="incremental",
                  iteration_overhead_s=setup.iteration_overhead_s, max_batch=stated_batch or setup.max_running_requests)
        kw["gpu_memory_utilization"] = _utilization_leaving(setup.kv_bytes, model, acc, kw)
        choices.append(setup.why)
    elif prof == "tgi":
        mb = stated_batch
        setup = tgi_setup(case.software, model, acc, tp=kw["tp"], pp=kw["pp"], weights=weights, max_batch=mb)
        if mb is None:
            # no max_batch_size by default: bound the batch by what the KV pool can book (prompt + output
            # of the smallest request), which no run can exceed
            wl = wl if wl is not None else _workload(case, choices)
            per_token = kv_cache_bytes_per_token_per_gpu(model, tp=kw["tp"], pp=kw["pp"], kv_bytes=dtype_bytes(
                ServingPlan(weights=weights, kv_dtype=kw["kv_dtype"]).kv))
            smallest = int((wl.prompt_tokens + wl.output_tokens).min()) if len(wl.prompt_tokens) else 1
            mb = max(1, int(setup.kv_bytes // per_token) // max(smallest, 1))
        kw.update(scheduler=_scheduler(p, setup.scheduler), token_budget=setup.prefill_tokens,
                  block_size=setup.block_size, kv_reservation="full", iteration_overhead_s=setup.iteration_overhead_s,
                  eager_prefill_layer_s=setup.eager_prefill_layer_s, cuda_graph_max_batch=setup.cuda_graph_max_batch,
                  max_batch=mb)
        kw["gpu_memory_utilization"] = _utilization_leaving(setup.kv_bytes, model, acc, kw)
        choices.append(setup.why)
    elif prof == "lmdeploy":
        setup = lmdeploy_setup(case.software, case.source, model, acc, tp=kw["tp"], pp=kw["pp"], weights=weights)
        if not p.get("kv_cache") and setup.kv_dtype:
            kw["kv_dtype"] = setup.kv_dtype
        kw.update(scheduler=_scheduler(p, setup.scheduler), token_budget=setup.token_budget,
                  block_size=setup.block_size, kv_reservation="incremental",
                  iteration_overhead_s=setup.iteration_overhead_s, max_batch=stated_batch or setup.max_batch)
        kw["gpu_memory_utilization"] = _utilization_leaving(setup.kv_bytes, model, acc, kw)
        choices.append(setup.why)
    else:
        # DeepSpeed-FastGen (DeepSpeed-MII) batches by Dynamic SplitFuse; other engines get the
        # stall-free chunked rule most current engines default to
        fastgen = bool(_FASTGEN.search(case.software))
        kw.update(scheduler=_scheduler(p, "splitfuse" if fastgen else "sarathi"), max_batch=p.get("max_batch"))
        choices.append(f"DeepSpeed-FastGen: Dynamic SplitFuse ({kw['scheduler']}), parasim defaults otherwise"
                       if fastgen else
                       f"unknown software '{case.software}': scheduler {kw['scheduler']}, parasim defaults")
    if not p.get("kv_cache") and not kw.get("kv_dtype") and prof not in ("vllm", "sglang"):
        choices.append("kv_cache: same precision as the weights' activations")
    return ServingPlan(**{k: v for k, v in kw.items() if v is not None}), choices, prof


def _scheduler(plan: dict[str, Any], engine_rule: str) -> str:
    """The scheduler a case runs: its engine's own rule, unless the case states one other than the
    format's default `continuous` (e.g. the static batching of the pre-0.10 TensorRT-LLM pages)."""
    stated = plan.get("scheduler")
    return engine_rule if not stated or stated == "continuous" else stated


def _dp_attention(case: Case, prof: str, text: str, kw: dict[str, Any], choices: list[str]) -> None:
    """Data-parallel attention with the experts spread over the DP ranks, as a source states it:
    SGLang `--enable-dp-attention --dp N` (under `--tp` = N: one GPU of attention per rank),
    vLLM `--data-parallel-size N --enable-expert-parallel` (TP 1) or TensorRT-LLM
    `enable_attention_dp: true` (the `--tp` ranks each attend for their own requests; the doc:
    "All GEMM weights are replicated ... The KV-cache is partitioned"). Each rank becomes a
    replica of one GPU with its own batch and KV cache, and the routed experts are spread over the
    N ranks (`ServingPlan.ep`). Other layouts are left as TP (and said as not modelled)."""
    if not case.model.is_moe:
        return
    if prof == "sglang" and _DP_ATTN.search(text) and (m := _DP_SIZE.search(text)):
        dp, tp_total = int(m.group(1)), kw["tp"]
    elif prof == "vllm" and _VLLM_EP.search(text) and (m := _VLLM_DP.search(text)):
        dp, tp_total = int(m.group(1)), kw["tp"] * int(m.group(1))
    elif prof == "tensorrt-llm" and _TRTLLM_ADP.search(text):
        dp, tp_total = kw["tp"], kw["tp"]
    else:
        return
    if dp < 2 or tp_total != dp or kw["pp"] != 1 or case.model.experts % dp:
        return
    kw.update(tp=1, replicas=kw["replicas"] * dp, ep=dp)
    choices.append(f"data-parallel attention over {dp} ranks (one GPU each, own batch and KV cache), routed experts "
                   f"spread over the {dp} ranks (ep={dp}); the ranks are taken as equally loaded")


def _utilization_leaving(kv_bytes: float, model, acc, kw: dict[str, Any]) -> float:
    """The gpu_memory_utilization under which the simulator's memory split (weights, activations of
    a `token_budget` forward with `max_batch` logit rows, runtime reserve) leaves `kv_bytes` of KV
    per GPU: how an engine that sizes its KV pool its own way is handed to the simulator."""
    w = weight_bytes_per_gpu(model, tp=kw["tp"], pp=kw["pp"], weights=kw["weights"], ep=kw.get("ep", 1))
    act = activation_workspace_bytes(model, tp=kw["tp"], tokens=kw["token_budget"], logit_rows=kw["max_batch"],
                                     act_bytes=2.0)
    return min(1.0, (kv_bytes + w + act + RUNTIME_RESERVED_BYTES) / acc.hbm_bytes)


def _auto_kv_dtype(text: str, weights: str, engine: str, choices: list[str]) -> str:
    """--kv-cache-dtype auto (vLLM's and SGLang's default) stores the cache in the model's dtype,
    whatever the weights' quantization; an FP8 cache has to be asked for."""
    fp8 = bool(_FP8_KV.search(text))
    dtype = "fp8" if fp8 else ServingPlan(weights=weights).act_dtype
    choices.append(f"kv_cache {dtype} (" + ("--kv-cache-dtype fp8 in the source)" if fp8 else
                                            f"{engine}'s --kv-cache-dtype auto: the model's dtype; not in the source)"))
    return dtype


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
_DP_ATTN = re.compile(r"enable[-_]dp[-_]attention", re.IGNORECASE)
_DP_SIZE = re.compile(r"--dp(?:[-_]size)?\s*[=:]?\s*(\d+)", re.IGNORECASE)
_VLLM_EP = re.compile(r"enable[-_]expert[-_]parallel", re.IGNORECASE)
_VLLM_DP = re.compile(r"(?:--data[-_]parallel[-_]size|-dp)\s*[=:]?\s*(\d+)", re.IGNORECASE)
_TRTLLM_ADP = re.compile(r"enable[-_]attention[-_]dp(?:\s*[:=]\s*true|\b(?!\s*[:=]\s*false))", re.IGNORECASE)
_TRTLLM_FLAGS = SourceFlags(max_batch_size=r"max[-_]batch[-_]size", max_num_tokens=r"max[-_]num[-_]tokens",
                            kv_cache_free_gpu_mem_fraction=r"kv[-_]cache[-_]free[-_]gpu[-_]mem[-_]fraction")
_FASTGEN = re.compile(r"fastgen|deepspeed|\bmii\b", re.IGNORECASE)
_GPU_UTIL = re.compile(r"gpu[-_]memory[-_]utilization\s*[=:]?\s*([0-9.]+)")
_MAX_MODEL_LEN = re.compile(r"max[-_]model[-_]len\s*[=:]?\s*(\d+)", re.IGNORECASE)
_MAX_BATCHED = re.compile(r"max[-_]num[-_]batched[-_]tokens\s*[=:]?\s*(\d+)", re.IGNORECASE)
_MAX_SEQS = re.compile(r"max[-_]num[-_]seqs\s*[=:]?\s*(\d+)", re.IGNORECASE)
_FP8_KV = re.compile(r"kv[-_]cache[-_]dtype\s*[=:]?\s*fp8", re.IGNORECASE)


def _max_model_len(case: Case, wl: Workload) -> tuple[int, str]:
    """vLLM's max_model_len for a case: the source's --max-model-len, else the model's context
    length, raised to the longest request the run served (a longer one would have been refused)."""
    m = _MAX_MODEL_LEN.search(case.source + " " + case.software)
    if m:
        return int(m.group(1)), "--max-model-len in the source"
    longest = int((wl.prompt_tokens + wl.output_tokens).max()) if len(wl) else 0
    if longest > case.model.max_seq_len:
        return longest, "not in the source; at least the longest request served"
    return case.model.max_seq_len, "not in the source; the model's context length"


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
    return "token" if prof == "vllm" else "request"


def predict_case(case: Case) -> CaseResult:
    if case.kind != "serving":
        return CaseResult(status="skipped", reason="not a serving case")
    try:
        wl = _workload(case, [])
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
    except InputError as e:
        return CaseResult(status="infeasible", reason=f"{e.field}: {e.message}")
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
    return CaseResult(status="ok", predicted=pred, choices=choices)
