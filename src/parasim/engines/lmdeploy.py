"""What an LMDeploy deployment runs with when the source does not say, by release. Read from the
released wheels' `lmdeploy/messages.py` (TurbomindEngineConfig, PytorchEngineConfig),
`lmdeploy/utils.py` (get_max_batch_size) and TurboMind's LlamaBatch / SequenceManager sources
(InternLM/lmdeploy, 0.2.0 - 0.7.0):

* **Engine.** TurboMind (C++) unless the source names the PyTorch backend.
* **KV memory** (`cache_max_entry_count`): 0.2.0 - 0.2.1 took 0.5 of the *total* GPU memory;
  from 0.2.2, 0.8 of the memory *free* after the weights load (activations and workspaces live
  in the rest). Blocks (`cache_block_seq_len`) of 128 tokens up to 0.2.x, 64 from 0.3.
  A stated value of 1 or more is a *block count*, not a share: TurboMind's `BlockManager`
  takes `block_count < 1.` as a fraction of memory and anything else as the number of blocks
  (src/turbomind/models/llama/BlockManager.cc, the same test at v0.1.0a1, v0.2.0, v0.2.6,
  v0.4.0, v0.6.0 and v0.7.0). The value is read as a server flag (`--cache-max-entry-count N`)
  or as the `config.ini` / Python keyword form `cache_max_entry_count=N` that LMDeploy's
  benchmark scripts write (benchmark/benchmark.sh at 9e4205613).
* **Batch** (`max_batch_size`): 128 up to 0.5; from 0.6 by device, A100/A800 256, H100/H800 512,
  other GPUs 128.
* **Batching.** TurboMind runs decoding and prefilling sequences in one forward. From 0.2.6 a
  prompt is split into chunks (`max_prefill_token_num` 8192 per forward, on top of the decodes:
  the forward holds at most max_prefill_token_num + max_batch_size tokens): parasim's `sarathi`
  rule with that budget. Before 0.2.6 whole prompts join the running batch (`continuous`).
* **Prefill step of the first TurboMind (before 0.1.0a2).** Up to v0.1.0a1 each engine loop
  takes every queued request a free slot allows (`request_queue.dequeue(..., free_slot_count, ...)`),
  prefills *all* newly admitted prompts (`ContextDecode`, in sub-batches of `max_context_token_num`
  tokens run one after the other inside the loop pass) and then runs one decode step for the whole
  batch, so a burst's first tokens all come out at the end of the same pass
  (src/turbomind/models/llama/LlamaBatch.cc `InternalThreadEntry` / `ContextDecode` at v0.1.0a1,
  9c46b27). PR #775 "Unify prefill & decode passes" (7f943a26, 2023-12-04, first in v0.1.0a2) put a
  per-step token cap in the sequence manager (`Materialize` stops admitting once the step's
  `input_count1` = `max_context_token_num`, default `session_len`, is spent; the last prompt is cut to
  fit), which the `continuous` rule's session-length budget stands for. parasim: `continuous` with a
  budget of max_batch_size x session length (every slot's prompt, each at most the session length).
  The context decoder of those releases takes each prompt less its last token ("will process with
  decoder later", `ContextDecode`), and the decode step that follows runs that token with the batch
  and samples the first token: two forwards in series (`context_pass` separate, serving.context_pass).
* **Admission.** KV blocks are taken as sequences grow, not booked for the whole output; when
  they run out the lowest-priority (newest) sequences are preempted and recompute later:
  `kv_reservation="incremental"` with recompute preemption.
* **KV precision** `quant_policy` 0 (the model's dtype); a source stating `--quant-policy 8` / `4`
  gets an int8 / int4 KV cache.
* **PyTorch backend:** 64-token blocks, 0.8 of free memory (from 0.2.6), `max_prefill_token_num`
  4096, recompute eviction, prefill iterations apart from decode (`vllm` rule).
* **TP all-reduce.** Up to 0.7.1 TurboMind's layers all-reduce through NCCL: the attention and FFN
  layers call `ftNcclAllReduceSum` (src/turbomind/models/llama/LlamaContextAttentionLayer.cc,
  LlamaDecoderSelfAttentionLayer.cc and LlamaFfnLayer.cc at v0.1.0a1; unified_attention_layer.cc
  and LlamaFfnLayer.cc up to v0.7.1), and the FasterTransformer custom all-reduce the tree still
  carries (`custom_ar_comm.cc`) is off by default (`enable_custom_all_reduce` 0 in the model
  config) and not called by the llama layers. v0.7.2 (2025-03) brought its own communicators
  (`src/turbomind/comm`: `native` beside `nccl`). So `custom_allreduce` is off before 0.7.2
  (every TP all-reduce is NCCL's, parasim's `collective_time_s`), on from 0.7.2 and for an
  unnamed release; the PyTorch backend keeps parasim's default.
* **Host.** TurboMind's batch loop is C++: its per-iteration host time is taken as TensorRT-LLM's
  (`ITERATION_OVERHEAD_S["lmdeploy"]`); the PyTorch backend's as vLLM's. Both are assumptions, not
  published LMDeploy figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from parasim.cost.memory import RUNTIME_RESERVED_BYTES, kv_cache_bytes_per_token_per_gpu, weight_bytes_per_gpu
from parasim.engines.host import ITERATION_OVERHEAD_S
from parasim.engines.profile import ENGINES, EngineContext, EngineProfile
from parasim.engines.software import SourceFlags, release, release_patch
from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.model import ModelSpec
from parasim.units import fmt_gib

LMDEPLOY_PREFILL_TOKENS = {"turbomind": 8192, "pytorch": 4096}
#: from 0.6: max_batch_size by device name (lmdeploy/utils.py get_max_batch_size)
_BATCH_BY_DEVICE = (("a100", 256), ("a800", 256), ("h100", 512), ("h800", 512))
_PYTORCH = re.compile(r"--backend[\s=]+pytorch|pytorch\s+(?:engine|backend)|PytorchEngineConfig", re.IGNORECASE)
_QUANT_POLICY = re.compile(r"--quant[-_]policy[\s=]+([48])\b|quant_policy\s*=\s*([48])\b", re.IGNORECASE)
#: TurboMind releases before PR #775 (first tagged v0.1.0a2): 0.0.x and 0.1.0a0 / 0.1.0a1
_PRE_UNIFIED = re.compile(r"\b0\.0\.\d+|\b0\.1\.0a[01]\b", re.IGNORECASE)
_FLAGS = SourceFlags(cache_max_entry_count=r"cache[-_]max[-_]entry[-_]count", max_batch_size=r"max[-_]batch[-_]size",
                     max_prefill_token_num=r"max[-_]prefill[-_]token[-_]num")
#: the same settings written as `name=value` (TurboMind's config.ini, TurbomindEngineConfig keywords)
_INI = re.compile(r"(?<![\w-])(cache_max_entry_count|max_batch_size|max_prefill_token_num)\s*=\s*([0-9]+(?:\.[0-9]+)?)")
#: bytes per KV value by quant_policy (0: the model's 16-bit dtype)
_KV_VALUE_BYTES = {None: 2.0, "int8": 1.0, "int4": 0.5}


@dataclass(frozen=True)
class LmdeploySetup:
    engine: str  # turbomind | pytorch
    scheduler: str
    token_budget: int | None
    max_batch: int
    block_size: int
    kv_bytes: float  # per GPU
    kv_dtype: str | None  # None = the model's dtype (quant_policy 0)
    iteration_overhead_s: float
    why: str
    custom_allreduce: bool = True  # False: every TP all-reduce through NCCL (TurboMind before 0.7.2)
    context_pass: str = "joint"  # separate: prompts (less their last token) in a forward of their own (before #775)


#: the first release whose TurboMind has its own (non-NCCL) all-reduce: v0.7.2's src/turbomind/comm
TURBOMIND_OWN_ALLREDUCE = (0, 7, 2)


def lmdeploy_setup(software: str, source: str, model: ModelSpec, acc: AcceleratorSpec, *, tp: int, pp: int,
                   weights: str) -> LmdeploySetup:
    rel = release(software)
    text = source + " " + software
    engine = "pytorch" if _PYTORCH.search(text) else "turbomind"
    stated = {m.group(1): float(m.group(2)) for m in _INI.finditer(text)} | _FLAGS.stated(text)
    patch = release_patch(software)
    # releases before 0.2.2 (0.1.x read as 0.2.0, the oldest wheel read) and before 0.2.6
    before_022 = rel is not None and (rel < (0, 2) or (rel == (0, 2) and patch < 2))
    before_026 = rel is not None and (rel < (0, 2) or (rel == (0, 2) and patch < 6))
    if rel is not None and rel < (0, 6):
        batch = 128
    else:
        batch = next((b for name, b in _BATCH_BY_DEVICE if acc.id.startswith(name)), 128)
    batch = int(stated.get("max_batch_size") or batch)
    w = weight_bytes_per_gpu(model, tp=tp, pp=pp, weights=weights)
    frac = stated.get("cache_max_entry_count")
    block = 128 if rel is not None and rel < (0, 3) and engine == "turbomind" else 64
    qp = _QUANT_POLICY.search(text)
    kv_dtype = {"8": "int8", "4": "int4"}[qp.group(1) or qp.group(2)] if qp else None
    if frac is not None and frac >= 1 and engine == "turbomind":  # BlockManager: >= 1 is a block count
        blocks = int(frac)
        kv = blocks * block * kv_cache_bytes_per_token_per_gpu(model, tp=tp, pp=pp, kv_bytes=_KV_VALUE_BYTES[kv_dtype])
        mem = f"cache_max_entry_count {blocks} = a count of {blocks} {block}-token blocks ({blocks * block:,} tokens)"
    elif before_022:
        frac = frac or 0.5
        kv = frac * acc.device_memory_bytes
        mem = f"cache_max_entry_count {frac:g} of the total memory"
    else:
        frac = frac or 0.8
        kv = frac * max(acc.device_memory_bytes - RUNTIME_RESERVED_BYTES - w, 0.0)
        mem = f"cache_max_entry_count {frac:g} of the memory free after the weights"
    chunked = not before_026
    whole_step = engine == "turbomind" and bool(_PRE_UNIFIED.search(software))
    prefill = int(stated.get("max_prefill_token_num") or LMDEPLOY_PREFILL_TOKENS[engine])
    if engine == "pytorch":
        sched, budget = "vllm", prefill
    elif chunked:
        sched, budget = "sarathi", prefill + batch
    elif whole_step:  # every admitted prompt prefilled in the loop pass (ContextDecode, before #775)
        sched, budget = "continuous", batch * max(model.max_seq_len, 2048)
    else:
        sched, budget = "continuous", max(model.max_seq_len, 2048)  # whole prompts up to the session length
    overhead = ITERATION_OVERHEAD_S["lmdeploy" if engine == "turbomind" else "vllm"]
    ver = f"{rel[0]}.{rel[1]}" if rel else "(release not named: the current defaults)"
    batching = {"sarathi": f"prefill chunks mixed with decodes, max_prefill_token_num {prefill} on top of the "
                           f"decodes (forward budget {budget})",
                "continuous": ("every admitted prompt prefilled in the same engine step as the decodes (ContextDecode, "
                               f"before 0.1.0a2: step budget max_batch_size x session length = {budget})"
                               if whole_step else "whole prompts join the running batch (no chunking before 0.2.6)"),
                "vllm": f"prefill iterations apart from decodes, max_prefill_token_num {prefill}"}[sched]
    why = (f"LMDeploy {ver} {engine} defaults: {batching}, max_batch_size {batch}, {mem} "
           f"({fmt_gib(kv)} per GPU), {block}-token blocks, KV taken as sequences grow (preempted sequences "
           f"recompute)" + (f", KV cache {kv_dtype} (quant_policy in the source)" if kv_dtype else "")
           + "".join(f"; {k} {v:g} (from the source)" for k, v in stated.items()))
    nccl = engine == "turbomind" and rel is not None and (*rel, patch) < TURBOMIND_OWN_ALLREDUCE
    if nccl:
        why += "; TP all-reduces through NCCL (ftNcclAllReduceSum; TurboMind's own all-reduce came in 0.7.2)"
    if whole_step:
        why += ("; the prompts run in a context forward of their own less each one's last token, which the "
                "decode forward then takes with the running batch (LlamaBatch::ContextDecode, v0.1.0a1)")
    return LmdeploySetup(engine, sched, budget, batch, block, kv, kv_dtype, overhead, why, custom_allreduce=not nccl,
                         context_pass="separate" if whole_step else "joint")


@ENGINES.register
class LmdeployProfile(EngineProfile):
    """LMDeploy: TurboMind (or the PyTorch engine, if the source names it) defaults of the named
    release (`lmdeploy_setup`)."""

    name = "lmdeploy"
    pattern = re.compile(r"lmdeploy|turbomind", re.IGNORECASE)
    releases = ((0, 1), (0, 7))  # 0.1.x: the pre-#775 prefill step (v0.1.0a0-a1), otherwise read as 0.2.0

    def apply(self, ctx: EngineContext) -> None:
        kw = ctx.kw
        setup = lmdeploy_setup(ctx.software, ctx.source, ctx.model, ctx.acc, tp=kw["tp"], pp=kw["pp"],
                               weights=kw["weights"])
        if not ctx.stated.get("kv_dtype") and setup.kv_dtype:
            kw["kv_dtype"] = setup.kv_dtype
        kw.update(scheduler=ctx.scheduler(setup.scheduler), token_budget=setup.token_budget,
                  block_size=setup.block_size, kv_reservation="incremental",
                  iteration_overhead_s=setup.iteration_overhead_s,
                  max_batch=ctx.stated.get("max_batch") or setup.max_batch)
        if not setup.custom_allreduce:
            kw["custom_allreduce"] = False
        if setup.context_pass != "joint":
            kw["context_pass"] = setup.context_pass
        kw["gpu_memory_utilization"] = ctx.utilization_leaving(setup.kv_bytes)
        ctx.choose(setup.why, "max_batch", kw["max_batch"])
