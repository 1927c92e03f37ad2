"""What an SGLang deployment runs with when the source does not say, by release.

Read from SGLang's `ServerArgs.__post_init__`, `ModelRunner.profile_max_num_token` and the
scheduler (sgl-project/sglang, 2024-2025 sources):

* **Memory.** `mem_fraction_static` is the share of the memory free before the weights load that
  weights and the KV pool may take; activations, CUDA graphs and the attention workspace live in
  the rest. So KV = mem_fraction_static x (HBM - what the CUDA context holds) - weights. The default:
  up to 0.3 by TP size (>= 16: 0.79, >= 8: 0.83, >= 4: 0.85, >= 2: 0.87, else 0.88; the v0.3.0
  benchmark README: "0.88 at TP 1 and 0.85 at TP 4"); 0.4 the same with 0.81 at TP >= 8; from 0.5
  (and for an unnamed release) (memory - reserve) / memory with a reserve by GPU size (below).
* **Batching.** An iteration is all prefill or all decode, prefill first; a prompt longer than
  `chunked_prefill_size` is split (parasim's `sglang` scheduler). The chunk is 8192 up to 0.3; in
  0.4 2048 on GPUs under 25,000 MiB, else 8192; from 0.5 2048 under 35 GiB, 8192 under 160 GiB,
  16384 above. KV is one token per page (`page_size` 1).
* **Running requests.** max_running_requests = min(KV tokens // 2, request slots), the slots being
  clamp(KV tokens / context length x 512, 2048, 4096).
* **Admission.** New requests need their prompt plus min(max_new_tokens, 4096) free, but running
  ones reserve only new_token_ratio (0.7 decaying to about 0.1) of what they still generate, and
  on running out the scheduler retracts the youngest requests, which recompute later. parasim
  runs this rule as `kv_reservation` `estimated` (serving.output_estimate): KV grows as tokens are
  made, a prompt is admitted only beside that booking, retraction recomputes.
* **Host time.** From 0.4 the overlap scheduler prepares the next batch while the GPU runs the
  current one, so the per-iteration host time is taken as the C++ runtime's
  (`ITERATION_OVERHEAD_S["sglang"]`, equal to TensorRT-LLM's); before 0.4, parasim's default
  engine's. Neither is a published SGLang figure.
* **Batches formed ahead** (`schedule_ahead`, from 0.4). The same overlap scheduler
  (`Scheduler.event_loop_overlap`, on by default since PR #2067, 2024-11-19) launches batch i
  without waiting for it, then blocks on batch i-1's result, and only then receives new requests
  and forms batch i+1 (v0.4.0 scheduler.py). So a request that arrives while batch i runs on the
  GPU is first seen when batch i-1's result is in, after batch i+1 was formed: it joins batch
  i+2 at the earliest, one whole iteration later than in a loop that forms each batch after the
  previous one ends. A source's `--disable-overlap-schedule` turns both off.
* **Prefill attention kernel.** The default attention backend is FlashInfer. Up to 0.4.1 SGLang
  ran FlashInfer 0.1.x (PR #2517, 2024-12-19: "continue to use flashinfer 0.1.6 temporarily",
  after 0.2.0 broke its CI), whose prefill kernels use no Hopper-specific instructions:
  flashinfer issue #521 (2024-10) measures its prefill about 2x slower than FA3 on an SM90 part,
  fixed by the FA3 template of PR #667 in FlashInfer 0.2.0 (2024-12-16). So those releases
  prefill at the FA2-generation rate (`attention` flash2: the catalog's `attention_fa2_ratio`,
  1.0 off Hopper); from 0.4.2, and for an unnamed release, the catalog's best kernel.
* The KV cache is stored in the model's dtype unless the source asks for `--kv-cache-dtype fp8`
  (`auto`, as in vLLM).
* **Data-parallel attention without `--dp` (0.4.0 - 0.4.4).** In those releases
  `--enable-dp-attention` alone makes every TP rank an attention rank: `ServerArgs.__post_init__`
  sets `dp_size = tp_size` and halves `chunked_prefill_size` (server_args.py in the released
  wheels 0.4.0, 0.4.1, 0.4.2, 0.4.3 and 0.4.4; issue #3359, 2025-02-07: "we've automatically done
  this"). 0.4.0 and 0.4.1 also turn the overlap scheduler off (`disable_overlap_schedule = True`,
  gone from 0.4.2). From 0.4.4.post1 (PR #4390, "Now you need to explicitly specify `--dp`")
  the flag needs `--dp N`, as parasim reads it for every other release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from parasim.cost.dtypes import dtype_bytes
from parasim.cost.memory import RUNTIME_RESERVED_BYTES, kv_cache_bytes_per_token_per_gpu, weight_bytes_per_gpu
from parasim.engines.host import ITERATION_OVERHEAD_S
from parasim.engines.profile import ENGINES, EngineContext, EngineProfile, triton_moe_gemm
from parasim.engines.software import SourceFlags, release, release_patch
from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.model import ModelSpec
from parasim.units import fmt_gib

GIB = 1024 ** 3
MIB = 1024 ** 2
SGLANG_PAGE = 1
#: up to 0.3 / in 0.4: mem_fraction_static by TP size, largest first
_MFS_BY_TP_03 = ((16, 0.79), (8, 0.83), (4, 0.85), (2, 0.87), (1, 0.88))
_MFS_BY_TP_04 = ((16, 0.79), (8, 0.81), (4, 0.85), (2, 0.87), (1, 0.88))
#: from 0.5: memory reserved outside weights + KV, GiB, by GPU memory (GiB) and tp x pp
_RESERVE_GIB = ((35, lambda n: 2.8 + n / 10), (90, lambda n: 9.5 + n / 2), (160, lambda n: 12 + n / 2),
                (float("inf"), lambda n: 32.0))
#: request-slot pool: KV tokens / context length x 512, clamped
_SLOTS_PER_CONTEXT, _MIN_SLOTS, _MAX_SLOTS = 512, 2048, 4096

#: server flags a source may state (argparse also takes an unambiguous prefix: `--mem-frac 0.88`)
_FLAGS = SourceFlags(mem_fraction_static=r"mem[-_]frac(?:tion[-_]static)?",
                     chunked_prefill_size=r"chunked[-_]prefill[-_]size",
                     max_running_requests=r"max[-_]running[-_]requests")
#: the overlap scheduler turned off by the server flag (0.4: `--disable-overlap-schedule`)
_NO_OVERLAP = re.compile(r"disable[-_]overlap[-_]schedule", re.IGNORECASE)


_DP_ATTN = re.compile(r"enable[-_]dp[-_]attention", re.IGNORECASE)
_DP_SIZE = re.compile(r"--dp(?:[-_]size)?\s*[=:]?\s*(\d+)", re.IGNORECASE)
#: releases whose `--enable-dp-attention` alone sets dp_size = tp_size and halves the chunk: 0.4.0 - 0.4.4
#: (not 0.4.4.postN); in 0.4.0 - 0.4.1 it also turns the overlap scheduler off (released wheels' server_args.py)
DP_ATTN_AUTO = ((0, 4, 0), (0, 4, 4))
DP_ATTN_NO_OVERLAP_LAST = (0, 4, 1)
_POST_BUILD = re.compile(r"\d+\.\d+\.\d+\.post\d+", re.IGNORECASE)


def _release3(software: str) -> tuple[tuple[int, int, int], bool] | None:
    """(major, minor, patch) of the first version in `software` (engines.software's reading) and
    whether it is a .postN build."""
    rel = release(software)
    return ((*rel, release_patch(software)), bool(_POST_BUILD.search(software))) if rel else None


def dp_attention_auto(software: str, text: str) -> bool:
    """`--enable-dp-attention` without `--dp` under a release that takes dp_size = tp_size (0.4.0 - 0.4.4)."""
    r = _release3(software)
    if r is None or not _DP_ATTN.search(text) or _DP_SIZE.search(text):
        return False
    (rel, post) = r
    lo, hi = DP_ATTN_AUTO
    return lo <= rel <= hi and not (rel == hi and post)


#: the first release with the overlap scheduler on by default (batches formed one ahead)
OVERLAP_RELEASE = (0, 4)
#: the last (major, minor, patch) on FlashInfer 0.1.x, whose prefill kernels are FA2-generation on Hopper
LAST_FLASHINFER_01 = (0, 4, 1)


@dataclass(frozen=True)
class SglangSetup:
    mem_fraction_static: float
    chunked_prefill_size: int
    max_batch: int  # SGLang's max_running_requests
    kv_bytes: float  # per GPU
    iteration_overhead_s: float
    why: str
    schedule_ahead: bool = True  # the overlap scheduler forms batch i+1 while batch i runs
    attention: str = "flash"  # prefill attention: flash (the catalog's best) | flash2 (FlashInfer 0.1.x)


def default_mem_fraction(rel: tuple[int, int] | None, acc: AcceleratorSpec, *, tp: int, pp: int) -> float:
    if rel is not None and rel < (0, 5):
        table = _MFS_BY_TP_03 if rel < (0, 4) else _MFS_BY_TP_04
        return next(f for n, f in table if tp >= n)
    mem_gib = acc.hbm_bytes / GIB
    reserve = next(r for limit, r in _RESERVE_GIB if mem_gib < limit)(tp * pp)
    return round((mem_gib - reserve) / mem_gib, 3)


def default_chunk(rel: tuple[int, int] | None, acc: AcceleratorSpec) -> int:
    if rel is not None and rel < (0, 4):
        return 8192
    if rel is not None and rel < (0, 5):
        return 2048 if acc.hbm_bytes < 25_000 * MIB else 8192
    mem_gib = acc.hbm_bytes / GIB
    return 2048 if mem_gib < 35 else 8192 if mem_gib < 160 else 16384


def sglang_setup(software: str, source: str, model: ModelSpec, acc: AcceleratorSpec, *, tp: int, pp: int,
                 weights: str, kv_dtype: str, ep: int = 1) -> SglangSetup:
    """`tp` is the server's --tp; with DP attention (`ep` > 1 ranks of one GPU each, experts spread
    over them) a GPU holds the whole attention and 1/ep of the routed experts, and its KV pool
    serves its own rank only."""
    rel = release(software)
    text = source + " " + software
    stated = _FLAGS.stated(text)
    notes = []
    mfs = stated.get("mem_fraction_static") or default_mem_fraction(rel, acc, tp=tp, pp=pp)
    chunk = int(stated.get("chunked_prefill_size") or default_chunk(rel, acc))
    auto_dp = ep > 1 and dp_attention_auto(software, text)
    if auto_dp:  # ServerArgs.__post_init__ halves the chunk after the flags are read (0.4.0 - 0.4.4)
        chunk //= 2
        notes.append(f"--enable-dp-attention: dp_size = tp_size and chunked_prefill_size halved to {chunk} "
                     "(ServerArgs, 0.4.0 - 0.4.4)")
    # KV = mfs x (memory free before the weights load) - weights (ModelRunner.profile_max_num_token)
    wtp = 1 if ep > 1 else tp
    w = weight_bytes_per_gpu(model, tp=wtp, pp=pp, weights=weights, ep=ep)
    kv = max(0.0, mfs * (acc.device_memory_bytes - RUNTIME_RESERVED_BYTES) - w)
    tokens = int(kv // kv_cache_bytes_per_token_per_gpu(model, tp=wtp, pp=pp, kv_bytes=dtype_bytes(kv_dtype)))
    slots = min(max(int(tokens / model.max_seq_len * _SLOTS_PER_CONTEXT), _MIN_SLOTS), _MAX_SLOTS)
    running = int(stated.get("max_running_requests") or max(1, min(tokens // 2, slots)))
    for k, v in stated.items():
        notes.append(f"{k} {v:g} (from the source)")
    overlap = (rel is None or rel >= OVERLAP_RELEASE) and not _NO_OVERLAP.search(text)
    if auto_dp and (r3 := _release3(software)) is not None and r3[0] <= DP_ATTN_NO_OVERLAP_LAST:
        overlap = False  # disable_overlap_schedule = True under DP attention (0.4.0 - 0.4.1)
        notes.append("--enable-dp-attention turns the overlap scheduler off (ServerArgs, 0.4.0 - 0.4.1)")
    fa2 = rel is not None and (*rel, release_patch(software)) <= LAST_FLASHINFER_01
    ver = f"{rel[0]}.{rel[1]}" if rel else "(release not named: the current defaults)"
    why = (f"SGLang {ver} defaults: prefill first without mixing, chunked_prefill_size {chunk}, "
           f"mem_fraction_static {mfs:g} (KV = {mfs:g} x memory before weights - weights = {fmt_gib(kv)} per GPU, "
           f"{tokens:,} tokens), max_running_requests {running}, page_size {SGLANG_PAGE}, KV allocated as it grows, a prompt "
           f"admitted only if it and its output fit beside the running requests' output x new_token_ratio "
           f"(retraction = recompute); "
           + ("overlap scheduler (host work hidden; each batch formed while the previous one runs, so a "
              "request arriving during an iteration joins the one after next)" if overlap else "no overlap scheduler")
           + ("; prefill attention by FlashInfer 0.1.x (no Hopper kernels before FlashInfer 0.2): the "
              "FA2-generation rate" if fa2 else "")
           + "".join(f"; {n}" for n in notes))
    return SglangSetup(mfs, chunk, running, kv,
                       ITERATION_OVERHEAD_S["sglang" if overlap else "default"], why,
                       schedule_ahead=overlap, attention="flash2" if fa2 else "flash")




@ENGINES.register
class SglangProfile(EngineProfile):
    """SGLang: the named release's ServerArgs defaults (`sglang_setup`), KV pool sized its way."""

    name = "sglang"
    pattern = re.compile(r"sglang", re.IGNORECASE)
    releases = ((0, 2), (0, 5))
    fp8_cache_with_fp8_weights = False

    @classmethod
    def attention_dp(cls, text: str, tp: int, software: str = "") -> tuple[int, int] | None:
        # `--enable-dp-attention --dp N` under `--tp` = N: one GPU of attention per rank;
        # 0.4.0 - 0.4.4 take dp = tp from the flag alone (`dp_attention_auto`)
        m = _DP_SIZE.search(text) if _DP_ATTN.search(text) else None
        if m:
            return int(m.group(1)), tp
        return (tp, tp) if dp_attention_auto(software, text) else None

    def apply(self, ctx: EngineContext) -> None:
        kw = ctx.kw
        if not ctx.stated.get("kv_dtype"):
            kw["kv_dtype"] = ctx.auto_kv_dtype("SGLang")
        setup = sglang_setup(ctx.software, ctx.source, ctx.model, ctx.acc, tp=ctx.server_tp, pp=kw["pp"],
                             weights=kw["weights"], kv_dtype=ctx.kv_dtype_of(), ep=kw.get("ep", 1))
        kw.update(scheduler=ctx.scheduler("sglang"), block_size=SGLANG_PAGE, token_budget=setup.chunked_prefill_size,
                  kv_reservation="estimated", iteration_overhead_s=setup.iteration_overhead_s,
                  max_batch=ctx.stated.get("max_batch") or setup.max_batch, schedule_ahead=setup.schedule_ahead,
                  attention=setup.attention)
        kw["gpu_memory_utilization"] = ctx.utilization_leaving(setup.kv_bytes)
        ctx.choose(setup.why, "max_batch", kw["max_batch"])
        triton_moe_gemm(ctx)
