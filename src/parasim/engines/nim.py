"""NVIDIA NIM for LLMs 1.x: what its optimized (TensorRT-LLM) profiles run when the source does not say.

A NIM 1.x container picks a profile at start-up; NIM's documentation ("Optimization", "Configure
Your NIM", 1.x) says the optimized profiles are prebuilt TensorRT-LLM engines and are preferred over
the vLLM (non-optimized) profiles whenever one fits the GPUs, so a run on a supported GPU with an
FP8/BF16 TP profile is a TensorRT-LLM engine run by the C++ executor. From 2.0 NIM ships vLLM as its
only backend (NIM 2.0.1 release notes), so this profile covers 1.x (and an unnamed release) only, and
leaves to the vLLM / SGLang profiles a software text that names those engines.

What the executor does with no setting given (tensorrt_llm/executor/executor.h, NVIDIA/TensorRT-LLM):

* **Capacity policy.** `SchedulerConfig`'s default is GUARANTEED_NO_EVICT: a request is admitted only
  when KV blocks for its prompt and its whole output are free (`kv_reservation` full), so under load
  the server runs as many requests as the KV pool holds and queues the rest.
* **In-flight batching without context chunking.** `ExecutorConfig(enableChunkedContext = false)`:
  a prompt's context phase runs whole in one iteration beside every running request's generation
  step, up to max_num_tokens per iteration (parasim's `continuous` scheduler).
* **KV pool.** `KvCacheConfig::kDefaultGpuMemFraction` = 0.9 of the memory left once the engine,
  its activations and the runtime's buffers are in place; 64 tokens per block.
* **Engine sizes.** NIM does not publish the max_batch_size / max_num_tokens its prebuilt engines
  were built with, so trtllm-build's defaults (2048 / 8192, `TRTLLM_MAX_BATCH`, `TRTLLM_MAX_NUM_TOKENS`)
  are taken, with the C++ runtime's buffers for that batch (engines.trtllm.runtime_buffer_bytes).
"""

from __future__ import annotations

import re

from parasim.engines.host import ITERATION_OVERHEAD_S
from parasim.engines.profile import ENGINES, EngineContext, EngineProfile
from parasim.engines.software import release
from parasim.engines.trtllm import (TRTLLM_BLOCK, TRTLLM_MAX_BATCH, TRTLLM_MAX_NUM_TOKENS, TrtllmSetup,
                                    kv_fraction_utilization, runtime_buffer_bytes)
from parasim.units import fmt_gib

#: KvCacheConfig::kDefaultGpuMemFraction (tensorrt_llm/executor/executor.h)
EXECUTOR_KV_FRACTION = 0.9
#: the NIM releases with TensorRT-LLM profiles (2.0 ships vLLM only: NIM 2.0.1 release notes)
NIM_TRTLLM_RELEASES = ((1, 0), (1, 15))

_NIM = re.compile(r"\bnim\b", re.IGNORECASE)
#: a NIM text that names another backend (a vLLM / SGLang profile): that engine's profile applies
_OTHER_BACKEND = re.compile(r"vllm|sglang", re.IGNORECASE)


@ENGINES.register
class NimProfile(EngineProfile):
    """NIM 1.x on an optimized profile: the TensorRT-LLM C++ executor's defaults (module docstring)."""

    name = "nim"
    pattern = _NIM
    releases = NIM_TRTLLM_RELEASES

    @classmethod
    def matches(cls, software: str) -> bool:
        if not _NIM.search(software) or _OTHER_BACKEND.search(software):
            return False
        rel = release(software)
        lo, hi = NIM_TRTLLM_RELEASES
        return rel is None or lo <= rel <= hi

    def apply(self, ctx: EngineContext) -> None:
        kw = ctx.kw
        setup = TrtllmSetup(TRTLLM_MAX_NUM_TOKENS, TRTLLM_MAX_BATCH, EXECUTOR_KV_FRACTION, chunked=False,
                            flow="NIM 1.x optimized profile: a TensorRT-LLM engine")
        kw.update(scheduler=ctx.scheduler("continuous"), token_budget=setup.max_num_tokens, kv_reservation="full",
                  block_size=TRTLLM_BLOCK, iteration_overhead_s=ITERATION_OVERHEAD_S["tensorrt-llm"],
                  max_batch=ctx.stated.get("max_batch") or setup.max_batch, schedule_ahead=False)
        kw["gpu_memory_utilization"] = kv_fraction_utilization(ctx, setup)
        ctx.choose(f"{setup.flow} run by the C++ executor with its defaults: in-flight batching, whole prompts (no "
                   f"context chunking), KV reserved for prompt+output (GUARANTEED_NO_EVICT), tokens_per_block "
                   f"{TRTLLM_BLOCK}, KV = {EXECUTOR_KV_FRACTION:.0%} of free memory after "
                   f"{fmt_gib(runtime_buffer_bytes(ctx.model, kw['max_batch']))} of runtime and decoder buffers; "
                   f"max_batch_size {kw['max_batch']}, max_num_tokens {setup.max_num_tokens} (trtllm-build defaults: "
                   "NIM does not publish its engines' build settings)", "max_batch", kw["max_batch"])
