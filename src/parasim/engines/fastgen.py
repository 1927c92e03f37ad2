"""What a DeepSpeed-FastGen deployment (DeepSpeed-MII 0.1-0.3 on DeepSpeed inference v2) runs with.

Read from the sources of the release the FastGen blog measured (DeepSpeed-MII v0.1.0, 2023-11-03,
`mii/batching/ragged_batching.py`; DeepSpeed v0.12.3, `deepspeed/inference/v2`):

* **Dynamic SplitFuse.** Every forward holds at most `max_ragged_batch_size` tokens (768 by default,
  `DSStateManagerConfig`; the blog's benchmark scripts pass the same 768) and at most
  `max_ragged_sequence_count` sequences (512). `schedule_requests` puts the generating sequences
  first (one token each), then prompt tokens: a prompt is cut to what is left of the budget and its
  remainder goes to the front of the queue, so long prompts spread over several forwards and short
  ones fill the budget. That is parasim's `splitfuse` rule (Sarathi's stall-free rule) with a
  768-token forward.
* **KV cache.** Blocks of `get_kv_block_size(head_size)` tokens: 64 for a head size of 128 on
  Ampere and later (blocked_flash.py). The pool is allocated in RESERVE mode: everything the
  process has free after loading, less `MemoryConfig.size` = 1 GB (kv_cache.py); KV is taken as the
  sequence grows (`query` / `maybe_allocate_kv`).
* **Kernels.** Attention is "a modified implementation of flash-attn-2" over the blocked cache
  (`BlockedFlashAttn`), so the FA2-generation rate; TP all-reduces are `dist.all_reduce` (NCCL).
  There are no CUDA graphs in this release (`InferenceEngineV2.put` prepares its buffers "in
  anticipation of CG in the future"), so every forward is issued kernel by kernel from Python: the
  eager dispatch floor (`host.eager_layer_dispatch_s`, the same per-kernel figure as vLLM's; a
  Llama layer here is a comparable ~10 kernels: QKV GEMM, fused rotary + KV copy, blocked
  attention, output GEMM, norm, gate/up GEMM, gated activation, down GEMM, norm, two NCCL calls)
  applies to prefill and decode alike.
* **Host loop.** Rank 0 schedules, broadcasts only the new tokens of the batch over ZeroMQ (not the
  sequences' histories), samples and streams; `ITERATION_OVERHEAD_S["deepspeed-mii"]`.
"""

from __future__ import annotations

import re

from parasim.engines.host import ITERATION_OVERHEAD_S, eager_layer_dispatch_s
from parasim.engines.profile import ENGINES, EngineContext, EngineProfile
from parasim.engines.software import SourceFlags

#: DSStateManagerConfig defaults (DeepSpeed 0.12): tokens per forward, sequences per forward
MII_MAX_RAGGED_BATCH_SIZE = 768
MII_MAX_RAGGED_SEQUENCE_COUNT = 512
#: MemoryConfig.size in RESERVE mode: bytes left free after the KV cache is allocated
MII_RESERVE_BYTES = 1_000_000_000

_FLAGS = SourceFlags(token_budget=r"max[-_]ragged[-_]batch[-_]size", max_batch=r"max[-_]ragged[-_]sequence[-_]count")


def mii_block_size(head_dim: int) -> int:
    """`get_kv_block_size` (DeepSpeed 0.12 blocked_flash.py) on compute capability 8.x / 9.0."""
    return 128 if head_dim <= 64 else 64


@ENGINES.register
class FastgenProfile(EngineProfile):
    """DeepSpeed-FastGen: Dynamic SplitFuse over a 768-token forward, 64-token KV blocks, eager
    forwards (no CUDA graphs), NCCL all-reduces, FA2-derived blocked attention."""

    name = "deepspeed-mii"
    pattern = re.compile(r"fastgen|deepspeed[-_ ]?mii|\bmii\b|deepspeed[-_ ]?inference", re.IGNORECASE)
    releases = ((0, 1), (0, 3))
    fp8_cache_with_fp8_weights = False

    def apply(self, ctx: EngineContext) -> None:
        kw = ctx.kw
        stated = _FLAGS.stated(ctx.text)
        budget = int(stated.get("token_budget") or MII_MAX_RAGGED_BATCH_SIZE)
        seqs = int(ctx.stated.get("max_batch") or stated.get("max_batch") or MII_MAX_RAGGED_SEQUENCE_COUNT)
        block = mii_block_size(ctx.model.head_dim)
        util = round(1.0 - MII_RESERVE_BYTES / ctx.acc.device_memory_bytes, 4)
        eager = eager_layer_dispatch_s(kw["tp"], custom_allreduce=False)
        kw.update(scheduler=ctx.scheduler("splitfuse"), token_budget=budget, max_batch=seqs, block_size=block,
                  gpu_memory_utilization=util, iteration_overhead_s=ITERATION_OVERHEAD_S["deepspeed-mii"],
                  eager_prefill_layer_s=eager, cuda_graph_max_batch=0, custom_allreduce=False, attention="flash2")
        ctx.choose(f"DeepSpeed-FastGen defaults: Dynamic SplitFuse ({kw['scheduler']}), max_ragged_batch_size {budget}"
                   f", max_ragged_sequence_count {seqs}, KV blocks of {block} tokens, all memory but 1e9 bytes "
                   f"(MemoryConfig.size) for weights + KV (gpu_memory_utilization {util}); no CUDA graphs: every "
                   f"forward dispatched eagerly ({eager * 1e3:.2f} ms per layer); NCCL all-reduces; FA2-derived blocked attention"
                   + "".join(f"; {k} {v:g} (from the source)" for k, v in stated.items()), "token_budget", budget)
