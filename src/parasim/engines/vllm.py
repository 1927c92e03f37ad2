"""What a vLLM deployment runs with when the source does not say, by release.

* V0 engine (releases before 0.8): prefill-prioritised scheduling without chunked prefill,
  max_num_seqs 256, max_num_batched_tokens max(max_model_len, 2048), CUDA graphs for decode
  batches only (prefill runs eagerly: `plan.eager_layer_dispatch_s`), and from 0.6 asynchronous
  output processing (tokens reported one iteration's host work late).
* V0 with `--enable-chunked-prefill` in the source: the chunked-prefill scheduler (decodes first,
  then prompt chunks: parasim's `sarathi` rule) with max_num_batched_tokens 512, V0's default for
  it ("512 is the default max_num_batched_tokens for chunked prefill", the V0 performance doc);
  a stated --max-num-batched-tokens wins. Prefill still runs eagerly.
* V1 engine (the default from 0.8): chunked prefill always on, with running requests
  (decodes and unfinished chunks) scheduled before new prompts inside the token budget; this
  is parasim's `sarathi` rule. The budget and max_num_seqs come from
  `EngineArgs.get_batch_defaults`: on GPUs with at least 70 GiB (since 0.9, A100s excepted) they
  are 16384 tokens offline (the `LLM` class, `vllm bench throughput`) or 8192 for the API
  server, with 1024 sequences; otherwise 8192 / 2048 tokens and 256 sequences. Piecewise CUDA
  graphs cover mixed batches and detokenisation runs in another process, so no eager-prefill
  floor and no output delay are charged (neither has a published figure for V1).
* V1 with async scheduling (the default from 0.14 on NVIDIA GPUs, or `--async-scheduling` in the
  source): the host's per-iteration work runs one step ahead, under the GPU step, so only the gap
  between two steps' CUDA graphs is charged in series (`host.VLLM_ASYNC_SCHEDULING_GAP_S`) instead
  of V0's `ITERATION_OVERHEAD_S`. The same loop forms each batch one step ahead (`schedule_ahead`):
  with async scheduling `EngineCore` runs `step_with_batch_queue` with a queue of two batches
  (`max_concurrent_batches` = 2): it schedules and submits batch i+1, then blocks on batch i's
  result, and only then reads the input queue for new requests (`run_busy_loop`:
  `_process_input_queue`, then the step). A request that arrives while batch i runs is first seen
  after batch i+1 was formed and joins batch i+2 at the earliest, as in SGLang's overlap scheduler.
  On ROCm the loop is the same (a stated flag forms batches ahead there too) but the host work
  stays in series.
* V1 without async scheduling (0.8 - 0.13, ROCm, or `--no-async-scheduling`): the host's work
  between two steps grows with the scheduled requests (scheduler, persistent-batch update, sampled
  ids, `update_from_output`), in series with the GPU: `host.VLLM_V1_SYNC_HOST_S_PER_SEQ` per
  sampling request per step on top of `ITERATION_OVERHEAD_S` (`serial_host_s_per_sequence`).

Both engines default to gpu_memory_utilization 0.9 and 16-token KV blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from parasim.engines.host import (ITERATION_OVERHEAD_S, RAY_CONTROL_S_PER_TOKEN, VLLM_ASYNC_OUTPUT_DELAY_S,
                                  VLLM_ASYNC_SCHEDULING_GAP_S, VLLM_V1_SYNC_HOST_S_PER_SEQ, eager_layer_dispatch_s)
from parasim.engines.profile import ENGINES, EngineContext, EngineProfile, triton_moe_gemm
from parasim.engines.software import release, release_patch
from parasim.specs.accelerator import AcceleratorSpec

GIB = 1024 ** 3
VLLM_BLOCK = 16
VLLM_GPU_MEMORY_UTILIZATION = 0.90
V0_MAX_NUM_SEQS = 256
#: V0 max_num_batched_tokens = max(max_model_len, this)
V0_MIN_BATCHED_TOKENS = 2048
#: sources that ran the offline `LLM` class rather than the API server
_OFFLINE = re.compile(r"offline|benchmark_throughput|bench throughput|llm class|\bLLM\(", re.IGNORECASE)
#: a 16-bit checkpoint quantized at load time (no input scales: dynamic activation scales)
_ONLINE_QUANT = re.compile(r"--quantization[ =](fp8|int8)", re.IGNORECASE)
_NO_CUSTOM_AR = re.compile(r"disable[-_]custom[-_]all[-_]?reduce", re.IGNORECASE)
_CHUNKED_PREFILL = re.compile(r"enable[-_]chunked[-_]prefill(?!\s*[=:]?\s*false)", re.IGNORECASE)
#: V0's max_num_batched_tokens when chunked prefill is on and the source states none
V0_CHUNKED_BATCHED_TOKENS = 512


@dataclass(frozen=True)
class VllmSetup:
    engine: str  # "v0" | "v1"
    scheduler: str
    max_batch: int  # vLLM's max_num_seqs
    token_budget: int | None  # None: the scheduler's default (V0: max(max_model_len, 2048))
    eager_prefill_layer_s: float | None
    output_delay_s: float
    why: str
    act_quant: str = "fused"  # plan.ACT_QUANT
    custom_allreduce: bool = True
    chunked: bool = False  # V0 with --enable-chunked-prefill
    attention: str = "flash"  # serving.plan.SERVING_ATTENTION: the prefill attention kernel
    cuda_graph_max_batch: int | None = None  # None: decode batches run as CUDA graphs; 0: none captured
    host_s_per_context_token: float = 0.0  # the Ray control plane of releases before 0.2.7 (TP > 1)
    async_scheduling: bool = False  # V1: the host work runs one step ahead of the GPU (_async_scheduling)
    schedule_ahead: bool = False  # V1 with async scheduling: each batch formed while the previous one runs
    serial_host_s_per_sequence: float = 0.0  # V1 without async scheduling: per-request host work between steps

    @property
    def iteration_overhead_s(self) -> float:
        """Host time per iteration in series with the GPU step."""
        return VLLM_ASYNC_SCHEDULING_GAP_S if self.async_scheduling else ITERATION_OVERHEAD_S["vllm"]


#: FlashAttention 3 reached vLLM in 0.7 (vllm-project/vllm PR #12093, "[Kernel] Flash Attention 3
#: Support", merged January 2025; issue #12429: "Flash Attention 3 is now supported in vLLM for
#: Hopper GPUs (SM 9.0)", the default there); earlier releases run FlashAttention-2 (vllm-flash-attn
#: 2.x) on every GPU, which on Hopper is the catalog's `attention_fa2_ratio` of the FA3 rate.
VLLM_FA3_RELEASE = (0, 7)
#: CUDA graphs for decode came in 0.2.6 (PR #1926 "Optimize model execution with CUDA graph", merged
#: 2023-12-17, `--enforce-eager` to turn them off); before it every decode step ran eagerly too.
VLLM_CUDA_GRAPH_RELEASE = (0, 2, 6)
#: 0.2.7 moved rank 0 into the driver and broadcasts inputs by NCCL (PR #2221); before it every TP
#: rank was a Ray actor fed by RPC (`host.RAY_CONTROL_S_PER_TOKEN`).
VLLM_DRIVER_WORKER_RELEASE = (0, 2, 7)
#: vLLM's custom all-reduce kernel came in 0.3.0 (PR #2192, January 2024); earlier TP all-reduces
#: are NCCL's (`tensor_model_parallel_all_reduce` -> torch.distributed.all_reduce).
VLLM_CUSTOM_AR_RELEASE = (0, 3)
#: Async scheduling became V1's default in 0.14.0 (vllm-project/vllm PR #27614 "[Core] Enable async
#: scheduling by default", merged after 0.13; torch-spyre PR #636 turns it back off when moving to 0.14.0,
#: "now enabled by default"). The flag itself came in 0.10 (PR #19970, experimental). VllmConfig leaves it
#: off by default where unsupported: pipeline parallelism (until PRs #32359 / #32618, January 2026; kept
#: off here for every release), speculative decoding other than EAGLE / MTP (PR #31998) and executors
#: without support (Ray, PR #25887). On ROCm the graph launch holds the host thread, so nothing overlaps
#: (vllm-project/vllm issue #43801, MI350X): only NVIDIA parts take the overlapped host model.
VLLM_ASYNC_DEFAULT_RELEASE = (0, 14)
#: vLLM's MXFP4 MoE backend (vllm/model_executor/layers/quantization/mxfp4.py, `get_mxfp4_backend`) on
#: NVIDIA parts without FP4 tensor cores: the Triton (triton_kernels) path only on compute capability
#: 9.0-10.x and with torch >= 2.8, else Marlin, whose MoE kernel needs expert matrices padded to its tile
#: (cost.expert_padding: hidden to 256, intermediate to 128; gpt-oss's 2,880 -> 3,072 x 2,944). On Hopper
#: the published logs show Marlin in 0.10.1 (issue #23278: "leveraging the Marlin kernel", weights
#: 65.97 GiB) and Triton in 0.14.1 (issue #33155: "Using Triton backend", 64.38 GiB), so Hopper takes
#: Marlin up to this release; Ampere and Ada always. A source naming Marlin (VLLM_MXFP4_USE_MARLIN=1) wins.
VLLM_MXFP4_MARLIN_LAST_HOPPER = (0, 10, 1)
#: The Triton path swizzles the MXFP4 experts into triton_kernels' Hopper layouts only with torch >=
#: 2.8.1 (mxfp4_utils.py `_swizzle_mxfp4`; older torch keeps the strided layout), which vLLM first
#: shipped in 0.11.1 (torch 2.9: vllm-project/vllm issue #27228, "merged and will be in the 0.11.1
#: release"; 0.10.2-0.11.0 pin torch 2.8.0). From then on Hopper holds the swizzled, padded scale copy
#: next to the loaded scales and float32 expert biases (cost.expert_padding, `triton_hopper`):
#: issue #33155's 0.14.1 log prints 64.38 GiB where the checkpoint's tensors are 60.8 GiB.
VLLM_MXFP4_TRITON_SWIZZLE_RELEASE = (0, 11, 1)
#: vllm-project/vllm PR #46549 ("[MoE] Free unused MXFP4 scales in OAI Triton Backend", merged
#: 2026-06-24: the loaded scales "are no longer read by the kernel, so they can be dropped") ends the
#: double scales. v0.23.0 came out 2026-06-14 (before the merge) and v0.24.0 on 2026-07-01 (AWS DLC
#: release notes, aws/deep-learning-containers PRs #6244 / #6329); 0.24 is taken as the first release
#: without the copy. From it only the scale padding and the float32 biases remain (0.25 GiB for
#: gpt-oss-120b at TP 1, 0.4 %): not set.
VLLM_MXFP4_TRITON_SCALES_FREED_RELEASE = (0, 24, 0)
_MARLIN = re.compile(r"marlin", re.IGNORECASE)
_ASYNC_OFF = re.compile(r"no[-_]async[-_]scheduling|async[-_]scheduling[\"']?\s*[=:]\s*false", re.IGNORECASE)
_ASYNC_ON = re.compile(r"async[-_]scheduling", re.IGNORECASE)
_RAY = re.compile(r"distributed[-_]executor[-_]backend[\"']?\s*[=:]?\s*[\"']?ray", re.IGNORECASE)
_SPEC = re.compile(r"speculative[-_]config|num[-_]speculative[-_]tokens|speculative[-_]model", re.IGNORECASE)
_EAGLE_MTP = re.compile(r"eagle|mtp", re.IGNORECASE)
_PREFIX_OFF = re.compile(r"no[-_]enable[-_]prefix[-_]caching|enable[-_]prefix[-_]caching[\"']?\s*[=:]\s*false",
                         re.IGNORECASE)
_PREFIX_ON = re.compile(r"enable[-_]prefix[-_]caching", re.IGNORECASE)


#: what async scheduling does to the batches, said once in every sentence that turns it on
_AHEAD = ("; each batch formed while the previous one runs (EngineCore.step_with_batch_queue, 2 batches in "
          "flight), so a request arriving during an iteration joins the one after next")


def _async_scheduling(rel: tuple[int, int] | None, text: str, acc: AcceleratorSpec, pp: int,
                      spec_method: str | None = None) -> tuple[bool, bool, str]:
    """(whether V1's host work overlaps the GPU step, whether each batch is formed one step ahead,
    the sentence): a flag the source states wins; otherwise the release's default and the setups
    it excludes (VLLM_ASYNC_DEFAULT_RELEASE). The two differ only on ROCm with the flag stated:
    the engine loop forms batches ahead there too, but the graph launch keeps the host busy."""
    if _ASYNC_OFF.search(text):
        return False, False, "; --no-async-scheduling in the source: host work in series with every step"
    stated = bool(_ASYNC_ON.search(text))
    if acc.vendor != "nvidia":
        return False, stated, ("; --async-scheduling in the source, but on ROCm the graph launch holds the host "
                               "thread (vllm issue #43801), so host work stays in series" + _AHEAD if stated else "")
    if not stated:
        if rel is None or rel < VLLM_ASYNC_DEFAULT_RELEASE:
            return False, False, ""
        off = ("pipeline parallelism" if pp > 1 else "the Ray executor" if _RAY.search(text)
               else "speculative decoding other than EAGLE/MTP"
               if spec_method in ("draft", "ngram") or (_SPEC.search(text) and not _EAGLE_MTP.search(text))
               else "")
        if off:
            return False, False, f"; async scheduling (default from 0.14) off with {off}: host work in series"
    why = "--async-scheduling in the source" if stated else "the default from 0.14, PR #27614"
    return True, True, (f"; async scheduling ({why}): host work overlapped with the GPU step, "
                        f"{VLLM_ASYNC_SCHEDULING_GAP_S * 1e6:.0f} us between steps in series (PR #11133)" + _AHEAD)


def _mxfp4_moe_padding(ctx: EngineContext) -> None:
    """Routed experts served from an MXFP4 checkpoint through the Marlin backend are padded
    (VLLM_MXFP4_MARLIN_LAST_HOPPER); the choice says so."""
    model, acc, kw = ctx.model, ctx.acc, ctx.kw
    if (not model.is_moe or model.weight_scales != "mxfp4" or kw["weights"] != model.quantized_weights
            or acc.vendor != "nvidia" or ctx.stated.get("expert_padding")):
        return
    rel = release(ctx.software)
    full = None if rel is None else (*rel, release_patch(ctx.software))
    if _MARLIN.search(ctx.text):
        why = "the source names the Marlin backend"
    elif acc.generation in ("ampere", "ada", "volta"):
        why = f"no Triton MXFP4 kernels below compute capability 9.0 ({acc.generation})"
    elif acc.generation == "hopper" and full is not None and full <= VLLM_MXFP4_MARLIN_LAST_HOPPER:
        why = "Hopper before the Triton MXFP4 path (torch 2.8) reached vLLM: Marlin, as issue #23278's 0.10.1 log shows"
    elif (acc.generation == "hopper" and full is not None
          and VLLM_MXFP4_TRITON_SWIZZLE_RELEASE <= full < VLLM_MXFP4_TRITON_SCALES_FREED_RELEASE):
        kw["expert_padding"] = "triton_hopper"
        ctx.choose("MXFP4 routed experts by the Triton (triton_kernels) backend on Hopper, swizzled with torch "
                   ">= 2.8.1 (vLLM 0.11.1 to 0.23): the loaded E8M0 scales stay resident next to their swizzled copy "
                   "(rows padded to 256) and the expert biases are cast to float32 (mxfp4.py "
                   "process_weights_after_loading, triton_kernels hopper_scale.py)", "expert_padding", "triton_hopper")
        return
    else:
        return
    kw["expert_padding"] = "marlin"
    ctx.choose(f"MXFP4 routed experts by the Marlin MoE kernel ({why}): each expert matrix padded to hidden "
               f"x 256, intermediate x 128 (mxfp4.py create_weights)", "expert_padding", "marlin")


def _v02(rel: tuple[int, int], patch: int, tp: int, custom_ar: bool) -> tuple[bool, int | None, float, str]:
    """What the releases before 0.3 lacked: (custom all-reduce, CUDA-graph batch cap, host s per
    context token, the sentence). Each is dated by the PR that added it (constants above)."""
    full = (*rel, patch)
    notes = ""
    if rel < VLLM_CUSTOM_AR_RELEASE and custom_ar and tp > 1:
        custom_ar = False
        notes += "; TP all-reduces through NCCL (vLLM's custom all-reduce came in 0.3.0)"
    graphs = None
    if full < VLLM_CUDA_GRAPH_RELEASE:
        graphs = 0
        notes += "; no CUDA graphs (added in 0.2.6)"
    ray = 0.0
    if full < VLLM_DRIVER_WORKER_RELEASE and tp > 1:
        ray = tp * RAY_CONTROL_S_PER_TOKEN
        notes += (f"; {tp} Ray workers sent every scheduled sequence's token ids each step (driver worker and "
                  f"NCCL broadcast came in 0.2.7): {ray * 1e9:.0f} ns per token of context per step")
    return custom_ar, graphs, ray, notes


def vllm_setup(software: str, source: str, acc: AcceleratorSpec, *, tp: int, weights: str = "bf16",
               pp: int = 1, spec_method: str | None = None) -> VllmSetup:
    rel = release(software)
    text = source + " " + software
    custom_ar = not _NO_CUSTOM_AR.search(text)
    flags = "" if custom_ar else "; custom all-reduce disabled in the source: TP all-reduces through NCCL"
    if rel is not None and rel < (0, 8):
        delay = VLLM_ASYNC_OUTPUT_DELAY_S if rel >= (0, 6) else 0.0
        act_quant = "fused"
        if weights in ("fp8", "int8"):
            # V0's Fp8LinearMethod quantizes each linear's input in separate kernels (plan.ACT_QUANT)
            act_quant = "dynamic" if _ONLINE_QUANT.search(text) else "static"
            flags += (f"; {weights} activations quantized before each linear in separate kernels ({act_quant} "
                      "scale: " + ("--quantization on a 16-bit checkpoint" if act_quant == "dynamic"
                                   else "a pre-quantized checkpoint's input scales") + ")")
        custom_ar, graphs, ray, old = _v02(rel, release_patch(software), tp, custom_ar)
        flags += old
        eager = eager_layer_dispatch_s(tp, act_quant, custom_ar)
        chunked = bool(_CHUNKED_PREFILL.search(text))
        attention = "flash2" if rel < VLLM_FA3_RELEASE else "flash"
        if attention == "flash2":
            flags += ("; prefill attention by FlashAttention-2 (vllm-flash-attn 2.x; FA3 came to vLLM in 0.7): "
                      "on Hopper the catalog's FA2-generation rate")
        policy = (f"--enable-chunked-prefill in the source: decodes first, then prompt chunks, "
                  f"max_num_seqs {V0_MAX_NUM_SEQS}, max_num_batched_tokens {V0_CHUNKED_BATCHED_TOKENS}" if chunked else
                  f"prefill-prioritised, no chunked prefill, max_num_seqs {V0_MAX_NUM_SEQS}, "
                  f"max_num_batched_tokens max(max_model_len, 2048)")
        return VllmSetup("v0", "sarathi" if chunked else "vllm", V0_MAX_NUM_SEQS,
                         V0_CHUNKED_BATCHED_TOKENS if chunked else None, eager, delay,
                         f"vLLM {rel[0]}.{rel[1]} (V0 engine) defaults: {policy}; "
                         + ("every forward" if graphs == 0 else "prefill") + " runs eagerly"
                         + ("" if graphs == 0 else " (CUDA graphs only for decode)")
                         + f": at least {eager * 1e3:.2f} ms of host dispatch per layer"
                         + (f"; async output processing (default since 0.6.0): tokens reported "
                            f"{delay * 1e3:.1f} ms after their iteration, inside the next one" if delay else "") + flags,
                         act_quant, custom_ar, chunked, attention, graphs, ray)
    offline = bool(_OFFLINE.search(source + " " + software))
    large = acc.hbm_bytes >= 70 * GIB and not (rel is not None and rel >= (0, 9) and acc.id.startswith("a100"))
    if large:
        budget, seqs = (16384 if offline else 8192), 1024
    else:
        budget, seqs = (8192 if offline else 2048), 256
    ver = f"{rel[0]}.{rel[1]}" if rel else "(release not named: the V1 engine)"
    overlap, ahead, note = _async_scheduling(rel, text, acc, pp, spec_method)
    flags += note
    serial = 0.0 if overlap else VLLM_V1_SYNC_HOST_S_PER_SEQ
    return VllmSetup("v1", "sarathi", seqs, budget, None, 0.0,
                     f"vLLM {ver} V1 engine defaults ({'offline LLM class' if offline else 'API server'}, "
                     f"{'>= 70 GiB GPU' if large else 'smaller GPU or A100'}): chunked prefill with running requests "
                     f"first, max_num_batched_tokens {budget}, max_num_seqs {seqs}; piecewise CUDA graphs (no eager "
                     f"prefill floor)" + flags, custom_allreduce=custom_ar, async_scheduling=overlap,
                     schedule_ahead=ahead, serial_host_s_per_sequence=serial)


_FI_SAMPLER = re.compile(r"VLLM_USE_FLASHINFER_SAMPLER\s*=\s*([01])\b")
_FI_MISSING = re.compile(r"FlashInfer is not available", re.IGNORECASE)
#: the release that made FlashInfer's top-k/top-p sampler opt-in (PR #26859, 2025-10-14)
FLASHINFER_SAMPLER_OPT_IN = (0, 11, 1)


def _sampler_path(software: str, acc: AcceleratorSpec, text: str = "") -> str:
    """The V1 sampler path of the start-up profile (`cost.memory.VLLM_V1_SAMPLER_PEAK_BYTES`):
    a VLLM_USE_FLASHINFER_SAMPLER=0/1 or vLLM's "FlashInfer is not available" warning in the
    source decides on NVIDIA GPUs; else FlashInfer's before FLASHINFER_SAMPLER_OPT_IN (used
    whenever flashinfer is installed, as in vLLM's Docker image), PyTorch's native one from it on,
    on other vendors' GPUs and when the release is not named (the current defaults)."""
    if acc.vendor == "nvidia" and (m := _FI_SAMPLER.search(text)):
        return "flashinfer" if m.group(1) == "1" else "native"
    if acc.vendor == "nvidia" and _FI_MISSING.search(text):
        return "native"
    rel = release(software)
    if rel is None or acc.vendor != "nvidia" or (*rel, release_patch(software)) >= FLASHINFER_SAMPLER_OPT_IN:
        return "native"
    return "flashinfer"


