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
