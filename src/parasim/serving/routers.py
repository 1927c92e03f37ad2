"""Routers: which replica an arriving request goes to, registered by name. Below the engine loop
(which calls them) and the plan (which checks a router's name), so both import it at the top.
"""

from __future__ import annotations

from typing import Protocol

from parasim.registry import Registry


class Loaded(Protocol):
    """What a router reads of an engine instance (`engine.Instance`)."""

    outstanding: int  # tokens still to process for the requests routed to it


class Router:
    """Picks a replica for each arriving request (small classes in a registry)."""

    name = ""

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