_GPU_UTIL = re.compile(r"gpu[-_]memory[-_]utilization\s*[=:]?\s*([0-9.]+)")
_MAX_MODEL_LEN = re.compile(r"max[-_]model[-_]len\s*[=:]?\s*(\d+)", re.IGNORECASE)
_MAX_BATCHED = re.compile(r"max[-_]num[-_]batched[-_]tokens\s*[=:]?\s*(\d+)", re.IGNORECASE)
_MAX_SEQS = re.compile(r"max[-_]num[-_]seqs\s*[=:]?\s*(\d+)", re.IGNORECASE)
_EP = re.compile(r"enable[-_]expert[-_]parallel", re.IGNORECASE)
_DP = re.compile(r"(?:--data[-_]parallel[-_]size|-dp)\s*[=:]?\s*(\d+)", re.IGNORECASE)


@ENGINES.register
class VllmProfile(EngineProfile):
    """vLLM: the V0 or V1 engine defaults of the named release (`vllm_setup`), then the engine
    limits the source states. vLLM's TPOT histogram is the per-output-token mean (every
    inter-token gap), so a source that does not say is read that way."""

    name = "vllm"
    pattern = re.compile(r"vllm", re.IGNORECASE)
    releases = ((0, 2), (0, 20))
    fp8_cache_with_fp8_weights = False
    tpot_basis = "token"

    @classmethod
    def attention_dp(cls, text: str, tp: int, software: str = "") -> tuple[int, int] | None:
        # `--data-parallel-size N --enable-expert-parallel` (TP 1 per rank)
        m = _DP.search(text) if _EP.search(text) else None
        return (int(m.group(1)), tp * int(m.group(1))) if m else None

    def apply(self, ctx: EngineContext) -> None:
        kw, text = ctx.kw, ctx.text
        m = _GPU_UTIL.search(text)
        util = float(m.group(1)) if m else VLLM_GPU_MEMORY_UTILIZATION
        setup = vllm_setup(ctx.software, ctx.source, ctx.acc, tp=kw["tp"], weights=kw["weights"], pp=kw["pp"],
                           spec_method=ctx.stated.get("spec_method"))
        kw.update(scheduler=ctx.scheduler(setup.scheduler), block_size=VLLM_BLOCK,
                  gpu_memory_utilization=util, iteration_overhead_s=setup.iteration_overhead_s,
                  eager_prefill_layer_s=setup.eager_prefill_layer_s, output_delay_s=setup.output_delay_s,
                  token_budget=setup.token_budget, act_quant=setup.act_quant, custom_allreduce=setup.custom_allreduce,
                  max_batch=ctx.stated.get("max_batch") or setup.max_batch, attention=setup.attention,
                  cuda_graph_max_batch=setup.cuda_graph_max_batch, schedule_ahead=setup.schedule_ahead)
        if setup.host_s_per_context_token:
            kw["host_s_per_context_token"] = setup.host_s_per_context_token
        if setup.serial_host_s_per_sequence:
            kw["serial_host_s_per_sequence"] = setup.serial_host_s_per_sequence
            ctx.choose(f"V1 host work in series with every step: {setup.iteration_overhead_s * 1e3:.1f} ms plus "
                       f"{setup.serial_host_s_per_sequence * 1e6:.1f} us per sampling request (the synchronous gap "
                       "between two decode steps, vllm issue #10634: 5-6 ms at batch 256)",
                       "serial_host_s_per_sequence", setup.serial_host_s_per_sequence)
        ctx.choose(f"{setup.why}; block {VLLM_BLOCK}, gpu_memory_utilization {util}"
                   + ("" if m else " (default; not in the source)"), "gpu_memory_utilization", util)
        if setup.engine == "v1":
            kw["sampler_profile"] = path = _sampler_path(ctx.software, ctx.acc, text)
            ctx.choose(f"V1 start-up profile: the KV pool is what is left after a dummy sampler pass over "
                       f"min(max_num_seqs, max_num_batched_tokens) rows of the whole vocabulary on the {path} "
                       "top-k/top-p path (gpu_model_runner._dummy_sampler_run)", "sampler_profile", path)
        triton_moe_gemm(ctx)
        _mxfp4_moe_padding(ctx)
        if setup.engine == "v0" and not setup.chunked:
            max_len, why = _max_model_len(ctx)
            kw["token_budget"] = max(V0_MIN_BATCHED_TOKENS, max_len)
            ctx.choose(f"max_model_len {max_len} ({why}), so max_num_batched_tokens {kw['token_budget']}",
                       "token_budget", kw["token_budget"])
        # engine limits the source states win over the release's defaults
        if mt := _MAX_BATCHED.search(text):
            kw["token_budget"] = int(mt.group(1))
            ctx.choose(f"max_num_batched_tokens {kw['token_budget']} (from the source)", "token_budget", kw["token_budget"])
        if not ctx.stated.get("max_batch") and (ms := _MAX_SEQS.search(text)):
            kw["max_batch"] = int(ms.group(1))
            ctx.choose(f"max_num_seqs {kw['max_batch']} (from the source)", "max_batch", kw["max_batch"])
        if not ctx.stated.get("kv_dtype"):
            kw["kv_dtype"] = ctx.auto_kv_dtype("vLLM")
        _hybrid_kv(ctx, setup.engine)
        _prefix_cache(ctx, setup.engine)


