"""What a Hugging Face text-generation-inference (TGI) server runs with when the source does not
say, by release line. Read from TGI's launcher, router and server sources
(huggingface/text-generation-inference: launcher/src/main.rs, router/src/queue.rs,
backends/v3/src/queue.rs, server/.../flash_causal_lm.py, models/globals.py):

* **Batching.** Continuous batching. Up to 2.x a prefill is its own forward (the running batch
  waits; requests join between decode steps): parasim's `vllm` rule, prefill first, whole prompts
  within `max_batch_prefill_tokens`. (The router's waiting_served_ratio / max_waiting_tokens pacing
  is not modelled; at full load it admits whenever memory allows.) From 3.0 prefill chunking is on
  (flashinfer / flashdecoding) and a chunk can carry the running batch: parasim's `sarathi` rule.
* **Prefill budget** (`max_batch_prefill_tokens`): 1.x 4096; 2.x max_input_tokens + 50 with
  max_input_tokens = min(max_position_embeddings, 4096) - 1; from 3.0 the launcher's "compute
  optimal" value, GPUs x the card's f16 FLOP/s (its table: H100 80GB HBM3 900 T, A100 312 T,
  L4 121 T; only exact nvidia-smi names match) over the model's FLOPs per token, if above 100,
  else 4096, capped at max_position_embeddings.
* **KV memory.** CUDA_MEMORY_FRACTION 1.0; after the weights and a warmup forward at the prefill
  budget, the free memory becomes KV blocks, from 2.x keeping 5 % back ("Leave 5%",
  TGI_WIGGLE_ROOM 0.95). Blocks of 16 tokens (paged attention) up to 2.3, 1 token (flashinfer,
  the default from 2.4).
* **Admission.** The router books KV for prompt + max_new_tokens when a request enters the batch
  and never preempts: GUARANTEED_NO_EVICT in TensorRT-LLM's terms (`kv_reservation="full"`).
  `max_batch_size` has no default; `max_concurrent_requests` (128) makes the router refuse, not
  queue, more requests, and is not modelled.
* **Host.** A Python model server behind the Rust router, as vLLM V0's engine loop: the
  per-iteration host time is taken as vLLM's (`ITERATION_OVERHEAD_S["tgi"]`, an assumption, not a
  published TGI figure). CUDA graphs cover decode batches up to 32 (2.x/3.x; 128 in 1.4), and
  prefills run eagerly: those iterations cannot finish before the host has issued every kernel
  (plan.eager_layer_dispatch_s).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from parasim.cost.memory import RUNTIME_RESERVED_BYTES, activation_workspace_bytes, weight_bytes_per_gpu
from parasim.cost.dtypes import dtype_bytes
from parasim.cost.memory import kv_cache_bytes_per_token_per_gpu
from parasim.engines.host import ITERATION_OVERHEAD_S, eager_layer_dispatch_s
from parasim.engines.profile import ENGINES, EngineContext, EngineProfile
from parasim.engines.software import release
from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.model import ModelSpec
from parasim.units import fmt_gib

#: launcher ComputeType::f16_flop for the catalog parts whose nvidia-smi name matches its table exactly
TGI_CARD_F16_FLOPS = {"h100-sxm": 900e12, "l4": 121e12}
TGI_FALLBACK_PREFILL_TOKENS = 4096
#: 2.x and later: KV from 95 % of the free memory
TGI_WIGGLE_ROOM = 0.95
#: decode batch sizes captured as CUDA graphs by default: 1.4 up to 128, 2.x / 3.x up to 32
TGI_CUDA_GRAPH_MAX = {1: 128, 2: 32, 3: 32}


@dataclass(frozen=True)
class TgiSetup:
    scheduler: str
    prefill_tokens: int
    block_size: int
    kv_bytes: float  # per GPU
    cuda_graph_max_batch: int
    eager_prefill_layer_s: float
    iteration_overhead_s: float
    why: str


def tgi_launcher_flops(model: ModelSpec) -> float:
    """The launcher's model FLOPs per token (Config::flop): 2 x the Q, K, V, 'attn' and O
    projection widths x hidden plus 2 x 3 x hidden x intermediate (x experts per token for MoE),
    per layer; no embedding or LM head."""
    hd, h = model.head_dim, model.hidden
    attn = 2 * hd * h * (3 * model.heads + 2 * model.kv_heads)
    inter = model.moe_ffn_hidden * model.experts_per_token if model.experts else model.ffn_hidden
    return model.layers * (attn + 6 * h * inter)


def tgi_prefill_tokens(rel: tuple[int, int] | None, model: ModelSpec, acc: AcceleratorSpec, *, gpus: int) -> int:
    mpe = model.max_seq_len
    if rel is not None and rel < (2, 0):
        return TGI_FALLBACK_PREFILL_TOKENS
    if rel is not None and rel < (3, 0):
        return min(mpe, 4096) - 1 + 50
    card = TGI_CARD_F16_FLOPS.get(acc.id)
    optimal = int(gpus * card / tgi_launcher_flops(model)) if card else 0
    return min(optimal if optimal > 100 else TGI_FALLBACK_PREFILL_TOKENS, mpe)


def tgi_setup(software: str, model: ModelSpec, acc: AcceleratorSpec, *, tp: int, pp: int, weights: str,
              max_batch: int | None) -> TgiSetup:
    rel = release(software)
    major = 3 if rel is None else min(max(rel[0], 1), 3)
    chunked = major >= 3
    budget = tgi_prefill_tokens(rel, model, acc, gpus=tp * pp)
    block = 16 if rel is not None and rel < (2, 4) else 1
    w = weight_bytes_per_gpu(model, tp=tp, pp=pp, weights=weights)
    act = activation_workspace_bytes(model, tp=tp, tokens=budget, logit_rows=max_batch or 1, act_bytes=2.0)
    free = max(acc.device_memory_bytes - w - act - RUNTIME_RESERVED_BYTES, 0.0)
    room = 1.0 if major < 2 else TGI_WIGGLE_ROOM
    graphs = TGI_CUDA_GRAPH_MAX[major]
    eager = eager_layer_dispatch_s(tp)
    ver = f"{rel[0]}.{rel[1]}" if rel else "(release not named: the 3.x defaults)"
    why = (f"TGI {ver} defaults: " + ("chunked prefill mixed with decodes (`sarathi`)" if chunked else
                                       "prefill first, whole prompts, no mixing (`vllm`)")
           + f", max_batch_prefill_tokens {budget}, KV = {room:.0%} of the memory left after weights and a warmup "
           f"forward ({fmt_gib(room * free)} per GPU), {block}-token blocks, KV booked for prompt + max_new_tokens "
           f"at admission (no preemption); CUDA graphs for decode batches up to {graphs}, prefill eager "
           f"({eager * 1e3:.2f} ms host dispatch per layer); max_concurrent_requests (128, refuses beyond) not modelled")
    return TgiSetup("sarathi" if chunked else "vllm", budget, block, room * free, graphs, eager,
                    ITERATION_OVERHEAD_S["tgi"], why)


@ENGINES.register
class TgiProfile(EngineProfile):
    """Hugging Face text-generation-inference: the release line's launcher defaults (`tgi_setup`)."""

    name = "tgi"
    pattern = re.compile(r"text[-_ ]generation[-_ ]inference|\btgi\b", re.IGNORECASE)
    releases = ((1, 0), (3, 3))

    def apply(self, ctx: EngineContext) -> None:
        kw = ctx.kw
        mb = ctx.stated.get("max_batch")
        setup = tgi_setup(ctx.software, ctx.model, ctx.acc, tp=kw["tp"], pp=kw["pp"], weights=kw["weights"], max_batch=mb)
        if mb is None:
            # no max_batch_size by default: bound the batch by what the KV pool can book (prompt + output
            # of the smallest request), which no run can exceed
            wl = ctx.workload()
            per_token = kv_cache_bytes_per_token_per_gpu(ctx.model, tp=kw["tp"], pp=kw["pp"],
                                                         kv_bytes=dtype_bytes(ctx.kv_dtype_of()))
            smallest = int((wl.prompt_tokens + wl.output_tokens).min()) if len(wl.prompt_tokens) else 1
            mb = max(1, int(setup.kv_bytes // per_token) // max(smallest, 1))
        kw.update(scheduler=ctx.scheduler(setup.scheduler), token_budget=setup.prefill_tokens,
                  block_size=setup.block_size, kv_reservation="full", iteration_overhead_s=setup.iteration_overhead_s,
                  eager_prefill_layer_s=setup.eager_prefill_layer_s, cuda_graph_max_batch=setup.cuda_graph_max_batch,
                  max_batch=mb)
        kw["gpu_memory_utilization"] = ctx.utilization_leaving(setup.kv_bytes)
        ctx.choose(setup.why, "max_batch", mb)
