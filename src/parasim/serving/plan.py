"""How one serving deployment is laid out and run: the `ServingPlan`.

Plain, frozen data. Every field has the same name as its `parasim serve` flag (with underscores),
so a config file, the CLI and the planner all speak the same keys. `from_mapping` rejects unknown
keys and bad values naming the field; `to_mapping` round-trips.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from parasim.cost.dtypes import KV_PRECISIONS, WEIGHT_PRECISIONS
from parasim.cost.expert_padding import EXPERT_PADDING
from parasim.cost.memory import SAMPLER_PROFILES
from parasim.cost.moe_tile import MOE_GEMMS
from parasim.cost.sampler import SAMPLERS
from parasim.errors import InputError
from parasim.serving.routers import ROUTERS
from parasim.serving.schedulers import SCHEDULERS
from parasim.specs import edge
from parasim.specs.model import ModelSpec

#: Host-side work per engine iteration that does not overlap the GPU (batch formation, input
#: preparation, sampling bookkeeping, launch gaps) when no engine profile names its own
#: (`parasim.engines.host.ITERATION_OVERHEAD_S`); a plan may override it with `iteration_overhead_s`.
DEFAULT_ITERATION_OVERHEAD_S = 1.0e-3


#: W8A8 GEMMs (fp8/int8 weights and activations) take an 8-bit input, so the 16-bit activation is
#: quantized first. `fused`: inside the kernel that produces it (norm, activation, attention
#: output), at no extra cost; this is parasim's default. vLLM's V0 `Fp8LinearMethod` instead runs
#: `ops.scaled_fp8_quant` as separate kernels before each of a layer's four linears (QKV, output,
#: gate/up, down): `static` (the checkpoint carries the input scale) is one quantize kernel, one read
#: and one 8-bit write; `dynamic` (`--quantization fp8` on a 16-bit checkpoint: per-tensor scale
#: found at run time) zero-fills the scale, max-reduces the input and then quantizes it: three
#: kernels and two reads. Mode -> (kernels, reads of the 16-bit input) per quantized GEMM input.
#: TensorRT-LLM's PyTorch backend (2026-12-08, docs/serving.md "Separate activation quantization in
#: TensorRT-LLM's PyTorch backend") quantizes only some inputs separately, one static kernel each
#: (`static_quantize_e4m3_per_tensor` / `fp4_quantize` in the FP8 / NVFP4 `Linear.apply` when its input
#: is still 16-bit): its attention kernel writes the output projection's input already quantized
#: (`out_scale` / `out_scale_sf`); the RMSNorms write 16 bits unless a TP all-reduce fused with the norm
#: quantizes (AllReduceFusionOp.RESIDUAL_RMS_NORM_QUANT_FP8 / _NVFP4); SwiGLU writes 16 bits before an
#: NVFP4 down projection (an FP8 one gets SwiGLU with the quantize fused). `norms_act`: the QKV, gate/up
#: and down inputs (NVFP4, no fused all-reduce: TP 1); `act`: the down input only (NVFP4, TP > 1);
#: `norms`: the QKV and gate/up inputs (FP8, TP 1).
ACT_QUANT = {"fused": (0, 0), "static": (1, 1), "dynamic": (3, 2), "norms_act": (1, 1), "act": (1, 1),
             "norms": (1, 1)}
#: quantized GEMM inputs per decoder layer: QKV, attention output, gate/up, down
ACT_QUANT_INPUTS_PER_LAYER = 4
#: which of those inputs each mode quantizes in kernels of its own
ACT_QUANT_SEPARATE = {"fused": (), "static": ("qkv", "o", "gate_up", "down"), "dynamic": ("qkv", "o", "gate_up", "down"),
                      "norms_act": ("qkv", "gate_up", "down"), "act": ("down",), "norms": ("qkv", "gate_up")}


#: plan fields that only the disaggregated scheduler reads
DISAGG_FIELDS = ("prefill_gpus", "prefill_tp", "decode_gpus", "decode_tp", "prefill_pp", "decode_pp")
#: per-phase PP fields: left out of `to_mapping` when unset, so plans without them map as before
_PHASE_PP = ("prefill_pp", "decode_pp")
#: fields `to_mapping` leaves out at their default, so results made before they existed stay byte-identical
_OMITTED_AT_DEFAULT = frozenset((*_PHASE_PP, "host_s_per_sequence", "serial_host_s_per_sequence", "frontend_s_per_request",
                                 "decode_attention", "moe_gemm", "expert_padding", "attention_window", "sliding_kv",
                                 "cuda_graph_batch_sizes", "sampler"))
#: most CUDA-graph batch sizes a plan may list (TensorRT-LLM's finest published set, tech blog 20's "+8", has 259)
MAX_CUDA_GRAPH_SIZES = 1024
KV_RESERVATION = ("incremental", "full", "estimated")
#: prefill attention kernels: the catalog's best fused kernel (`efficiency.attention`: FA3 on Hopper)
#: or a FlashAttention-2-generation one (`efficiency.attention_fa2_ratio` of its rate)
SERVING_ATTENTION = ("flash", "flash2")
#: decode attention kernels: `grouped` reads each KV head's cache once for its whole query group
#: (XQA, FlashDecoding, FlashInfer); `per_query_head` runs one query head per thread block, so a
#: GQA model's KV head is read once per query head of its group (TensorRT-LLM's masked MHA; engines.trtllm)
DECODE_ATTENTION = ("grouped", "per_query_head")
#: what the engine's attention kernels do with a model's sliding-window layers (ModelSpec.sliding_window):
#: `model` applies each layer's window (vLLM's and SGLang's FlashAttention / FlashInfer backends,
#: TensorRT-LLM's PyTorch backend); `full` attends every layer to the whole context (a TensorRT
#: engine run without `max_attention_window_size`, whose default is the engine's max sequence length)
ATTENTION_WINDOW = ("model", "full")
#: how the engine stores a model's sliding-window layers' KV (cost.memory.sliding_kv_share,
#: serving.kvcache.window_blocks): `full` caches every token in every layer; `window` keeps the
#: window only, per request (vLLM V1's hybrid KV cache manager); `pool` sizes a separate SWA pool
#: at a fixed share of the full pool's tokens (SGLang's hybrid SWA memory, swa_full_tokens_ratio)
SLIDING_KV = ("full", "window", "pool")


#: ServingPlan field -> its kind, checked first by `_check_field` (a trailing ? allows null)
_FIELD_KINDS = {
    **dict.fromkeys(("tp", "pp", "replicas", "block_size", "ep"), "count"),
    **dict.fromkeys(("token_budget", "max_batch", "prefill_gpus", "prefill_tp", "decode_gpus", "decode_tp",
                     "max_queued", "prefill_pp", "decode_pp"), "count?"),
    "cuda_graph_max_batch": "size?",  # 0: no CUDA graph at all (every decode step eager)
    **dict.fromkeys(("scheduler", "router", "kv_reservation", "act_quant", "attention", "sampler_profile"),
                    "text"),
    **dict.fromkeys(("weights", "kv_dtype"), "text?"),
    "custom_allreduce": "bool", "schedule_ahead": "bool", "prefix_cache": "bool?", "gpu_memory_utilization": "share",
    "output_delay_s": "seconds", "host_s_per_context_token": "seconds", "host_s_per_sequence": "seconds", "serial_host_s_per_sequence": "seconds", "frontend_s_per_request": "seconds", "iteration_overhead_s": "seconds?", "eager_prefill_layer_s": "seconds?",
    "spec_method": "text?", "num_speculative_tokens": "count?", "spec_acceptance": "share?", "draft_model": "text?",
    "autoscale_max": "count?", "autoscale_target": "seconds?", "autoscale_interval_s": "seconds",
    "autoscale_startup_s": "seconds?", "autoscale_down_delay_s": "seconds",
    "overlap": "text", "nano_batches": "count?", "context_pass": "text",
    "migration": "text?", "migration_interval_s": "seconds?", "migrate_out_threshold": "number?",
    "decode_attention": "text",
    "attention_window": "text",
    "sliding_kv": "text",
    "moe_gemm": "text",
    "expert_padding": "text",
    "sampler": "text",
}
#: plan fields that only autoscaling reads (serving.autoscale)
AUTOSCALE_FIELDS = ("autoscale_target", "autoscale_startup_s")
#: plan fields that only live migration reads (serving.migration)
MIGRATION_FIELDS = ("migration_interval_s", "migrate_out_threshold")
#: live-migration policies (serving.migration)
MIGRATION_POLICIES = ("llumnix",)
#: plan fields that only speculative decoding reads (serving.speculative)
SPEC_FIELDS = ("num_speculative_tokens", "spec_acceptance", "draft_model")
#: drafters: a smaller model, an EAGLE-style head, prompt n-gram lookup (serving.speculative)
SPEC_METHODS = ("draft", "eagle", "ngram")
#: most draft tokens per step (vLLM's configs use 1-8; past ~16 the expected gain is flat for any a < 1)
MAX_SPECULATIVE_TOKENS = 16
#: intra-device overlap of an iteration's operations (serving.overlap): none | nanoflow (NanoFlow's nano-batches)
OVERLAP_MODES = ("none", "nanoflow")
#: how an iteration runs the prompts it holds (serving.context_pass): joint = in one forward with the decodes
#: (every engine since late 2023); separate = a forward of its own for the prompts less each one's last token,
#: then one decode forward for the running sequences and those last tokens (TurboMind up to v0.1.0a1)
CONTEXT_PASSES = ("joint", "separate")
#: nano-batches per iteration when not given: NanoFlow's 70B pipeline splits the QKV GEMM and decode attention
#: into four nano-operations (Zhu et al. 2024, Fig. 6)
DEFAULT_NANO_BATCHES = 4
#: most nano-batches: each one re-reads the weights and pays its launches; NanoFlow uses 2-4
MAX_NANO_BATCHES = 16
#: Longest host time a plan may state per iteration or token report (an hour: past any engine)
MAX_PLAN_SECONDS = 3600.0


def _check_field(name: str, kind: str, value: Any) -> None:
    """One plan field by its kind: whole numbers >= 1 (a size: >= 0), non-empty strings, strict booleans, a share
    in (0, 1], finite seconds in [0, MAX_PLAN_SECONDS]; booleans and strings are never numbers."""
    if kind.endswith("?"):
        if value is None:
            return
        kind = kind[:-1]
    if kind == "count":
        edge.positive_int(name, value)
    elif kind == "size":
        edge.number(name, value, integer=True, lo=0)
    elif kind == "text":
        edge.text_value(name, value)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise InputError(name, f"must be true or false, got {value!r}")
    elif kind == "share":
        edge.number(name, value, lo=0, lo_open=True, hi=1)
    elif kind == "number":
        edge.number(name, value, lo=0, lo_open=True, hi=1e6)
    else:
        edge.number(name, value, lo=0, hi=MAX_PLAN_SECONDS)


@dataclass(frozen=True, kw_only=True)
class ServingPlan:
    tp: int = 1
    pp: int = 1
    replicas: int = 1
    scheduler: str = "sarathi"
    token_budget: int | None = None  # tokens per iteration (chunk size); None = the scheduler's default
    max_batch: int | None = None  # running sequences per engine; None = 256
    block_size: int = 16  # tokens per KV block
    weights: str | None = None  # None = the model's own (ModelSpec.native_weights; `resolved`)
    kv_dtype: str | None = None  # None = the model's dtype (ModelSpec.serving_dtype): an 8-bit cache is asked for
    prefix_cache: bool | None = None  # None = the scheduler's default (batchllm: on; the others: off)
    router: str = "round_robin"
    gpu_memory_utilization: float = 0.9  # share of HBM the engine may use (weights + activations + KV)
    kv_reservation: str = "incremental"  # incremental (vLLM: grow, preempt when full) | full (reserve prompt+output)
    # | estimated (SGLang: grow, but admit only beside the running requests' estimated output; serving.output_estimate)
    iteration_overhead_s: float | None = None  # None = DEFAULT_ITERATION_OVERHEAD_S
    eager_prefill_layer_s: float | None = None  # host dispatch per layer of an eager prefill (None = graphs/overlapped)
    cuda_graph_max_batch: int | None = None  # decode batches above this run eagerly too (None = graphs cover all; 0 = none)
    # host time per iteration per token of every scheduled sequence's history (prompt + output so far):
    # an engine that ships each sequence's token ids to its workers every step (vLLM < 0.2.7 over Ray)
    host_s_per_context_token: float = 0.0
    # host time per iteration per scheduled sequence that the GPU waits for beyond its own work: a
    # Python executor overlapped with the GPU (TensorRT-LLM's PyTorch backend; engines.host)
    host_s_per_sequence: float = 0.0
    # host time per iteration per sampling sequence in series with the GPU step (added to it, not
    # overlapped): an engine whose per-request Python work runs between two steps (vLLM V1 without
    # async scheduling; engines.host.VLLM_V1_SYNC_HOST_S_PER_SEQ)
    serial_host_s_per_sequence: float = 0.0
    # API-server CPU time per request before the engine sees it (template, tokenizer, hand-off), shared
    # among the requests in the server's event loop (serving.frontend: processor sharing); 0 = none
    frontend_s_per_request: float = 0.0
    # expert parallelism across the replicas (DP attention, SGLang --enable-dp-attention / vLLM DP + EP):
    # each replica (tp=1) attends over its own batch; routed experts are spread over `ep` replicas
    ep: int = 1
    output_delay_s: float = 0.0  # iteration end -> its tokens reported (vLLM >= 0.6 async output processing)
    # the engine forms batch i+1 while batch i runs (SGLang >= 0.4's overlap scheduler, vLLM's async
    # scheduling, TensorRT-LLM's PyTorch overlap scheduler; engines.*): a request that arrives during
    # batch i can join batch i+2 at the earliest (serving.engine)
    schedule_ahead: bool = False
    # the KV pool is what the engine's start-up profile leaves, and that profile ends with a dummy
    # sampler pass over max_batch rows of the whole vocabulary on this sampler path (vLLM V1:
    # native | flashinfer; none = no such pass; cost.memory.SAMPLER_PROFILES, kv_budget)
    sampler_profile: str = "none"
    act_quant: str = "fused"  # fp8/int8 weights: how activations are quantized before a GEMM (ACT_QUANT)
    custom_allreduce: bool = True  # TP all-reduce by the engine's one/two-shot kernel where it applies; off: NCCL
    attention: str = "flash"  # prefill attention kernel: flash (the catalog's best) | flash2 (FA2-generation)
    prefill_gpus: int | None = None  # disagg: GPUs of the prefill pool (None = half)
    prefill_tp: int | None = None  # disagg: TP inside the prefill pool (None = tp)
    decode_gpus: int | None = None  # disagg: GPUs of the decode pool (None = the rest)
    decode_tp: int | None = None  # disagg: TP inside the decode pool (None = tp)
    prefill_pp: int | None = None  # disagg: PP stages of a prefill instance (None = pp)
    decode_pp: int | None = None  # disagg: PP stages of a decode instance (None = pp)
    # admission control: a request that finds this many requests queued (not yet running) at its
    # engine is shed (refused, as a gateway's 429) instead of queued; None = queue without bound
    max_queued: int | None = None
    # autoscaling (serving.autoscale): `replicas` is the minimum, up to autoscale_max replicas, aiming at
    # autoscale_target requests in flight per replica, looked at every autoscale_interval_s (HPA's 15 s),
    # a new replica routable autoscale_startup_s after it is asked for, scale-down held for
    # autoscale_down_delay_s (HPA's 300 s stabilization window)
    autoscale_max: int | None = None
    autoscale_target: float | None = None
    autoscale_interval_s: float = 15.0
    autoscale_startup_s: float | None = None
    autoscale_down_delay_s: float = 300.0
    # speculative decoding (serving.speculative): the drafter, K draft tokens per step (vLLM's
    # num_speculative_tokens), the chance a draft token is accepted, the draft model for `draft`
    spec_method: str | None = None
    num_speculative_tokens: int | None = None
    spec_acceptance: float | None = None
    draft_model: str | None = None
    # intra-device overlap (serving.overlap): nanoflow splits each iteration into nano_batches
    # (None = DEFAULT_NANO_BATCHES) whose compute-, memory- and network-bound operations share the GPU
    overlap: str = "none"
    nano_batches: int | None = None
    # prompts in a forward of their own before the iteration's decode forward (serving.context_pass)
    context_pass: str = "joint"
    # live migration between replicas (serving.migration): the policy (llumnix), the seconds between
    # its pairings (None = Llumnix's 0.05 s polling interval), and the freeness (free KV blocks per
    # request) below which an instance migrates out (None = Llumnix's default 3)
    migration: str | None = None
    migration_interval_s: float | None = None
    migrate_out_threshold: float | None = None
    # decode attention kernel (DECODE_ATTENTION): grouped reads each KV head once per step,
    # per_query_head once per query head of its group (TensorRT-LLM's masked MHA; engines.trtllm)
    decode_attention: str = "grouped"
    # sliding-window layers (ATTENTION_WINDOW): model = the window applies, full = whole context
    attention_window: str = "model"
    # sliding-window layers' KV (SLIDING_KV): full = every token, window = vLLM's hybrid manager,
    # pool = SGLang's SWA pool
    sliding_kv: str = "full"
    # grouped expert GEMM kernel family (cost.moe_tile.MOE_GEMMS): its row tile by the batch's size;
    # triton: vLLM's / SGLang's fused_moe (engines.vllm, engines.sglang)
    moe_gemm: str = "cutlass"
    # routed-expert weights padded to the MoE kernel's tile (cost.expert_padding.EXPERT_PADDING):
    # none = the checkpoint's shape; marlin = vLLM's MXFP4 Marlin layout (engines.vllm)
    expert_padding: str = "none"
    # the engine's top-k / top-p sampler on every sampled row (cost.sampler.SAMPLERS): none = greedy
    # or a sorting-free kernel; sort_top_p / sort_top_k_top_p = a PyTorch sort of the row's whole
    # vocabulary (vLLM V1's forward_native) for requests that sample with top-p (and top-k)
    sampler: str = "none"
    # CUDA-graph padding (TensorRT-LLM `cuda_graph_config: enable_padding: true` with its `batch_sizes`):
    # the captured batch sizes, ascending; a decode-only iteration of n sequences, n <= the largest,
    # runs the graph of the smallest size >= n, its extra slots dummy sequences of one cached token
    # (serving.itercost). None = no padding (every decode batch at its own size)
    cuda_graph_batch_sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name, kind in _FIELD_KINDS.items():
            value = getattr(self, name)
            if kind.startswith("count") and isinstance(value, float):
                raise InputError(name, f"must be an integer, got {value!r}")
            _check_field(name, kind, value)
        SCHEDULERS.get(self.scheduler)
        ROUTERS.get(self.router)
        if self.weights is not None and self.weights not in WEIGHT_PRECISIONS:
            raise InputError("weights", f"'{self.weights}' is not allowed; choose one of {', '.join(WEIGHT_PRECISIONS)}")
        if self.kv_dtype is not None and self.kv_dtype not in KV_PRECISIONS:
            raise InputError("kv_dtype", f"'{self.kv_dtype}' is not allowed; choose one of {', '.join(KV_PRECISIONS)}")
        if self.kv_reservation not in KV_RESERVATION:
            raise InputError("kv_reservation", f"'{self.kv_reservation}' is not one of {', '.join(KV_RESERVATION)}")
        if self.act_quant not in ACT_QUANT:
            raise InputError("act_quant", f"unknown mode '{self.act_quant}'; allowed: {', '.join(ACT_QUANT)}")
        if self.attention not in SERVING_ATTENTION:
            raise InputError("attention", f"'{self.attention}' is not one of {', '.join(SERVING_ATTENTION)}")
        if self.decode_attention not in DECODE_ATTENTION:
            raise InputError("decode_attention",
                             f"'{self.decode_attention}' is not one of {', '.join(DECODE_ATTENTION)}")
        if self.attention_window not in ATTENTION_WINDOW:
            raise InputError("attention_window",
                             f"'{self.attention_window}' is not one of {', '.join(ATTENTION_WINDOW)}")
        if self.sliding_kv not in SLIDING_KV:
            raise InputError("sliding_kv", f"'{self.sliding_kv}' is not one of {', '.join(SLIDING_KV)}")
        if self.sampler_profile not in SAMPLER_PROFILES:
            raise InputError("sampler_profile", f"'{self.sampler_profile}' is not one of {', '.join(SAMPLER_PROFILES)}")
        if self.sliding_kv == "window" and self.migration is not None:
            raise InputError("sliding_kv", "sliding_kv=window books each request's window blocks at admission; "
                                           "live migration does not move them (not modelled together)")
        if self.moe_gemm not in MOE_GEMMS:
            raise InputError("moe_gemm", f"'{self.moe_gemm}' is not one of {', '.join(MOE_GEMMS)}")
        if self.expert_padding not in EXPERT_PADDING:
            raise InputError("expert_padding", f"'{self.expert_padding}' is not one of {', '.join(EXPERT_PADDING)}")
        if self.sampler not in SAMPLERS:
            raise InputError("sampler", f"'{self.sampler}' is not one of {', '.join(SAMPLERS)}")
        if not self.output_delay_s >= 0:
            raise InputError("output_delay_s", f"must be >= 0, got {self.output_delay_s}")
        if self.prefix_cache is not None and not isinstance(self.prefix_cache, bool):
            raise InputError("prefix_cache", f"must be true or false, got {self.prefix_cache!r}")
        if self.prefix_cache is False and self._policy.shares_prefixes:
            raise InputError("prefix_cache", f"the {self.scheduler} scheduler exists to share prompt prefixes and "
                                             "always runs with the prefix cache; drop --no-prefix-cache or choose "
                                             "another scheduler")
        if not self.is_disagg:
            given = [n for n in DISAGG_FIELDS if getattr(self, n) is not None]
            if given:
                pools = " or ".join(n for n in SCHEDULERS if SCHEDULERS.get(n).disaggregated)
                raise InputError(given[0], f"{', '.join(given)} apply only with --scheduler {pools} "
                                           f"(scheduler is {self.scheduler})")
        if self.cuda_graph_max_batch is not None and not self.eager_prefill_layer_s:
            raise InputError("cuda_graph_max_batch", "decode batches above the CUDA-graph size run eagerly, which "
                                                     "costs the host dispatch time of eager_prefill_layer_s; give "
                                                     "that too (without it the flag would change nothing)")
        if self.act_quant != "fused" and self.weights in ("bf16", "fp16"):
            raise InputError("act_quant", f"act_quant={self.act_quant} quantizes the activations of W8A8 GEMMs "
                                          f"(fp8/int8 weights); weights are {self.weights}")
        self._check_graph_sizes()
        self._check_spec()
        self._check_autoscale()
        self._check_overlap()
        self._check_context_pass()
        self._check_migration()
        if self.ep > 1:
            if self.tp != 1 or self.pp != 1:
                raise InputError("ep", f"ep={self.ep} spreads experts over DP-attention replicas of one GPU each; "
                                       f"it needs tp=1 and pp=1 (got tp={self.tp}, pp={self.pp})")
            if self.replicas % self.ep:
                raise InputError("ep", f"ep={self.ep} must divide replicas={self.replicas} (each EP group is ep "
                                       "replicas)")
            if self.is_disagg:
                raise InputError("ep", f"ep > 1 is not modelled with the {self.scheduler} scheduler")
            if self.spec_method or self.overlap != "none":  # the lockstep cost (serving.lockstep) is not split for them
                what = "--spec-method" if self.spec_method else "--overlap"
                raise InputError("ep", f"attention-DP ranks in lockstep (ep={self.ep}) are not modelled with {what}")

    def _check_context_pass(self) -> None:
        """context_pass separate re-prices a plain colocated iteration (serving.context_pass); the
        iteration models of speculation, intra-device overlap, lockstep ranks and disaggregated pools
        are not split into two passes, so those combinations are refused by name."""
        if self.context_pass not in CONTEXT_PASSES:
            raise InputError("context_pass", f"'{self.context_pass}' is not one of {', '.join(CONTEXT_PASSES)}")
        if self.context_pass == "joint":
            return
        for hit, what in ((self.spec_method is not None, "speculative decoding (--spec-method)"),
                          (self.overlap != "none", "intra-device overlap (--overlap)"),
                          (self.ep > 1, "attention-DP ranks in lockstep (ep > 1)"),
                          (self.is_disagg, f"the {self.scheduler} scheduler")):
            if hit:
                raise InputError("context_pass", f"a separate context pass is not modelled with {what}")

    def _only_with(self, names: tuple[str, ...], flag: str) -> None:
        """Fields that only a feature reads, given without it: an error naming the first."""
        given = [n for n in names if getattr(self, n) is not None]
        if given:
            raise InputError(given[0], f"{', '.join(given)} apply only with {flag}")

    def _check_graph_sizes(self) -> None:
        """`cuda_graph_batch_sizes`: 1 .. MAX_CUDA_GRAPH_SIZES ascending positive whole numbers, stored as a
        tuple; refused with the iteration models that do not take padded decode batches (speculative
        decoding, NanoFlow overlap), so it is never silently ignored. Attention-DP lockstep (`ep` > 1)
        pads a group's generation-only iterations to the group's largest batch (serving.lockstep)."""
        v = self.cuda_graph_batch_sizes
        if v is None:
            return
        name = "cuda_graph_batch_sizes"
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or not 1 <= len(v) <= MAX_CUDA_GRAPH_SIZES:
            raise InputError(name, f"must be a list of 1 .. {MAX_CUDA_GRAPH_SIZES} batch sizes, got {v!r}")
        for x in v:
            edge.positive_int(name, x)
        if any(b <= a for a, b in zip(v, v[1:])):
            raise InputError(name, f"must be in ascending order without repeats, got {list(v)}")
        object.__setattr__(self, "cuda_graph_batch_sizes", tuple(int(x) for x in v))
        for field, bad in (("spec_method", self.spec_method is not None), ("overlap", self.overlap != "none")):
            if bad:
                raise InputError(name, f"CUDA-graph padding is not modelled together with {field} "
                                       f"({getattr(self, field)}); drop one of the two")

    def _check_spec(self) -> None:
        """Speculative decoding's fields go together: a method, K and the acceptance; a draft model
        with (and only with) `draft`."""
        if self.spec_method is None:
            self._only_with(SPEC_FIELDS, f"--spec-method ({' | '.join(SPEC_METHODS)})")
            return
        if self.spec_method not in SPEC_METHODS:
            raise InputError("spec_method", f"'{self.spec_method}' is not one of {', '.join(SPEC_METHODS)}")
        k = self.num_speculative_tokens
        if k is None or k > MAX_SPECULATIVE_TOKENS:
            raise InputError("num_speculative_tokens", f"give the draft tokens per step K, 1 .. {MAX_SPECULATIVE_TOKENS} "
                                                       f"(got {k})")
        if self.spec_acceptance is None:
            raise InputError("spec_acceptance", "give the chance a draft token is accepted, in (0, 1] (the i.i.d. a of "
                                                "Leviathan et al.; vLLM's logged acceptance rate is (e - 1) / K, see "
                                                "docs/serving.md)")
        if (self.spec_method == "draft") != (self.draft_model is not None):
            raise InputError("draft_model", "--draft-model names the drafting model, needed with --spec-method draft "
                                            f"and only then (spec_method is {self.spec_method})")
        if self.is_disagg:
            raise InputError("spec_method", f"speculative decoding is not modelled with the {self.scheduler} scheduler")

    def _check_overlap(self) -> None:
        """--overlap nanoflow on a colocated plain-decoding engine; --nano-batches only with it."""
        if self.overlap not in OVERLAP_MODES:
            raise InputError("overlap", f"'{self.overlap}' is not one of {', '.join(OVERLAP_MODES)}")
        if self.overlap == "none":
            self._only_with(("nano_batches",), "--overlap nanoflow")
            return
        n = self.nano_batches
        if n is not None and not 2 <= n <= MAX_NANO_BATCHES:
            raise InputError("nano_batches", f"must be 2 .. {MAX_NANO_BATCHES} (overlap needs at least two "
                                             f"nano-batches; each more re-reads the weights), got {n}")
        if self.is_disagg:
            raise InputError("overlap", f"intra-device overlap is not modelled with the {self.scheduler} scheduler")
        if self.spec_method is not None:
            raise InputError("overlap", "intra-device overlap is not modelled together with speculative decoding "
                                        "(--spec-method)")

    def _check_autoscale(self) -> None:
        if self.autoscale_max is None:
            self._only_with(AUTOSCALE_FIELDS, "--autoscale-max")
            return
        if self.autoscale_max < self.replicas:
            raise InputError("autoscale_max", f"autoscale_max={self.autoscale_max} is below replicas={self.replicas} "
                                              "(replicas is the minimum the autoscaler keeps)")
        if self.autoscale_target is None or self.autoscale_target <= 0:
            raise InputError("autoscale_target", "give the requests in flight per replica the autoscaler aims at (> 0)")
        if self.autoscale_startup_s is None:
            raise InputError("autoscale_startup_s", "give the seconds a new replica takes before it serves (scheduling, "
                                                    "image pull, loading the weights); there is no honest default")
        if self.autoscale_interval_s <= 0:
            raise InputError("autoscale_interval_s", "must be > 0 seconds")
        if self.is_disagg or self.ep > 1:
            raise InputError("autoscale_max", "autoscaling is modelled for colocated replicas only")

    def _check_migration(self) -> None:
        """Live migration moves decoding requests between colocated replicas: two or more, fixed."""
        if self.migration is None:
            self._only_with(MIGRATION_FIELDS, "--migration llumnix")
            return
        if self.migration not in MIGRATION_POLICIES:
            raise InputError("migration", f"'{self.migration}' is not one of {', '.join(MIGRATION_POLICIES)}")
        if self.is_disagg:
            raise InputError("migration", f"live migration between replicas is not modelled with the {self.scheduler} "
                                          "scheduler (its decode pool already receives every KV cache)")
        if self.replicas < 2:
            raise InputError("migration", f"live migration needs two or more replicas to move requests between "
                                          f"(replicas={self.replicas})")
        if self.autoscale_max is not None or self.ep > 1:
            raise InputError("migration", "live migration is modelled for a fixed set of independent replicas "
                                          "(not with --autoscale-max or --ep)")
        if self.migration_interval_s is not None and self.migration_interval_s <= 0:
            raise InputError("migration_interval_s", "must be > 0 seconds")

    # --- derived ----------------------------------------------------------------------------
    def resolved(self, model: ModelSpec) -> ServingPlan:
        """The plan with the model's defaults filled in: weights (the checkpoint's own precision),
        the KV-cache dtype (the model's dtype) and the prefix cache (the scheduler's default).
        Idempotent; `resolve_plan` also checks the GPU and says what it filled in."""
        changes: dict[str, Any] = {}
        if self.weights is None:
            changes["weights"] = model.native_weights
        if self.kv_dtype is None:
            changes["kv_dtype"] = model.serving_dtype
        if self.prefix_cache is None:
            changes["prefix_cache"] = self._policy.shares_prefixes
        return replace(self, **changes) if changes else self

    @property
    def kv(self) -> str:
        """The KV-cache dtype; an unresolved plan's default is its activations' 16-bit dtype."""
        return self.kv_dtype or self.act_dtype

    @property
    def act_dtype(self) -> str:
        return "fp16" if self.weights == "fp16" else "bf16"

    @property
    def overhead_s(self) -> float:
        return DEFAULT_ITERATION_OVERHEAD_S if self.iteration_overhead_s is None else self.iteration_overhead_s

    @property
    def _policy(self):
        """The scheduler's class (its rules: disaggregated pools, prefix sharing)."""
        return SCHEDULERS.get(self.scheduler)

    @property
    def is_disagg(self) -> bool:
        return self._policy.disaggregated

    def gpus(self) -> int:
        """GPUs the plan occupies."""
        if self.is_disagg:
            p, d = self.disagg_split(None)
            return p + d
        return self.tp * self.pp * max(self.replicas, self.autoscale_max or 0)

    def disagg_split(self, cluster_gpus: int | None) -> tuple[int, int]:
        """(prefill GPUs, decode GPUs); validated against the cluster when it is given."""
        total = cluster_gpus if cluster_gpus is not None else self.tp * self.pp * self.replicas
        pg = self.prefill_gpus if self.prefill_gpus is not None else max(1, total // 2)
        dg = self.decode_gpus if self.decode_gpus is not None else total - pg
        if dg < 1:
            raise InputError("decode_gpus", f"no GPUs left for the decode pool ({pg} prefill of {total})")
        if cluster_gpus is not None and pg + dg > cluster_gpus:
            raise InputError("prefill_gpus", f"disagg split prefill_gpus={pg} + decode_gpus={dg} exceeds the "
                                             f"cluster's {cluster_gpus} GPUs")
        for name, g, t, pp in (("prefill", pg, *self.phase_layout("prefill")),
                               ("decode", dg, *self.phase_layout("decode"))):
            if g % (t * pp):
                raise InputError(f"{name}_gpus", f"{name}_gpus={g} is not a multiple of {name}_tp*{name}_pp="
                                                 f"{t}*{pp}={t * pp}")
        return pg, dg

    def phase_layout(self, role: str) -> tuple[int, int]:
        """(TP, PP) of one disaggregated pool's instances: its own, else the plan's."""
        if role == "prefill":
            return self.prefill_tp or self.tp, self.prefill_pp or self.pp
        if role == "decode":
            return self.decode_tp or self.tp, self.decode_pp or self.pp
        return self.tp, self.pp

    def with_(self, **changes: Any) -> ServingPlan:
        return replace(self, **changes)

    # --- mapping round trip -----------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, d: dict[str, Any], *, where: str = "") -> ServingPlan:
        known = {f.name for f in fields(cls)}
        aliases = {"chunk_size": "token_budget", "kv_cache": "kv_dtype"}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            key = aliases.get(str(k).replace("-", "_"), str(k).replace("-", "_"))
            if key not in known:
                raise InputError(f"{where}{k}", f"unknown plan field; allowed: {', '.join(sorted(known))}")
            if key == "router" and isinstance(v, str):
                v = v.replace("-", "_")
            kw[key] = v
        try:
            return cls(**kw)
        except TypeError as e:  # pragma: no cover - defensive
            raise InputError(where or "plan", str(e)) from None

    def to_mapping(self) -> dict[str, Any]:
        """The fields as a mapping; without migration its keys are left out, and so are the fields of
        `_OMITTED_AT_DEFAULT` at their defaults (results made before they existed stay byte-identical)."""
        d = asdict(self)
        if self.migration is None:
            for k in ("migration", *MIGRATION_FIELDS):
                del d[k]
        for f in fields(self):
            if f.name in _OMITTED_AT_DEFAULT and d[f.name] == f.default:
                del d[f.name]
        return d