def _prefix_cache(ctx: EngineContext, engine: str) -> None:
    """The automatic prefix cache for a workload whose requests share prefixes (trace prefix ids):
    on in the V1 engine unless the source turns it off (`CacheConfig.enable_prefix_caching = True`,
    vllm/config/cache.py; `EngineArgs` keeps it for every generative model,
    `ModelConfig.is_prefix_caching_supported`; read at inference-sim/vllm f6ec81c, the v0.15.1 image's
    Python), off in V0 unless the source passes --enable-prefix-caching. A workload without shared
    prefixes leaves the plan as it is (nothing to hit)."""
    if ctx.stated.get("prefix_cache") is not None:
        return
    text = ctx.text
    if _PREFIX_OFF.search(text):
        return
    on_flag = bool(_PREFIX_ON.search(text))
    if engine != "v1" and not on_flag:
        return
    wl = ctx.workload()
    if wl is None or getattr(wl, "prefix_id", None) is None or not bool((wl.prefix_id >= 0).any()):
        return  # no requests known here (a plan built without its workload), or none sharing a prefix
    ctx.kw["prefix_cache"] = True
    ctx.choose("prefix cache on (" + ("--enable-prefix-caching in the source" if on_flag else "the V1 engine's default")
               + "): a request whose prefix a finished prefill cached prefills only what follows the cached whole "
               "16-token blocks (at least its last token)", "prefix_cache", True)


