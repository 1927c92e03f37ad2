"""Serving validation cases: `predict_case(case) -> CaseResult`.

A case names the software that was measured; null plan fields get what that software would
most plausibly have used, and every such choice is reported in `CaseResult.choices`.

* TensorRT-LLM (trtllm-bench, in-flight batching with chunked context): the token-budget rule
  (`sarathi`) with the budget = max_num_tokens 8192 and max_batch_size 2048 (the trtllm-build
  defaults), KV reserved for prompt + output at admission (GUARANTEED_NO_EVICT, trtllm-bench's
  default scheduler policy), KV = 90 % of the memory left after weights and activations
  (kv_cache_free_gpu_mem_fraction 0.9), block 64 tokens (tokens_per_block default).
* vLLM 0.6.0 defaults: prefill-prioritised scheduling without chunked prefill, max_num_seqs
  256, max_num_batched_tokens = max(max_model_len, 2048), block 16, gpu_memory_utilization 0.9
  unless the source states another value; prefill runs eagerly (CUDA graphs are captured only
  for decode batches), so a prefill iteration takes at least layers x EAGER_LAYER_DISPATCH_S of
  host dispatch; its TPOT is the per-output-token mean (every
  inter-token gap), so `tpot_mean_s` is predicted as the mean inter-token latency.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from parasim.errors import InputError
from parasim.serving.kvcache import RUNTIME_RESERVED_BYTES, activation_workspace_bytes
from parasim.serving.plan import EAGER_LAYER_DISPATCH_S, ITERATION_OVERHEAD_S, ServingPlan
from parasim.serving.simulate import simulate
from parasim.serving.workload import Workload, generate, read_trace
from parasim.specs.validation_case import Case, CaseResult

TRTLLM_MAX_NUM_TOKENS = 8192
TRTLLM_MAX_BATCH = 2048
TRTLLM_KV_FREE_FRACTION = 0.99
TRTLLM_BLOCK = 64
VLLM_MAX_NUM_SEQS = 256
VLLM_GPU_MEMORY_UTILIZATION = 0.90


def software_profile(software: str) -> str:
    s = software.lower()
    if "tensorrt" in s or "trt-llm" in s or "trtllm" in s:
        return "tensorrt-llm"
    if "vllm" in s:
        return "vllm"
    return "default"


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


def case_plan(case: Case) -> tuple[ServingPlan, list[str], str]:
    p = case.plan
    prof = software_profile(case.software)
    choices: list[str] = []
    weights = p.get("weights") or "bf16"
    if not p.get("weights"):
        choices.append("weights: bf16 (not published)")
    kw: dict[str, Any] = {"tp": int(p.get("tp") or 1), "pp": int(p.get("pp") or 1),
                          "replicas": int(p.get("replicas") or 1), "weights": weights,
                          "kv_dtype": p.get("kv_cache")}
    model = case.model
    if prof == "tensorrt-llm":
        kw.update(scheduler="sarathi", token_budget=TRTLLM_MAX_NUM_TOKENS, kv_reservation="full",
                  block_size=TRTLLM_BLOCK, iteration_overhead_s=ITERATION_OVERHEAD_S["tensorrt-llm"])
        kw["max_batch"] = int(p["max_batch"]) if p.get("max_batch") else TRTLLM_MAX_BATCH
        # kv_cache_free_gpu_mem_fraction applies to what is left after weights and activations
        from parasim.cost.dtypes import dtype_bytes
        from parasim.cost.memory import weight_params_per_gpu

        acc = case.cluster.accelerator
        w = weight_params_per_gpu(model, tp=kw["tp"], pp=kw["pp"]) * dtype_bytes(weights)
        act = activation_workspace_bytes(model, tp=kw["tp"], tokens=TRTLLM_MAX_NUM_TOKENS, logit_rows=kw["max_batch"],
                                         act_bytes=2.0)
        fixed = w + act + RUNTIME_RESERVED_BYTES
        kv = TRTLLM_KV_FREE_FRACTION * max(acc.hbm_bytes - fixed, 0.0)
        kw["gpu_memory_utilization"] = min(1.0, (kv + fixed) / acc.hbm_bytes)
        choices.append(f"TensorRT-LLM in-flight batching with chunked context: token budget (max_num_tokens) "
                       f"{TRTLLM_MAX_NUM_TOKENS}, max_batch_size {kw['max_batch']}, tokens_per_block {TRTLLM_BLOCK}, "
                       f"KV reserved for prompt+output (GUARANTEED_NO_EVICT), KV = {TRTLLM_KV_FREE_FRACTION:.0%} of free memory")
    elif prof == "vllm":
        m = re.search(r"gpu[-_]memory[-_]utilization\s*[=:]?\s*([0-9.]+)", case.source + " " + case.software)
        util = float(m.group(1)) if m else VLLM_GPU_MEMORY_UTILIZATION
        kw.update(scheduler=p.get("scheduler") or "vllm", block_size=16, gpu_memory_utilization=util,
                  iteration_overhead_s=ITERATION_OVERHEAD_S["vllm"], eager_prefill_layer_s=EAGER_LAYER_DISPATCH_S,
                  max_batch=int(p["max_batch"]) if p.get("max_batch") else VLLM_MAX_NUM_SEQS)
        if kw["scheduler"] == "continuous":
            kw["scheduler"] = "vllm"
        choices.append(f"vLLM 0.6 defaults: prefill-prioritised, no chunked prefill, max_num_seqs {kw['max_batch']}, "
                       f"block 16, max_num_batched_tokens max(max_model_len={model.max_seq_len}, 2048), "
                       f"gpu_memory_utilization {util}" + ("" if m else " (default; not in the source)")
                       + f"; prefill runs eagerly (CUDA graphs only for decode): at least "
                       f"{EAGER_LAYER_DISPATCH_S * 1e3:.2f} ms of host dispatch per layer")
    else:
        kw.update(scheduler=p.get("scheduler") or "sarathi", max_batch=p.get("max_batch"))
        if kw["scheduler"] == "continuous":
            kw["scheduler"] = "sarathi"
        choices.append(f"unknown software '{case.software}': scheduler {kw['scheduler']}, parasim defaults")
    if not p.get("kv_cache"):
        choices.append("kv_cache: same precision as the weights' activations")
    return ServingPlan(**{k: v for k, v in kw.items() if v is not None}), choices, prof


def predict_case(case: Case) -> CaseResult:
    if case.kind != "serving":
        return CaseResult(status="skipped", reason="not a serving case")
    try:
        plan, choices, prof = case_plan(case)
        wl = _workload(case, choices)
        res = simulate(case.model, case.cluster, plan, wl, seed=0)
    except InputError as e:
        return CaseResult(status="infeasible", reason=f"{e.field}: {e.message}")
    s = res.summary
    pred: dict[str, float] = {
        "output_tokens_per_s": s["output_tokens_per_s"], "requests_per_s": s["requests_per_s"],
        "ttft_mean_s": s["ttft_mean_s"], "ttft_p99_s": s["ttft_p99_s"], "tpot_p99_s": s["tpot_p99_s"],
        "e2e_mean_s": s["e2e_mean_s"], "tpot_mean_s": s["tpot_mean_s"],
    }
    if prof == "vllm" or "per output token" in case.source:
        pred["tpot_mean_s"] = s["itl_mean_s"]
        choices.append("tpot_mean_s predicted per output token (mean inter-token gap), as vLLM's histogram measures it")
    if s["completed"] < s["requests"]:
        choices.append(f"{s['requests'] - s['completed']} requests could not fit in the KV cache and were dropped")
    pred = {k: float(v) for k, v in pred.items() if v is not None and np.isfinite(v)}
    return CaseResult(status="ok", predicted=pred, choices=choices)
