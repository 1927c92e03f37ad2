"""What TensorRT-LLM's published benchmark flows configure, by release.

A TensorRT-LLM throughput figure depends on settings the benchmark tool picks, not the user:
the engine's max_batch_size and max_num_tokens, the KV-cache share of free memory, the capacity
policy and whether prompts are chunked. Four flows have been published:

* v0.10 (gptManagerBenchmark, the first in-flight-batching perf-overview): one trtllm-build command
  for every network (`--max_batch_size 2048 --max_num_tokens 2048`), `--scheduler_policy
  max_utilization`, `--kv_cache_free_gpu_mem_fraction 0.9`, `--enable_chunked_context`.
* v0.11 (gptManagerBenchmark): a per-network build table on the v0.11 perf-overview page
  (`TRTLLM_011_BUILD`), `--kv_cache_free_gpu_mem_fraction 0.99`, `--enable_chunked_context`.
* v0.12 - v0.14 (trtllm-bench, TensorRT engines): `trtllm-bench build` looked the engine sizes up
  in a file shipped with the tool (tensorrt_llm/bench/build/benchmark_config.yml: per model and
  TP, "general" or per max sequence length; `TRTLLM_BENCH_LOOKUP`), which the v0.12 benchmarking
  doc says "directly corresponds to the performance table" of the perf-overview page. The pages
  state no KV fraction, so the tool's default 0.90 applies.
* v0.15 - v0.18 (trtllm-bench, TensorRT engines) and v0.19+ (trtllm-bench, PyTorch backend):
  max_batch_size and max_num_tokens from trtllm-bench's sizing rule (`trtllm_bench_settings`,
  tensorrt_llm/bench/build/tuning.py; the v0.15 page is the first to describe it); the
  perf-overview pages say most runs set the KV fraction to 0.95 (default 0.90). The PyTorch flow
  leaves chunked prefill off and then raises max_num_tokens to at least max ISL + max_batch_size
  so every prompt fits one iteration (tensorrt_llm/bench/benchmark/utils/general.py).

From v0.11 every flow admits with GUARANTEED_NO_EVICT (KV for prompt + output booked at
admission); v0.10's MAX_UTILIZATION books KV one step at a time and, when the blocks run out,
pauses the most recently started requests, whose KV is freed and recomputed on resumption
(capacityScheduler.cpp, MaxUtilizationScheduler). 64 tokens per KV block throughout.

The C++ runtime of the engine flows (v0.11 - v0.18) allocates, before it sizes the KV cache,
runtime buffers and a batched decoder whose size follows max_batch_size x vocabulary (fp32
logits, sampling workspaces). Two published startup logs give them (`TRTLLM_RUNTIME_BUFFERS`,
`TRTLLM_DECODER_BUFFERS`); the KV fraction applies to what is left.

The PyTorch flow's executor (`PyExecutor._executor_loop_overlap`, the overlap scheduler) forms each
batch one iteration ahead (`schedule_ahead`): an iteration fetches new requests, schedules batch
i+1 and launches it, and only then waits for batch i's sampled tokens (`_update_requests` on the
previous batch's sample state), so batch i+1 is formed as batch i starts on the GPU and a request
that arrives while batch i runs joins batch i+2 at the earliest. On by default from 0.20 (PR #4174,
"Enable scheduling overlap by default", which renamed PyTorchConfig's `enable_overlap_scheduler` to
`disable_overlap_scheduler`; the 0.20.0 release notes: "[Breaking Change]: Enable scheduling overlap
by default"); in 0.19 only when a source sets `enable_overlap_scheduler: true`. A source's
`disable_overlap_scheduler: true` turns it off, and so does n-gram speculation (and a separate draft
model before 1.1: `TRTLLM_OVERLAP_DRAFT_RELEASE`). The TensorRT-engine flows (C++ executor) are not
given it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from parasim.cost.dtypes import dtype_bytes
from parasim.cost.memory import (RUNTIME_RESERVED_BYTES, activation_workspace_bytes, weight_bytes_per_gpu,
                                  weight_params_per_gpu)
from parasim.engines.host import ITERATION_OVERHEAD_S, TRTLLM_PYEXECUTOR_GRACE_S_PER_SEQ, grace_hosted
from parasim.engines.profile import ENGINES, EngineContext, EngineProfile
from parasim.engines.software import SourceFlags, release
from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.model import ModelSpec
from parasim.units import fmt_gib

TRTLLM_MAX_NUM_TOKENS = 8192
TRTLLM_MAX_BATCH = 2048
TRTLLM_BLOCK = 64
#: v0.10 perf-overview: one build command for every network (--max_num_tokens 2048
#: --max_batch_size 2048) and gptManagerBenchmark --kv_cache_free_gpu_mem_fraction 0.9
TRTLLM_010_BUILD = (2048, 2048)
TRTLLM_010_KV_FRACTION = 0.9
#: v0.11 perf-overview command line (gptManagerBenchmark --kv_cache_free_gpu_mem_fraction 0.99)
TRTLLM_011_KV_FRACTION = 0.99
#: trtllm-bench perf-overview pages from v0.15: "in many cases ... --kv_cache_free_gpu_mem_fraction 0.95"
TRTLLM_BENCH_KV_FRACTION = 0.95
#: trtllm-bench throughput's own default (--kv_cache_free_gpu_mem_fraction .90), for the v0.12 - v0.14
#: pages, which state no value
TRTLLM_BENCH_DEFAULT_KV_FRACTION = 0.90

#: TensorRT-LLM v0.11 perf-overview, "Network Configuration Files and Settings": per-network
#: (max_num_tokens, max_batch_size) by TP, some per (ISL, OSL). A network is named by
#: (layers, hidden, kv_heads, vocab, routed experts).
TRTLLM_011_BUILD: dict[tuple[int, int, int, int, int], dict[tuple[int, tuple[int, int] | None], tuple[int, int]]] = {
    (32, 4096, 32, 32000, 0): {(1, None): (8192, 4096)},  # Llama-2-7b
    (32, 4096, 8, 128256, 0): {(1, None): (8192, 2048)},  # Meta-Llama-3-8B
    (32, 4096, 8, 32000, 0): {(1, None): (8192, 4098)},  # Mistral-7B-v0.1 (4098 as published)
    (32, 4096, 8, 32000, 8): {(2, None): (3072, 2048), (4, None): (8192, 8192)},  # Mixtral-8x7B
    (80, 8192, 8, 32000, 0): {(2, None): (2048, 2048), (4, None): (8192, 4096), (4, (128, 4096)): (8192, 256),
                              (8, None): (16384, 8192), (8, (128, 2048)): (16384, 1024)},  # Llama-2-70b
    (80, 8192, 8, 128256, 0): {(4, None): (1024, 2048), (8, None): (16384, 8192)},  # Meta-Llama-3-70B
}

#: Runtime buffers of the C++ runtime, in units of max_batch_size x vocab x 4 bytes (one fp32 logits
#: row per sequence). Published startup logs: TensorRT-LLM issue #1188 (2.66 GB at max_batch 2048,
#: vocab 152064 -> 2.13) and the trtllm-bench README of 0.12.0.dev (Llama-2-7B FP8 on one H100,
#: max_batch 4096, vocab 32000: "Allocated 1.14 GB GPU memory for runtime buffers" -> 2.17).
TRTLLM_RUNTIME_BUFFERS = 2.15
#: The batched decoder, same unit. The same two logs give 5.76 GB (-> 4.6) and 4.35 GB (-> 8.3);
#: the decoder also holds buffers that follow other sizes, so the smaller figure is used.
TRTLLM_DECODER_BUFFERS = 4.6


#: Query-group sizes (query heads per KV head on one GPU) with a precompiled XQA decode kernel up to
#: v0.10: the cubins under cpp/tensorrt_llm/kernels/decoderMaskedMultiheadAttention/cubin/ are named
#: `xqa_kernel_..._nqpkv_{8,16}_m_{8,16}_sm_*` (nqpkv_0 are the Medusa kernels); none has a group of 4
#: (Llama-3-8B, Mistral-7B, Mixtral-8x7B). XQA's JIT path, which compiles any group up to 32, is the
#: default from v0.11 ("Added Hopper qgmma kernel to XQA JIT codepath", v0.11 release notes).
TRTLLM_XQA_PRECOMPILED_GROUPS = (8, 16)


def masked_mha_decode(software: str, model: ModelSpec, acc: AcceleratorSpec, *, tp: int, kv_dtype: str) -> bool:
    """Whether the release ran this GQA model's decode attention by masked MHA (one thread block per
    query head, so each KV head is read and converted once per query head of its group), in the
    configuration where that cost is measured: Hopper with an 8-bit KV cache. TensorRT-LLM's XQA
    blog measures XQA against masked MHA on Llama-70B FP8 (8-bit KV) on one H200 at 128/2048: 2.4x
    the throughput, from "reducing data loading and conversion". With a 16-bit cache or on other
    generations no such A/B is published, so the group reads stay grouped there (docs/serving.md)."""
    rel = release(software)
    group = (model.heads // tp) // max(1, model.kv_heads // tp)
    return (rel is not None and rel <= (0, 10) and not model.mla and acc.generation == "hopper"
            and dtype_bytes(kv_dtype) == 1 and group > 1 and group not in TRTLLM_XQA_PRECOMPILED_GROUPS)


def runtime_buffer_bytes(model: ModelSpec, max_batch: int) -> float:
    """What the engine flows' C++ runtime allocates per GPU for its runtime buffers and decoder
    before sizing the KV cache (every rank holds full-vocabulary logits)."""
    return (TRTLLM_RUNTIME_BUFFERS + TRTLLM_DECODER_BUFFERS) * max_batch * model.vocab * 4.0


#: trtllm-bench v0.12 - v0.14 lookup (tensorrt_llm/bench/build/benchmark_config.yml), same network
#: keys as above: (max_num_tokens, max_batch_size) by (TP, max sequence length of the dataset or
#: None for the file's "general" entry). The Llama-3-70B TP1/TP2 entries are from a later copy of
#: the file; the others are in every copy found. A network or TP the file lacks made the build
#: fail; parasim then uses trtllm-build's defaults.
TRTLLM_BENCH_LOOKUP: dict[tuple[int, int, int, int, int], dict[tuple[int, int | None], tuple[int, int]]] = {
    (32, 4096, 32, 32000, 0): {(1, None): (8192, 4096)},  # Llama-2-7b-hf
    (32, 4096, 8, 128256, 0): {(1, None): (8192, 2048)},  # Meta-Llama-3-8B
    (32, 4096, 8, 32000, 0): {(1, None): (8192, 4098)},  # Mistral-7B-v0.1
    (32, 4096, 8, 32000, 8): {(2, None): (3072, 2048), (4, None): (8192, 8192)},  # Mixtral-8x7B-v0.1
    (80, 8192, 8, 32000, 0): {(2, None): (2048, 2048), (4, None): (8192, 4096), (4, 4224): (8192, 256),
                              (8, None): (16384, 8192), (8, 2176): (16384, 1024)},  # Llama-2-70b-hf
    (80, 8192, 8, 128256, 0): {(1, None): (2048, 2048), (2, None): (1024, 256), (2, 4096): (1024, 2048),
                               (4, None): (1024, 2048), (8, None): (16384, 8192)},  # Meta-Llama-3-70B
}


def _network_key(model: ModelSpec) -> tuple[int, int, int, int, int]:
    """How the tables above name a network: (layers, hidden, KV heads, vocab, routed experts)."""
    return (model.layers, model.hidden, model.kv_heads, model.vocab, model.experts)


def _look_up(table: dict, model: ModelSpec, tp: int, special: object) -> tuple[int, int, bool]:
    """(max_num_tokens, max_batch_size, found) from a per-network table: the entry for this TP and
    workload key, else the TP's general entry, else trtllm-build's defaults."""
    by_tp = table.get(_network_key(model), {})
    hit = by_tp.get((tp, special)) or by_tp.get((tp, None))
    return (*hit, True) if hit else (TRTLLM_MAX_NUM_TOKENS, TRTLLM_MAX_BATCH, False)


@dataclass(frozen=True)
class TrtllmSetup:
    max_num_tokens: int
    max_batch: int
    kv_fraction: float
    chunked: bool
    flow: str  # human-readable: which release flow and where the sizes came from
    cpp_runtime: bool = True  # TensorRT engines run by the C++ runtime (runtime_buffer_bytes applies)
    # capacity policy: "full" = GUARANTEED_NO_EVICT (prompt + output booked at admission),
    # "incremental" = MAX_UTILIZATION (booked per step; paused requests recompute)
    kv_reservation: str = "full"


def _round_up(raw: float, steps: tuple[tuple[float, int], ...], floor: int) -> int:
    """Round `raw` up to the step of the first range it falls under, and to at least `floor`."""
    step = next(st for limit, st in steps if raw < limit)
    return max(floor, step * math.ceil(raw / step))


def _round_batch(raw: float) -> int:
    return _round_up(raw, ((256, 32), (1024, 128), (math.inf, 256)), 64)


def _round_tokens(raw: float) -> int:
    return _round_up(raw, ((4096, 256), (8192, 512), (math.inf, 1024)), 2048)


def _tool_head_size(model: ModelSpec) -> int:
    """The head size trtllm-bench reads from the HF config: its `head_dim` where the config has one
    (the catalog's head_dim), else hidden / heads. DeepSeek's MLA configs (V2, V3, R1) state
    qk_nope / qk_rope / v head dims and no `head_dim`, so the tool falls back to hidden / heads."""
    return model.hidden // model.heads if model.mla else model.head_dim


def trtllm_bench_settings(model: ModelSpec, acc: AcceleratorSpec, *, tp: int, pp: int, isl: float, osl: float,
                          weights: str, kv_dtype: str, kv_fraction: float = TRTLLM_BENCH_KV_FRACTION) -> tuple[int, int]:
    """(max_batch_size, max_num_tokens) as trtllm-bench sizes them when the user gives neither.

    Requests that fit: (all GPUs' memory - the weights) x kv_fraction over the KV of one
    ISL + OSL sequence (each GPU holds at least one KV head), capped at 4096 and divided over
    PP stages; tokens = that batch x (1 + ISL / OSL), capped at 32768; both then rounded up
    ("slightly optimistic": the KV pool, not these, limits concurrency at run time).
    The KV of a token is the tool's own estimate, `2 x layers x max(TP, KV heads) x head size`
    from the HF config (`calc_engine_setting`), whatever the attention: for an MLA model the
    config's `num_key_value_heads` (128 for DeepSeek-V3/R1) and a head size of hidden / heads,
    since DeepSeek's config.json has no `head_dim` and the tool's ModelConfig then takes
    `hidden_size // num_attention_heads` (tensorrt_llm/bench/build/dataclasses.py,
    `set_values_if_none`): 7168 / 128 = 56, not the catalog's nominal 128 (`_tool_head_size`).
    """
    kv_heads = max(tp, model.kv_heads)
    kv_per_token = 2 * model.layers * kv_heads * _tool_head_size(model) * dtype_bytes(kv_dtype)
    # the tool's own estimate: every parameter at the quantised width (unlike weight_bytes_per_gpu)
    free = acc.hbm_bytes * tp * pp - weight_params_per_gpu(model) * dtype_bytes(weights)
    requests = max(free, 0.0) * kv_fraction / (kv_per_token * max(isl + osl, 1.0))
    raw_bs = min(requests, 4096) / pp
    raw_tokens = min(raw_bs * (1.0 + isl / max(osl, 1.0)), 32768)
    return _round_batch(raw_bs), _round_tokens(raw_tokens)


#: a software string that names the TensorRT-engine flow itself (an engine built by trtllm-build and run
#: by the C++ executor), whatever the release: MLPerf Inference v5.1's NVIDIA harness builds TensorRT
#: engines on a 1.0 branch (closed/NVIDIA/Makefile.build TRTLLM_HASH, configs/*/llama2-70b.py
#: `trtllm_build_flags`), after the benchmark tool's own default became the PyTorch backend
_ENGINE_FLOW = re.compile(r"tensorrt engine|trtllm-build", re.IGNORECASE)


def tensorrt_engine(software: str) -> bool:
    """A release whose benchmark flow runs a TensorRT engine (every flow before v0.19 unless the
    source names the PyTorch backend, or any release whose software names the engine flow;
    trtllm_setup)."""
    rel = release(software)
    if _ENGINE_FLOW.search(software) and "pytorch" not in software.lower():
        return True
    return rel is not None and rel < (0, 19) and "pytorch" not in software.lower()


def trtllm_setup(software: str, model: ModelSpec, acc: AcceleratorSpec, *, tp: int, pp: int, isl: float,
                 max_isl: int, osl: float, weights: str, kv_dtype: str, max_seq: int | None = None) -> TrtllmSetup:
    """The settings of the benchmark flow of the release named in `software` (module docstring).
    `max_seq` is the dataset's longest prompt + output (the v0.12 - v0.14 lookup key); it defaults
    to ISL + OSL."""
    rel = release(software)
    if rel is not None and (0, 12) <= rel <= (0, 14):
        seq = int(max_seq if max_seq is not None else isl + osl)
        tokens, batch, hit = _look_up(TRTLLM_BENCH_LOOKUP, model, tp, seq)
        where = ("trtllm-bench's benchmark_config.yml lookup" if hit
                 else "trtllm-build defaults (network or TP not in trtllm-bench's lookup file)")
        return TrtllmSetup(tokens, batch, TRTLLM_BENCH_DEFAULT_KV_FRACTION, True,
                           f"TensorRT-LLM {rel[0]}.{rel[1]} trtllm-bench, TensorRT engine, chunked context; "
                           f"max_num_tokens {tokens}, max_batch_size {batch} ({where}); KV fraction "
                           f"{TRTLLM_BENCH_DEFAULT_KV_FRACTION} (the tool's default; the page states none)")
    if rel == (0, 11):
        tokens, batch, hit = _look_up(TRTLLM_011_BUILD, model, tp, (int(isl), int(osl)))
        where = "v0.11 perf-overview engine-build table" if hit else "trtllm-build defaults (network not in the v0.11 table)"
        return TrtllmSetup(tokens, batch, TRTLLM_011_KV_FRACTION, True,
                           f"TensorRT-LLM v0.11 gptManagerBenchmark, chunked context; max_num_tokens {tokens}, "
                           f"max_batch_size {batch} ({where})")
    if rel == (0, 10):
        tokens, batch = TRTLLM_010_BUILD
        return TrtllmSetup(tokens, batch, TRTLLM_010_KV_FRACTION, True,
                           f"TensorRT-LLM v0.10 gptManagerBenchmark, chunked context, MAX_UTILIZATION; max_num_tokens "
                           f"{tokens}, max_batch_size {batch} (v0.10 perf-overview build command)",
                           kv_reservation="incremental")
    if rel is not None and rel < (0, 10):
        return TrtllmSetup(TRTLLM_MAX_NUM_TOKENS, TRTLLM_MAX_BATCH, TRTLLM_011_KV_FRACTION, True,
                           f"TensorRT-LLM {rel[0]}.{rel[1]}: in-flight batching with chunked context; "
                           f"max_num_tokens {TRTLLM_MAX_NUM_TOKENS}, max_batch_size {TRTLLM_MAX_BATCH} (trtllm-build defaults)")
    batch, tokens = trtllm_bench_settings(model, acc, tp=tp, pp=pp, isl=isl, osl=osl, weights=weights, kv_dtype=kv_dtype)
    pytorch = not tensorrt_engine(software)  # from 0.19, or where the software names the PyTorch backend
    if pytorch:
        tokens = max(tokens, max_isl + batch)
        flow = "trtllm-bench, PyTorch backend, no chunked prefill; max_num_tokens >= max ISL + max_batch_size"
    elif _ENGINE_FLOW.search(software) and (rel is None or rel >= (0, 19)):
        flow = ("TensorRT engine (named in the software; the tool's sizing rule below unless the source states "
                "the sizes), C++ executor, chunked context")
    else:
        flow = "trtllm-bench, TensorRT engine, chunked context"
    ver = f"{rel[0]}.{rel[1]}" if rel else "(release not named: the current flow)"
    return TrtllmSetup(tokens, batch, TRTLLM_BENCH_KV_FRACTION, not pytorch,
                       f"TensorRT-LLM {ver} {flow}; max_batch_size {batch}, max_num_tokens {tokens} "
                       f"(trtllm-bench sizing rule)", cpp_runtime=not pytorch)


#: trtllm-bench flags a source may state (--max_batch_size is per rank)
_FLAGS = SourceFlags(max_batch_size=r"max[-_]batch[-_]size", max_num_tokens=r"max[-_]num[-_]tokens",
                     kv_cache_free_gpu_mem_fraction=r"kv[-_]cache[-_]free[-_]gpu[-_]mem[-_]fraction")
#: the executor's capacity policy as a source states it (C++ executor `CapacitySchedulerPolicy`; the MLPerf
#: harness's `batch_scheduler_policy` / `--trtllm_batch_sched_policy` values `max_util` and `no_evict`)
_POLICY = re.compile(r"(?:batch[-_]sched(?:uler)?[-_]policy|scheduler[-_]policy)[\"']?\s*[:=]?\s*[\"']?"
                     r"(max[-_]util(?:ization)?|(?:guaranteed[-_])?no[-_]evict)", re.IGNORECASE)
#: chunked context as a source states it (`enable_chunked_context: true|false`, `--enable_chunked_context`)
_CHUNKED = re.compile(r"enable[-_]chunked[-_]context[\"']?(?:\s*[:=]\s*(true|false)\b)?", re.IGNORECASE)
#: the PyTorch flow's overlap scheduler as a source states it (LLM-API options, YAML or Python)
_OVERLAP_OFF = re.compile(r"disable[-_]overlap[-_]scheduler[\"']?\s*[:=]\s*(?:true|1)\b", re.IGNORECASE)
_OVERLAP_ON = re.compile(r"enable[-_]overlap[-_]scheduler[\"']?\s*[:=]\s*(?:true|1)\b", re.IGNORECASE)
#: the first release whose PyTorch flow runs the overlap scheduler by default (PR #4174; 0.20.0 release notes)
TRTLLM_OVERLAP_DEFAULT_RELEASE = (0, 20)
#: With speculative decoding the executor keeps the overlap scheduler only for the
#: modes `SpeculativeDecodingMode.support_overlap_scheduler` names (tensorrt_llm/_torch/speculative/
#: interface.py): MTP and one-model Eagle3 in the 1.0 era, never n-gram; a separate draft model from
#: PR #7651 ("Enable overlap scheduler for two-model spec decoding", opened 2025-09-09, after the 1.0
#: documentation PR #6696 of 2025-08-08), taken as 1.1
TRTLLM_OVERLAP_DRAFT_RELEASE = (1, 1)


def overlap_scheduler(software: str, text: str, cpp_runtime: bool,
                      spec_method: str | None = None) -> tuple[bool, str]:
    """(whether the PyTorch flow's overlap scheduler forms each batch one iteration ahead, the
    sentence; empty when nothing applies): a stated `disable_overlap_scheduler: true` or, before
    0.20, `enable_overlap_scheduler: true` wins over the release's default (module docstring).
    Speculative decoding keeps it only where `SpeculativeDecodingMode.support_overlap_scheduler`
    allows (TRTLLM_OVERLAP_DRAFT_RELEASE)."""
    if cpp_runtime:
        return False, ""
    rel = release(software)
    if spec_method == "ngram" or (spec_method == "draft" and rel is not None and rel < TRTLLM_OVERLAP_DRAFT_RELEASE):
        return False, (f"{spec_method} speculation: the executor turns the overlap scheduler off "
                       "(SpeculativeDecodingMode.support_overlap_scheduler), so each batch is formed after the "
                       "previous one ends")
    if _OVERLAP_OFF.search(text):
        return False, ("disable_overlap_scheduler in the source: each batch formed after the previous one ends "
                       "(the executor's host work then runs in series with the GPU step; no figure for it, so it "
                       "is charged as with the overlap scheduler)")
    if rel is not None and rel < TRTLLM_OVERLAP_DEFAULT_RELEASE and not _OVERLAP_ON.search(text):
        return False, ""
    why = ("enable_overlap_scheduler in the source" if rel is not None and rel < TRTLLM_OVERLAP_DEFAULT_RELEASE
           else "the default from 0.20, PR #4174")
    return True, (f"overlap scheduler ({why}): each batch formed while the previous one runs "
                  "(PyExecutor._executor_loop_overlap), so a request arriving during an iteration joins the one "
                  "after next")


#: the v1.0 perf-overview page's `llm_options.yml` (docs/source/performance/perf-overview.md, "Running the
#: Benchmark", dense and MoE alike): `cuda_graph_config: enable_padding: true` with these `batch_sizes`
TRTLLM_10_PERF_OVERVIEW_GRAPH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 1024, 2048, 4096, 8192)
#: CUDA-graph padding as a source states it (LLM-API YAML, PyTorchConfig's older flag, or in words)
_GRAPH_PADDING = re.compile(r"enable[-_]padding[\"']?\s*[:=]\s*(?:true|1)\b|cuda[-_]graph[-_]padding[-_]enabled[\"']?\s*[:=]\s*"
                            r"(?:true|1)\b|cuda graphs? with padding", re.IGNORECASE)
#: an explicit list of captured batch sizes: `batch_sizes: [1, 2, 4]` / `cuda_graph_batch_sizes=[...]`
_GRAPH_SIZES = re.compile(r"batch[-_]sizes[\"']?\s*[:=]?\s*\[([\d,\s]+)\]", re.IGNORECASE)


def cuda_graph_padding(software: str, text: str, *, max_batch: int, max_num_tokens: int) -> tuple[int, ...] | None:
    """The decode batch sizes a PyTorch-flow run pads to, when its source states CUDA-graph padding:
    the source's own `batch_sizes` list, else (a v1.0 perf-overview row) that page's `llm_options.yml`
    list; None when no padding is stated or no list is known. Filtered as the executor does
    (`_filter_cuda_graph_batch_sizes`, tensorrt_llm/_torch/pyexecutor/model_engine.py): sizes above
    min(max_batch_size, max_num_tokens) are dropped and, with padding, that bound is captured instead."""
    if not _GRAPH_PADDING.search(text):
        return None
    listed = _GRAPH_SIZES.search(text)
    if listed:
        sizes = tuple(sorted({int(x) for x in re.findall(r"\d+", listed.group(1)) if int(x) > 0}))
    elif release(software) == (1, 0) and "perf-overview" in text.lower():
        sizes = TRTLLM_10_PERF_OVERVIEW_GRAPH_SIZES
    else:
        return None
    cap = min(max_batch, max_num_tokens)
    kept = [b for b in sizes if b <= cap]
    if len(kept) < len(sizes) and (not kept or kept[-1] != cap):
        kept.append(cap)
    return tuple(kept) or None


_ADP = re.compile(r"enable[-_]attention[-_]dp(?:\s*[:=]\s*true|\b(?!\s*[:=]\s*false))", re.IGNORECASE)


@ENGINES.register
class TrtllmProfile(EngineProfile):
    """TensorRT-LLM: the benchmark flow of the named release (`trtllm_setup`), then the flags the
    source states."""

    name = "tensorrt-llm"
    pattern = re.compile(r"tensorrt|trt-llm|trtllm", re.IGNORECASE)
    releases = ((0, 9), (1, 2))

    @classmethod
    def attention_dp(cls, text: str, tp: int, software: str = "") -> tuple[int, int] | None:
        # `enable_attention_dp: true`: the --tp ranks each attend for their own requests
        return (tp, tp) if _ADP.search(text) else None

    def apply(self, ctx: EngineContext) -> None:
        kw, model, acc, wl = ctx.kw, ctx.model, ctx.acc, ctx.workload()
        setup = trtllm_setup(ctx.software, model, acc, tp=ctx.server_tp, pp=kw["pp"],
                             isl=float(wl.prompt_tokens.mean()), max_isl=int(wl.prompt_tokens.max()),
                             osl=float(wl.output_tokens.mean()), weights=kw["weights"], kv_dtype=ctx.kv_dtype_of(),
                             max_seq=int((wl.prompt_tokens + wl.output_tokens).max()))
        stated = _FLAGS.stated(ctx.text)
        if stated:
            # trtllm-bench flags a source states win over the release's sizing
            setup = replace(setup, max_batch=int(stated.get("max_batch_size") or setup.max_batch),
                            max_num_tokens=int(stated.get("max_num_tokens") or setup.max_num_tokens),
                            kv_fraction=float(stated.get("kv_cache_free_gpu_mem_fraction") or setup.kv_fraction),
                            flow=setup.flow + " (the values the source states replace these: "
                            + ", ".join(f"{k} {v:g}" for k, v in stated.items()) + ")")
        setup = _stated_policy(ctx.text, setup)
        kw.update(scheduler=ctx.scheduler("sarathi" if setup.chunked else "continuous"),
                  token_budget=setup.max_num_tokens, kv_reservation=setup.kv_reservation, block_size=TRTLLM_BLOCK,
                  iteration_overhead_s=ITERATION_OVERHEAD_S["tensorrt-llm"],
                  max_batch=ctx.stated.get("max_batch") or setup.max_batch)
        ahead, why = overlap_scheduler(ctx.software, ctx.text, setup.cpp_runtime, ctx.stated.get("spec_method"))
        kw["schedule_ahead"] = ahead
        if why:
            ctx.choose(why, "schedule_ahead", ahead)
        kw["gpu_memory_utilization"] = kv_fraction_utilization(ctx, setup)
        policy = ("KV booked per step (MAX_UTILIZATION; paused requests recompute)" if setup.kv_reservation == "incremental"
                  else "KV reserved for prompt+output (GUARANTEED_NO_EVICT)")
        buffers = (f", after {fmt_gib(runtime_buffer_bytes(model, kw['max_batch']))} of runtime and decoder buffers"
                   if setup.cpp_runtime else "")
        ctx.choose(f"{setup.flow}; tokens_per_block {TRTLLM_BLOCK}, {policy}, "
                   f"KV = {setup.kv_fraction:.0%} of free memory{buffers}", "max_batch", kw["max_batch"])
        if (not ctx.stated.get("decode_attention")
                and masked_mha_decode(ctx.software, model, acc, tp=kw["tp"], kv_dtype=ctx.kv_dtype_of())):
            kw["decode_attention"] = "per_query_head"
            group = model.heads // model.kv_heads
            ctx.choose(f"decode attention by masked MHA: no XQA kernel in this release for {group} "
                       "query heads per KV head (precompiled XQA: 8 and 16; JIT XQA from v0.11), so each KV head "
                       "is read once per query head", "decode_attention", "per_query_head")
        if model.windowed_layers and not ctx.stated.get("attention_window") and tensorrt_engine(ctx.software):
            # a TensorRT engine's attention window is the runtime's max_attention_window_size, whose
            # default is the max sequence length; the examples pass --max_attention_window_size=4096 to
            # run Mistral-7B's window (examples/llama/README.md) and the benchmark flows pass none
            kw["attention_window"] = "full"
            ctx.choose(f"{model.name}'s {model.windowed_layers} sliding-window layers attend to the whole "
                       "context: a TensorRT engine applies a window only when max_attention_window_size is "
                       "given, and the benchmark flow gives none", "attention_window", "full")
        if not setup.cpp_runtime:
            self._graph_padding(ctx, setup)
            aq = pytorch_act_quant(model, acc, weights=kw["weights"], tp=kw["tp"])
            if aq is not None:
                kw["act_quant"] = aq[0]
                ctx.choose(aq[1], "act_quant", aq[0])
        if not setup.cpp_runtime and grace_hosted(acc.form_factor):
            # the Python executor's per-request work on a Grace host (engines.host)
            kw["host_s_per_sequence"] = TRTLLM_PYEXECUTOR_GRACE_S_PER_SEQ
            ctx.choose(f"PyTorch backend on a Grace host: {TRTLLM_PYEXECUTOR_GRACE_S_PER_SEQ * 1e6:.0f} us of "
                       "executor work per scheduled request per iteration, overlapped with the GPU by the overlap "
                       "scheduler (TensorRT-LLM PR #10273: 45.11 ms host step at 1,536 requests per rank, GB200)",
                       "host_s_per_sequence", kw["host_s_per_sequence"])


    @staticmethod
    def _graph_padding(ctx: EngineContext, setup: TrtllmSetup) -> None:
        """CUDA-graph padding of decode batches where the source states it (`cuda_graph_padding`); said as
        not modelled where the plan's iteration model does not take it (speculation). With attention DP
        (`ep` > 1) the ranks pad together: only when every rank is generation-only, each to the captured
        size at or above the largest rank batch (serving.lockstep)."""
        kw = ctx.kw
        sizes = cuda_graph_padding(ctx.software, ctx.text, max_batch=int(kw["max_batch"]),
                                   max_num_tokens=int(setup.max_num_tokens))
        if sizes is None:
            return
        if ctx.stated.get("spec_method"):
            ctx.choose("not modelled: CUDA-graph padding of decode batches (named in the source) with "
                       "speculative decoding")
            return
        kw["cuda_graph_batch_sizes"] = sizes
        adp = (" under attention DP only when every rank is generation-only, all ranks padded to the size at or "
               "above the largest rank's batch (_get_padded_batch)" if kw.get("ep", 1) > 1 else "")
        ctx.choose(f"CUDA graphs with padding: a decode-only batch runs the graph of the next captured size "
                   f"({', '.join(map(str, sizes[-3:]))}, ...; sizes above min(max_batch_size, max_num_tokens) "
                   f"replaced by that bound, as the executor filters them), the extra slots dummy sequences{adp}",
                   "cuda_graph_batch_sizes", sizes)


#: TensorRT-LLM's Llama decoder layer fuses the RMSNorm's quantize into its TP all-reduce only for models
#: wider than this (`enable_fusion &= config.hidden_size > 4096`, "Disable fusion for small models due to
#: accuracy issues"; tensorrt_llm/_torch/models/modeling_llama.py, LlamaDecoderLayer)
TRTLLM_NORM_QUANT_FUSION_MIN_HIDDEN = 4096


def pytorch_act_quant(model: ModelSpec, acc: AcceleratorSpec, *, weights: str, tp: int) -> tuple[str, str] | None:
    """The PyTorch backend's separate activation-quantize kernels before the FP8 / NVFP4 linears of a dense
    model (plan.ACT_QUANT `norms_act` / `act` / `norms`), with the sentence that says so; None where nothing
    is separate (16-bit or weight-only GEMMs, FP8 with TP > 1) or not modelled (MoE layers: their inputs are
    quantized inside the fused-MoE module; INT8).

    Source (NVIDIA/TensorRT-LLM, tensorrt_llm/_torch, the 2025 releases): `FP8QDQLinearMethod.apply` and
    `NVFP4LinearMethod.apply` (modules/linear.py) run `static_quantize_e4m3_per_tensor` / `fp4_quantize` on
    a 16-bit input; `Attention.forward` hands the output projection's scales to the attention kernel, which
    writes its output quantized (`out_scale`, `out_scale_sf` for NVFP4); `RMSNorm` (modules/rms_norm.py)
    writes 16 bits, and the Llama layer fuses the norm's quantize into the TP all-reduce
    (AllReduceFusionOp.RESIDUAL_RMS_NORM_QUANT_FP8 / _NVFP4) only with TP > 1 and hidden > 4096
    (`PRE_MLP_FUSION`, `POST_MLP_FUSION`, models/modeling_llama.py); `GatedMLP._apply_activation`
    (modules/gated_mlp.py) fuses the quantize into SwiGLU for an FP8 down projection only
    (`swiglu(x, quant_scale=..., quant_type=torch.float8_e4m3fn)`), so an NVFP4 one quantizes SwiGLU's
    16-bit output in `fp4_quantize`."""
    if model.is_moe or weights not in ("fp8", "fp4") or not acc.has_unit(weights):
        return None
    fused_norms = tp > 1 and model.hidden > TRTLLM_NORM_QUANT_FUSION_MIN_HIDDEN
    why = ("TP 1, no all-reduce to fuse it into" if tp == 1
           else f"hidden {model.hidden} <= 4096: the Llama layer's all-reduce fusion is off")
    tail = "; the attention kernel writes the output projection's input quantized (PyTorch backend)"
    if weights == "fp8":
        if fused_norms:
            return None
        return "norms", (f"fp8 activations of the QKV and gate/up projections quantized in kernels of their own "
                         f"after the RMSNorms ({why}); SwiGLU quantizes the down projection's input" + tail)
    if fused_norms:
        return "act", ("fp4 activations: the down projection's input quantized to NVFP4 in a kernel of its own after "
                       "SwiGLU; the norms' quantize is fused into the TP all-reduce" + tail)
    return "norms_act", (f"fp4 activations quantized to NVFP4 in kernels of their own before the QKV, gate/up and "
                         f"down projections ({why}; SwiGLU writes 16 bits)" + tail)


def _stated_policy(text: str, setup: TrtllmSetup) -> TrtllmSetup:
    """The capacity policy and chunked context a source states, over the flow's defaults: MAX_UTILIZATION
    books KV one step at a time (`kv_reservation` incremental, paused requests recompute),
    GUARANTEED_NO_EVICT books prompt + output at admission (full); `enable_chunked_context: false`
    (or true) turns prompt chunking off (on)."""
    notes = []
    pol = _POLICY.search(text)
    if pol:
        incremental = pol.group(1).lower().startswith("max")
        setup = replace(setup, kv_reservation="incremental" if incremental else "full")
        notes.append("MAX_UTILIZATION" if incremental else "GUARANTEED_NO_EVICT")
    ch = _CHUNKED.search(text)
    if ch:
        on = (ch.group(1) or "true").lower() == "true"
        setup = replace(setup, chunked=on)
        notes.append("chunked context " + ("on" if on else "off"))
    if notes:
        setup = replace(setup, flow=setup.flow + " (stated in the source: " + ", ".join(notes) + ")")
    return setup


def kv_fraction_utilization(ctx: EngineContext, setup: TrtllmSetup) -> float:
    """kv_cache_free_gpu_mem_fraction applies to what is left after weights, activations and (C++
    runtime) the runtime and decoder buffers, which hold the logits the activation estimate counts."""
    kw, model = ctx.kw, ctx.model
    w = weight_bytes_per_gpu(model, tp=kw["tp"], pp=kw["pp"], weights=kw["weights"], ep=kw.get("ep", 1))
    rb = runtime_buffer_bytes(model, kw["max_batch"]) if setup.cpp_runtime else 0.0
    logit_rows = 0 if setup.cpp_runtime else kw["max_batch"]  # the C++ runtime's buffers hold the logits
    act = activation_workspace_bytes(model, tp=kw["tp"], tokens=setup.max_num_tokens, act_bytes=2.0,
                                     logit_rows=logit_rows)
    kv = setup.kv_fraction * max(ctx.acc.device_memory_bytes - (w + act + RUNTIME_RESERVED_BYTES + rb), 0.0)
    return ctx.utilization_leaving(kv)
