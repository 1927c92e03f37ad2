"""Paged KV cache: how many blocks fit, and who holds them.

Capacity per GPU of a replica follows the memory model:

    KV bytes = HBM x gpu_memory_utilization - weights - activation workspace - runtime reserve

divided by the KV bytes one token costs on that GPU (its KV heads after TP, its layers after PP).
The pool counts blocks; requests hold `ceil(context / block)` blocks of their own, and shared
prefixes (the prefix cache) hold theirs once, reference-counted, evictable least-recently-used
when nobody references them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from parasim.cost.dtypes import dtype_bytes
from parasim.cost.memory import kv_cache_bytes_per_token_per_gpu, weight_bytes_per_gpu
from parasim.mathx import cdiv
from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.model import ModelSpec
from parasim.units import gib

#: Memory the runtime holds outside weights, activations and KV: CUDA context, cuBLAS/NCCL
#: workspaces, captured CUDA graphs. An engine constant (vLLM reports it as "non-torch memory"
#: plus graph memory in its startup profile, typically 0.5-1.5 GB per GPU).
RUNTIME_RESERVED_BYTES = 1.0e9


@dataclass(frozen=True)
class KVBudget:
    """Per-GPU memory split of one replica, bytes, and the resulting block count (0 when nothing
    is left for a KV cache: `simulate` then reports the plan infeasible)."""

    hbm: float
    usable: float
    weights: float
    activations: float
    reserved: float
    kv: float
    kv_bytes_per_token: float
    blocks: int
    block_size: int

    @property
    def tokens(self) -> int:
        return self.blocks * self.block_size

    def to_dict(self) -> dict:
        return {"hbm_gib": gib(self.hbm), "usable_gib": gib(self.usable), "weights_gib": gib(self.weights),
                "activations_gib": gib(self.activations), "reserved_gib": gib(self.reserved),
                "kv_gib": gib(self.kv), "kv_bytes_per_token_per_gpu": self.kv_bytes_per_token,
                "kv_blocks": self.blocks, "kv_tokens": self.tokens, "block_size": self.block_size}


def activation_workspace_bytes(model: ModelSpec, *, tp: int, tokens: int, logit_rows: int, act_bytes: float) -> float:
    """Peak live activations of one forward pass of `tokens` tokens on one GPU (one layer's
    residual, normed input, QKV, attention output, MLP gate/up and product) plus fp32 logits."""
    kv = 2 * model.kv_heads * model.head_dim
    width = model.moe_ffn_hidden * model.experts_per_token if model.is_moe else model.ffn_hidden
    per_token = 2 * model.hidden + (2 * model.q_dim + kv) / tp + 3 * width / tp
    return tokens * per_token * act_bytes + logit_rows * model.vocab / tp * 4.0


def kv_budget(model: ModelSpec, acc: AcceleratorSpec, *, tp: int, pp: int, weights: str, kv_dtype: str,
              block_size: int, gpu_memory_utilization: float, max_tokens: int, max_batch: int,
              act_bytes: float = 2.0, ep: int = 1) -> KVBudget:
    w = weight_bytes_per_gpu(model, tp=tp, pp=pp, weights=weights, ep=ep)
    act = activation_workspace_bytes(model, tp=tp, tokens=max_tokens, logit_rows=max_batch, act_bytes=act_bytes)
    usable = acc.hbm_bytes * gpu_memory_utilization
    kv = usable - w - act - RUNTIME_RESERVED_BYTES
    per_token = kv_cache_bytes_per_token_per_gpu(model, tp=tp, pp=pp, kv_bytes=dtype_bytes(kv_dtype, field="kv_dtype"))
    blocks = int(max(0.0, kv) // (per_token * block_size))
    return KVBudget(hbm=acc.hbm_bytes, usable=usable, weights=w, activations=act, reserved=RUNTIME_RESERVED_BYTES,
                    kv=kv, kv_bytes_per_token=per_token, blocks=blocks, block_size=block_size)


def peak_blocks(prompt: np.ndarray, output: np.ndarray, *, block: int, reserve_full: bool) -> np.ndarray:
    """KV blocks each request holds at its peak when it runs alone. Incremental: the prompt and
    every output token but the last are cached (the last token is sampled, never stored), so
    `ceil((prompt + output - 1) / block)`; full reservation books `ceil((prompt + output) / block)`
    at admission."""
    tokens = prompt + output - (0 if reserve_full else 1)
    return cdiv(tokens, block)


def unservable(prompt: np.ndarray, output: np.ndarray, *, capacity_blocks: int, block: int, role: str,
               reserve_full: bool, first_chunk_tokens: int | None) -> np.ndarray:
    """Requests that can never complete on an engine of `capacity_blocks` blocks, even alone.

    `role` is `mixed` (prefill and decode), `prefill` (the prefill pool of a disaggregated plan:
    only the prompt is cached here) or `decode` (the decode pool: prompt + output, reserved at
    join). Admission into an empty engine must also clear vLLM's watermark (`WATERMARK`) for the
    blocks of the first chunk (`first_chunk_tokens`, None = the whole prompt)."""
    from parasim.serving.schedulers.base import WATERMARK

    if role == "decode":
        return peak_blocks(prompt, output, block=block, reserve_full=False) > capacity_blocks
    if role == "prefill":
        peak = first = cdiv(prompt, block)
    else:
        peak = peak_blocks(prompt, output, block=block, reserve_full=reserve_full)
        if reserve_full:
            first = peak
        else:
            chunk = prompt if first_chunk_tokens is None else np.minimum(prompt, first_chunk_tokens)
            first = cdiv(chunk, block)
    mark = int(WATERMARK * capacity_blocks)
    return (peak > capacity_blocks) | (first + mark > capacity_blocks)


class KVPool:
    """Block counts of one engine, with an optional reference-counted LRU prefix cache."""

    __slots__ = ("capacity", "free", "block", "enabled", "entries", "lru", "evictable", "min_free",
                 "prefix_hits", "prefix_misses", "evictions")

    def __init__(self, capacity_blocks: int, block_size: int, prefix_cache: bool = False) -> None:
        self.capacity = capacity_blocks
        self.free = capacity_blocks
        self.block = block_size
        self.enabled = prefix_cache
        self.entries: dict[int, list[int]] = {}  # prefix id -> [blocks, refcount]
        self.lru: OrderedDict[int, None] = OrderedDict()  # unreferenced entries, oldest first
        self.evictable = 0
        self.min_free = capacity_blocks
        self.prefix_hits = 0
        self.prefix_misses = 0
        self.evictions = 0

    @property
    def used(self) -> int:
        return self.capacity - self.free

    def available(self) -> int:
        """Blocks that can be handed out now (free + evictable cached prefixes)."""
        return self.free + self.evictable

    def alloc(self, n: int) -> None:
        if n <= 0:
            return
        if self.free < n:
            self._evict(n - self.free)
        self.free -= n
        if self.free < self.min_free:
            self.min_free = self.free

    def release(self, n: int) -> None:
        self.free += n

    def _evict(self, need: int) -> None:
        lru, entries = self.lru, self.entries
        while need > 0 and lru:
            pid, _ = lru.popitem(last=False)
            blocks = entries.pop(pid)[0]
            self.evictable -= blocks
            self.free += blocks
            self.evictions += 1
            need -= blocks

    # --- prefix cache ------------------------------------------------------------------------------
    def cached_tokens(self, pid: int) -> int:
        if pid < 0 or not self.enabled:
            return 0
        e = self.entries.get(pid)
        return e[0] * self.block if e else 0

    def evictable_blocks(self, pid: int) -> int:
        """Blocks of entry `pid` that count as evictable now (0 if referenced or absent)."""
        e = self.entries.get(pid)
        return e[0] if e and e[1] == 0 else 0

    def acquire(self, pid: int) -> None:
        e = self.entries[pid]
        if e[1] == 0:
            del self.lru[pid]
            self.evictable -= e[0]
        e[1] += 1
        self.prefix_hits += 1

    def release_prefix(self, pid: int) -> None:
        e = self.entries[pid]
        e[1] -= 1
        if e[1] == 0:
            self.lru[pid] = None
            self.evictable += e[0]

    def insert(self, pid: int, blocks: int) -> bool:
        """Register `blocks` already-allocated blocks as prefix `pid`, referenced once by their owner."""
        if not self.enabled or pid < 0 or blocks <= 0 or pid in self.entries:
            return False
        self.entries[pid] = [blocks, 1]
        self.prefix_misses += 1
        return True
