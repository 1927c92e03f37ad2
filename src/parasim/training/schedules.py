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
from parasim.registry import Registry


class Op(NamedTuple):
    kind: str  # "F" | "B"
    mb: int
    chunk: int


class Schedule:
    """A pipeline schedule: its op order, and the rules a plan must meet to run it, so that
    callers ask the schedule instead of testing its name."""

    name = ""
    chunked = False  # runs v >= 2 model chunks (virtual stages) per rank, and needs them
    min_pp = 1  # pipeline ranks it needs
    with_chunks: str | None = None  # what this name means with v > 1 (1f1b with chunks is interleaved)
    without_chunks: str | None = None  # what to run in its place with v = 1
    requires = ""  # its rules beyond the plain ones, in words (docs, the planner's prune reasons)

    def ops(self, rank: int, pp: int, m: int, v: int) -> list[Op]:  # pragma: no cover - interface
        raise NotImplementedError

    def microbatch_multiple(self, pp: int) -> int:
        """The micro-batches per step must be a multiple of this."""
        return 1

    def check(self, plan) -> None:
        """InputError (naming the field) if `plan` (a TrainingPlan) cannot run this schedule."""
        if plan.virtual_stages > 1:
            chunked = " or ".join(n for n in SCHEDULES if SCHEDULES.get(n).chunked)
            raise InputError("virtual-stages", f"virtual_stages > 1 needs the {chunked} schedule, not {plan.schedule}")


SCHEDULES: Registry[type[Schedule]] = Registry("schedule")
register = SCHEDULES.register


def get_schedule(name: str) -> Schedule:
    return SCHEDULES.get(name)()


def schedule_names() -> tuple[str, ...]:
    return SCHEDULES.names()


def resolve_name(name: str, v: int) -> str:
    """The schedule a plan runs: `name`, or what it means with v > 1 model chunks (the plan
    convention: 1f1b with virtual stages is interleaved 1F1B). Unknown names are left for the
    validator to reject."""
    cls = SCHEDULES.get(name) if name in SCHEDULES else None
    return cls.with_chunks if cls is not None and v > 1 and cls.with_chunks else name


def for_virtual_stages(name: str, v: int) -> str:
    """The schedule to run in place of `name` when v model chunks per rank are asked for: the one
    it resolves to if that runs v chunks, else its counterpart, else the first registered schedule
    of the right kind (gpipe with v > 1: interleaved)."""
    cls = SCHEDULES.get(resolve_name(name, v))
    if cls.chunked == (v > 1):
        return cls.name
    other = cls.with_chunks if v > 1 else cls.without_chunks
    return other or next(n for n in SCHEDULES if SCHEDULES.get(n).chunked == (v > 1))


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
    with_chunks = "interleaved"

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
    chunked = True
    min_pp = 2
    without_chunks = "1f1b"
    requires = "pp >= 2, virtual_stages >= 2, micro-batches per step a multiple of pp"

    def microbatch_multiple(self, pp: int) -> int:
        return pp

    def check(self, plan) -> None:
        if plan.virtual_stages < 2 or plan.pp < self.min_pp:
            raise InputError("virtual-stages", f"the {self.name} schedule needs pp >= {self.min_pp} and "
                                               "virtual_stages >= 2")
        # Megatron's interleaved 1F1B runs micro-batches in groups of pp through each chunk; a
        # last group smaller than pp would leave ranks waiting, and Megatron rejects it.
        if plan.micro_batches % self.microbatch_multiple(plan.pp):
            raise InputError("global-batch", f"interleaved 1F1B needs the number of micro-batches "
                                             f"(global_batch/(dp*micro_batch) = {plan.global_batch}/"
                                             f"({plan.dp}*{plan.micro_batch}) = {plan.micro_batches}) to be a "
                                             f"multiple of pp={plan.pp}, as Megatron's schedule requires")

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
