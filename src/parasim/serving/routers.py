"""Routers: which replica an arriving request goes to, registered by name. Below the engine loop
(which calls them) and the plan (which checks a router's name), so both import it at the top.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from parasim.registry import Registry


class Loaded(Protocol):
    """What a router reads of an engine instance (`engine.Instance`)."""

    outstanding: int  # tokens still to process for the requests routed to it
    kv: Any  # its KV pool (serving.kvcache.KVPool): capacity and free blocks

    def requests_in(self) -> int:  # requests routed to it and not finished (waiting or running)
        ...


class Router:
    """Picks a replica for each arriving request (small classes in a registry)."""

    name = ""

    def bind(self, prefix_id) -> None:
        """The run's per-request prefix ids (a router that keys on prompts reads them); default: unused."""

    def choose(self, rid: int, groups: list[list[Loaded]], tokens: int) -> int:  # pragma: no cover
        raise NotImplementedError


ROUTERS: Registry[type[Router]] = Registry("router")


@ROUTERS.register
class RoundRobin(Router):
    name = "round_robin"

    def __init__(self) -> None:
        self.next = 0

    def choose(self, rid: int, groups: list[list[Loaded]], tokens: int) -> int:
        g = self.next % len(groups)
        self.next += 1
        return g


@ROUTERS.register
class LeastOutstandingTokens(Router):
    name = "least_outstanding_tokens"

    def choose(self, rid: int, groups: list[list[Loaded]], tokens: int) -> int:
        best, best_v = 0, None
        for g, insts in enumerate(groups):
            v = sum(i.outstanding for i in insts)
            if best_v is None or v < best_v:
                best, best_v = g, v
        return best


@ROUTERS.register
class LeastKVLoad(Router):
    """The replica whose KV cache is least used (blocks in use over capacity), its queued prompts
    counted as the blocks they will take: the KV-utilisation scorer of llm-d's inference scheduler
    and similar gateways."""

    name = "least_kv"

    def choose(self, rid: int, groups: list[list[Loaded]], tokens: int) -> int:
        best, best_v = 0, None
        for g, insts in enumerate(groups):
            cap = sum(i.kv.capacity for i in insts) or 1
            used = sum(i.kv.capacity - i.kv.free for i in insts)
            v = (used + sum(i.outstanding for i in insts) / insts[0].kv.block) / cap
            if best_v is None or v < best_v:
                best, best_v = g, v
        return best


#: SGLang model-gateway (sgl-router) cache-aware policy defaults: balance by load when the busiest
#: replica has more than this many requests over the idlest ...
BALANCE_ABS_THRESHOLD = 32
#: ... and more than this ratio of them (`--balance-abs-threshold 32 --balance-rel-threshold 1.0001`)
BALANCE_REL_THRESHOLD = 1.0001


@ROUTERS.register
class PrefixAffinity(Router):
    """Cache-aware routing as SGLang's router does it: a request whose shared prefix the router has
    sent before goes where it sent it last (its own record, not the replica's real cache: that may
    have evicted it, the router does not know), unless the load is imbalanced past the thresholds,
    when the replica with the fewest requests takes it; a prefix seen first also goes there."""

    name = "prefix_affinity"

    def __init__(self) -> None:
        self.prefix_id = None
        self.where: dict[int, int] = {}  # prefix id -> replica it was last sent to

    def bind(self, prefix_id) -> None:
        self.prefix_id = prefix_id

    def choose(self, rid: int, groups: list[list[Loaded]], tokens: int) -> int:
        loads = [sum(i.requests_in() for i in insts) for insts in groups]
        lo, hi = min(loads), max(loads)
        idlest = loads.index(lo)
        pid = self.prefix_id[rid] if self.prefix_id is not None else -1
        if pid < 0:
            return idlest
        imbalanced = hi - lo > BALANCE_ABS_THRESHOLD and hi > lo * BALANCE_REL_THRESHOLD
        g = self.where.get(pid)
        if g is None or imbalanced:
            g = idlest
        self.where[pid] = g
        return g


def blocks_left(insts: list[Any]) -> int:
    """KV blocks left after the queued requests' prompts are placed (Llumnix's available blocks
    minus those of all waiting requests). Reads each queued request once, never its tokens; a long
    queue in one vectorised pass (the policy reads it every 50 ms)."""
    left = 0
    for i in insts:
        st, B, waiting = i.st, i.block, i.waiting
        if len(waiting) > 32:
            idx = np.fromiter(waiting, dtype=np.int64, count=len(waiting))
            tokens = np.frombuffer(st.prompt_tokens, dtype=np.int64)[idx] + np.frombuffer(st.emitted, dtype=np.int64)[idx]
            want = int(((tokens + B - 1) // B).sum())
        else:
            prompt, emitted = st.prompt_tokens, st.emitted
            want = sum((prompt[r] + emitted[r] + B - 1) // B for r in waiting)
        left += i.kv.available() - want
    return left


def freeness(insts: list[Any]) -> float:
    """Llumnix's load metric, its "freeness" (`remaining_steps`, llumnix/load_computation.py):
    `blocks_left` per request routed here; an idle instance is infinitely free."""
    n = sum(i.requests_in() for i in insts)
    return blocks_left(insts) / n if n else float("inf")


@ROUTERS.register
class LlumnixLoad(Router):
    """Llumnix's dispatch (Sun et al., OSDI'24, section 4.4; its `--dispatch-policy load`): the
    replica with the highest freeness takes the request."""

    name = "llumnix"

    def choose(self, rid: int, groups: list[list[Loaded]], tokens: int) -> int:
        best, best_v = 0, None
        for g, insts in enumerate(groups):
            v = freeness(insts)
            if best_v is None or v > best_v:
                best, best_v = g, v
        return best
