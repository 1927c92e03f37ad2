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
        out: list[Op] = []
        for k in range(warm):
            out.append(Op("F", *self._chunk_op(k, pp, v, m, True)))
        f, b = warm, 0
        while f < total:
            out.append(Op("F", *self._chunk_op(f, pp, v, m, True)))
            out.append(Op("B", *self._chunk_op(b, pp, v, m, False)))
            f, b = f + 1, b + 1
        while b < total:
            out.append(Op("B", *self._chunk_op(b, pp, v, m, False)))
            b += 1
        return out
