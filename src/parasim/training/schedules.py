"""Pipeline schedules: each emits, per pipeline rank, the ordered list of forward/backward ops.

An op is (kind, micro-batch, chunk): kind "F" or "B"; chunk is the model chunk (0 unless
interleaved). Virtual stage of an op = chunk * pp + rank. The step simulator runs these lists
against their data dependencies; bubbles emerge from the order, no formula is used.

* gpipe: all forwards, then all backwards (in reverse micro-batch order).
* 1f1b: (p - rank - 1) warm-up forwards, then alternate one forward / one backward, then drain
  (PipeDream-Flush, Megatron's non-interleaved schedule).
* interleaved: Megatron's interleaved 1F1B over v chunks per rank: micro-batches advance in groups
  of p, warm-up (v - 1) * p + 2 * (p - rank - 1) chunk-forwards, then 1F1B over chunk ops.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from parasim.errors import InputError


class Op(NamedTuple):
    kind: str  # "F" | "B"
    mb: int
    chunk: int


class Schedule:
    name = ""

    def ops(self, rank: int, pp: int, m: int, v: int) -> list[Op]:  # pragma: no cover - interface
        raise NotImplementedError


_REGISTRY: dict[str, type[Schedule]] = {}


def register(cls: type[Schedule]) -> type[Schedule]:
    if not cls.name:
        raise ValueError("a schedule needs a name")
    if cls.name in _REGISTRY:
        raise ValueError(f"schedule '{cls.name}' is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def get_schedule(name: str) -> Schedule:
    if name not in _REGISTRY:
        raise InputError("schedule", f"unknown schedule '{name}'; allowed: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def schedule_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


@lru_cache(maxsize=1024)
def rank_ops(name: str, pp: int, m: int, v: int) -> tuple[tuple[Op, ...], ...]:
    """Every rank's op list for a registered schedule, cached (the planner asks for the same
    (pp, m, v) many times). Immutable: callers must not modify it."""
    s = get_schedule(name)
    return tuple(tuple(s.ops(r, pp, m, v)) for r in range(pp))


@register
class GPipe(Schedule):
    name = "gpipe"

    def ops(self, rank: int, pp: int, m: int, v: int) -> list[Op]:
        return [Op("F", j, 0) for j in range(m)] + [Op("B", j, 0) for j in reversed(range(m))]


@register
class OneFOneB(Schedule):
    name = "1f1b"

    def ops(self, rank: int, pp: int, m: int, v: int) -> list[Op]:
        warm = min(pp - rank - 1, m)
        out = [Op("F", j, 0) for j in range(warm)]
        f, b = warm, 0
        while f < m:
            out.append(Op("F", f, 0))
            out.append(Op("B", b, 0))
            f, b = f + 1, b + 1
        out += [Op("B", j, 0) for j in range(b, m)]
        return out


@register
class Interleaved(Schedule):
    name = "interleaved"

    @staticmethod
    def _chunk_op(k: int, pp: int, v: int, m: int, forward: bool) -> tuple[int, int]:
        """k-th chunk-op of a rank -> (micro-batch, chunk), Megatron's grouping by p micro-batches."""
        group, within = divmod(k, pp * v)
        chunk = within // pp
        if not forward:
            chunk = v - 1 - chunk
        mb = group * pp + within % pp
        return mb, chunk

    def ops(self, rank: int, pp: int, m: int, v: int) -> list[Op]:
        total = m * v
        warm = min((v - 1) * pp + 2 * (pp - rank - 1), total)
        fwd = [Op("F", *self._chunk_op(k, pp, v, m, True)) for k in range(total)]
        bwd = [Op("B", *self._chunk_op(k, pp, v, m, False)) for k in range(total)]
        out = fwd[:warm]
        for f, b in zip(fwd[warm:], bwd):  # steady state: one forward, one backward
            out.append(f)
            out.append(b)
        out += bwd[total - warm:]
        return out