#: the first release whose V1 engine keeps interleaved sliding-window layers to their window: the
#: hybrid KV cache manager (docs/design/hybrid_kv_cache_manager.md; the v0.9.0 API reference's
#: FullAttentionSpec already describes the case "when hybrid allocator is disabled")
VLLM_HYBRID_KV_RELEASE = (0, 9)


def _hybrid_kv(ctx: EngineContext, engine: str) -> None:
    """A model that mixes sliding-window and full-attention layers (gpt-oss, Gemma 2 / 3): vLLM V1's
    hybrid KV cache manager gives each kind its own KV cache groups and frees a sliding group's
    blocks outside the window (SlidingWindowManager), so a request's sliding layers hold about the
    window, not the context (sliding_kv window). V0, and V1 before the manager, allocated them
    as full attention (FullAttentionSpec's sliding_window note). A model whose every layer slides
    (Mistral-7B v0.1) keeps its full accounting here (not modelled: V1 frees its blocks outside
    the window too, vLLM PR #14097)."""
    model, kw = ctx.model, ctx.kw
    if not (model.windowed_layers and model.full_attention_layers) or ctx.stated.get("sliding_kv"):
        return
    rel = release(ctx.software)
    if engine != "v1" or (rel is not None and rel < VLLM_HYBRID_KV_RELEASE):
        return
    kw["sliding_kv"] = "window"
    ctx.choose(f"{model.name}'s {model.windowed_layers} sliding-window layers hold their {model.sliding_window}-token "
               "window only (V1 hybrid KV cache manager: a sliding group frees the blocks before the window); "
               "the pool is counted in blocks of the full-attention layers", "sliding_kv", "window")


def _max_model_len(ctx: EngineContext) -> tuple[int, str]:
    """vLLM's max_model_len: the source's --max-model-len, else the model's context length, raised
    to the longest request the run served (a longer one would have been refused)."""
    m = _MAX_MODEL_LEN.search(ctx.text)
    if m:
        return int(m.group(1)), "--max-model-len in the source"
    wl = ctx.workload()
    longest = int((wl.prompt_tokens + wl.output_tokens).max()) if len(wl) else 0
    if longest > ctx.model.max_seq_len:
        return longest, "not in the source; at least the longest request served"
    return ctx.model.max_seq_len, "not in the source; the model's context length"
