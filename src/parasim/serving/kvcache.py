"""Paged KV cache: which requests can ever fit, and who holds the blocks.

How many blocks a replica's GPUs hold is the memory model's (`cost.memory.kv_budget`). The pool
counts blocks; requests hold `ceil(context / block)` blocks of their own, and shared
prefixes (the prefix cache) hold theirs once, reference-counted, evictable least-recently-used
when nobody references them.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from parasim.mathx import cdiv

WATERMARK = 0.01  # share of KV blocks kept free when admitting new prompts (vLLM BlockSpaceManager default)


def window_blocks(model, sliding_kv: str, block: int) -> tuple[int, int]:
    """(k, blocks per group) of the sliding-window layers a request holds beside its full-attention
    blocks when the engine keeps only the window (ServingPlan.sliding_kv `window`, vLLM's hybrid KV
    cache manager); (0, 0) otherwise. vLLM groups the layers into KV cache groups of equal size, one
    of full-attention layers per `k` of sliding ones (k = ceil(sliding / full): gpt-oss 18 / 18 = 1,
    Gemma 3 5 : 1 = 5), every group drawing blocks of the same page size from one pool; a sliding
    group keeps the blocks that hold the last window - 1 tokens plus the current one,
    cdiv(window - 1, block) + 1 at most (SlidingWindowManager frees the blocks before them). The
    pool (cost.memory.kv_budget) is then sized in blocks of the full-attention layers."""
    if sliding_kv != "window" or not model.windowed_layers:
        return 0, 0
    k = cdiv(model.windowed_layers, model.full_attention_layers)
    return k, cdiv(model.sliding_window - 1, block) + 1


def request_window_blocks(tokens, k: int, per_group: int, block: int):
    """Blocks a request of `tokens` tokens (prompt + output) holds for its sliding-window layers at
    most (`window_blocks`): k x min(cdiv(tokens, block), per_group), booked when it is admitted."""
    if not k:
        return 0 * tokens
    return k * np.minimum(cdiv(tokens, block), per_group) if isinstance(tokens, np.ndarray) \
        else k * min(cdiv(tokens, block), per_group)


def peak_blocks(prompt: np.ndarray, output: np.ndarray, *, block: int, reserve_full: bool) -> np.ndarray:
    """KV blocks each request holds at its peak when it runs alone. Incremental: the prompt and
    every output token but the last are cached (the last token is sampled, never stored), so
    `ceil((prompt + output - 1) / block)`; full reservation books `ceil((prompt + output) / block)`
    at admission."""
    tokens = prompt + output - (0 if reserve_full else 1)
    return cdiv(tokens, block)


def unservable(prompt: np.ndarray, output: np.ndarray, *, capacity_blocks: int, block: int, role: str,
               reserve_full: bool, first_chunk_tokens: int | None, window: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Requests that can never complete on an engine of `capacity_blocks` blocks, even alone.

    `role` is `mixed` (prefill and decode), `prefill` (the prefill pool of a disaggregated plan:
    only the prompt is cached here) or `decode` (the decode pool: prompt + output, reserved at
    join). Admission into an empty engine must also clear vLLM's watermark (`WATERMARK`) for the
    blocks of the first chunk (`first_chunk_tokens`, None = the whole prompt). `window`: the
    sliding-window layers' blocks each request books at admission (`window_blocks`)."""
    extra = request_window_blocks(prompt if role == "prefill" else prompt + output, *window, block)
    if role == "decode":
        return peak_blocks(prompt, output, block=block, reserve_full=False) + extra > capacity_blocks
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
    return (peak + extra > capacity_blocks) | (first + extra + mark > capacity_blocks)


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
