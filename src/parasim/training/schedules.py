"""Pipeline schedules: each emits, per pipeline rank, the ordered list of forward/backward ops.

An op is (kind, micro-batch, chunk): kind "F" or "B"; chunk is the model chunk (0 unless
interleaved). Virtual stage of an op = chunk * pp + rank. The step simulator runs these lists
against their data dependencies; bubbles emerge from the order, no formula is used.

* gpipe: all forwards, then all backwards (in reverse micro-batch order).
* 1f1b: (p - rank - 1) warm-up forwards, then alternate one forward / one backward, then drain
  (PipeDream-Flush, Megatron's non-interleaved schedule).
* interleaved: Megatron's interleaved 1F1B over v chunks per rank: micro-batches advance in groups
  of p, warm-up (v - 1) * p + 2 * (p - rank - 1) chunk-forwards, then 1F1B over chunk ops.

Zero-bubble schedules split the backward: "B" is the input gradient the previous stage waits
for, "W" the weight gradient, run later to fill what would be idle time (the schedules above run
B and W fused, as one "B"). Qi et al. 2024 and the controllable-memory follow-up; DeepSeek-V3.
* zb-h1: handcrafted: 1F1B with rank r's first r W deferred to fill the drain (1F1B's memory).
* zb-h2: from `greedy_order` under a limit of 2*pp - 1 micro-batches in flight; each rank starts
  its next step when its own step is done (the paper's optimizer post-validation), so the step
  is the longest rank's own span: the fill of the pipeline overlaps the previous step.
* zb-v: from `greedy_order`, two chunks per rank in a V (chunk 0 down the ranks, chunk 1 back
  up) under 1F1B's limit of pp micro-batches; staggered as zb-h2.
* dualpipe: bidirectional; micro-batches enter at both ends, each rank holds two copies of
  its stage's parameters, overlapped forward/backward pairs hide their expert all-to-all.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from parasim.cost.flops import attention_flops_per_token_layer, causal_context, layer_matmul_params_active
from parasim.cost.layer import ATTN_BWD_FLOPS_RATIO
from parasim.cost.partition import rank_stages
from parasim.errors import InputError
from parasim.registry import Registry
from parasim.training.dualpipe_order import dualpipe_order
from parasim.training.greedy_order import greedy_order


class Op(NamedTuple):
    kind: str  # "F" | "B" (input gradient, with the weight gradient unless split) | "W" (weight gradient)
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
    splits_backward = False  # emits W ops (B is then the input gradient only)
    layout = "loop"  # where a rank's chunks sit in the model (cost.partition.rank_stages)
    chunks: int | None = None  # the one number of chunks per rank it runs (implied when not given)
    staggered = False  # ranks start the next step when their own ends (no step-wide barrier)
    timed = False  # its order depends on the ops' relative times (rank_ops `times`)

    def ops(self, rank: int, pp: int, m: int, v: int) -> list[Op]:  # pragma: no cover - interface
        raise NotImplementedError

    def overlapped(self, rank: int, pp: int, m: int, v: int) -> frozenset[int]:
        """Indices i of rank's op list whose F runs overlapped with the B at i + 1 (DualPipe)."""
        return frozenset()

    def microbatch_multiple(self, pp: int) -> int:
        """The micro-batches per step must be a multiple of this."""
        return 1

    def min_microbatches(self, pp: int) -> int:
        """The fewest micro-batches per step it runs."""
        return 1

    def accepts_pp(self, pp: int) -> bool:
        return pp >= self.min_pp

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
def rank_ops(name: str, pp: int, m: int, v: int, times: tuple[float, float, float] = (1.0, 1.0, 1.0)
             ) -> tuple[tuple[Op, ...], ...]:
    """Every rank's op list for a registered schedule, cached (the planner asks for the same
    (pp, m, v) many times). Immutable: callers must not modify it. `times`: the (F, B, W) times
    of one chunk op relative to F (`op_times`), for a schedule whose order is planned at them."""
    s = get_schedule(name)
    if s.timed:
        return tuple(tuple(Op(*o) for o in row) for row in _greedy(name, pp, m, v, times))
    return tuple(tuple(s.ops(r, pp, m, v)) for r in range(pp))


def planned_op_times(model, seq_len: int, recompute: str) -> tuple[float, float, float]:
    """The (F, B, W) a timed schedule's order is planned at: a layer's FLOPs per token (weights
    2N each way, causal attention, its backward ATTN_BWD_FLOPS_RATIO times as many, recomputation
    added to B), so that the planner's memory screen and the simulator walk the same order
    without costing the plan first."""
    gemm = 2.0 * layer_matmul_params_active(model) / model.layers
    attn = attention_flops_per_token_layer(model, causal_context(seq_len))
    f = gemm + attn
    b = gemm + ATTN_BWD_FLOPS_RATIO * attn + (f if recompute == "full" else attn if recompute not in ("none", "dots")
                                              else 0.0)
    return op_times(f, b, gemm)


def op_times(f_s: float, b_s: float, w_s: float) -> tuple[float, float, float]:
    """(F, B, W) relative to F, rounded to a quarter: what a timed schedule's order is planned at
    (the rounding keeps the orders cached across plans of similar shape)."""
    if f_s <= 0:
        return 1.0, 1.0, 1.0
    return 1.0, max(round(4 * b_s / f_s) / 4, 0.25), max(round(4 * w_s / f_s) / 4, 0.25)


@lru_cache(maxsize=1024)
def rank_pairs(name: str, pp: int, m: int, v: int) -> tuple[frozenset[int], ...]:
    """Every rank's overlapped F/B pairs (`Schedule.overlapped`), cached."""
    s = get_schedule(name)
    return tuple(s.overlapped(r, pp, m, v) for r in range(pp))


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


class _SplitBackward(Schedule):
    """A zero-bubble schedule: pp >= 2; when `timed`, its order from `greedy_order` at the plan's
    op times under an activation limit of `cap_mb(pp)` micro-batches (per chunk: times v)."""

    min_pp = 2
    splits_backward = True
    requires = "pp >= 2"
    #: the share of a micro-batch's activations the order is planned to hold from its B to its W:
    #: a planning value only (at a half, equal F, B, W give the papers' zero bubble); the memory
    #: walk charges what W really reads (`cost.memory.weight_grad_input_bytes_per_layer`)
    held_fraction = 0.5

    def cap_mb(self, pp: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def check(self, plan) -> None:
        want = self.chunks or 1
        if plan.virtual_stages != want:
            raise InputError("virtual-stages", f"the {self.name} schedule runs {want} model chunk(s) per rank "
                                               f"(virtual_stages = {want}), got {plan.virtual_stages}")
        if plan.pp < self.min_pp:
            raise InputError("pp", f"the {self.name} schedule needs pp >= {self.min_pp}, got {plan.pp}")

    def ops(self, rank: int, pp: int, m: int, v: int) -> list[Op]:
        return list(rank_ops(self.name, pp, m, v)[rank])


def _greedy(name: str, pp: int, m: int, v: int, times: tuple[float, float, float]) -> list[list[tuple]]:
    s = get_schedule(name)
    return greedy_order(pp, m, rank_stages(pp, v, s.layout), s.cap_mb(pp) * v, s.held_fraction, times)


@register
class ZBH1(_SplitBackward):
    """1F1B with each rank's first `rank` weight gradients deferred: every rank then holds pp
    micro-batches (1F1B's peak, on rank 0), the B chain returns without waiting on W, and the
    deferred W fill the drain. Bubble (pp-1)(F+B-W) against 1F1B's (pp-1)(F+B+W)."""

    name = "zb-h1"

    def cap_mb(self, pp: int) -> float:
        return pp

    def ops(self, rank: int, pp: int, m: int, v: int) -> list[Op]:
        warm = min(pp - rank - 1, m)
        out = [Op("F", j, 0) for j in range(warm)]
        f, b, w = warm, 0, 0
        while b < m:
            if f < m:
                out.append(Op("F", f, 0))
                f += 1
            out.append(Op("B", b, 0))
            b += 1
            if b - w > rank:
                out.append(Op("W", w, 0))
                w += 1
        return out + [Op("W", j, 0) for j in range(w, m)]


@register
class ZBH2(_SplitBackward):
    name = "zb-h2"
    staggered = True
    timed = True

    def cap_mb(self, pp: int) -> float:
        return 2 * pp - 1


class _TwoChunks(_SplitBackward):
    """A split-backward schedule over exactly two model chunks per rank (implied when not given)."""

    chunked = True
    chunks = 2
    without_chunks = "zb-h1"


@register
class ZBV(_TwoChunks):
    name = "zb-v"
    staggered = True
    timed = True
    layout = "vee"
    requires = "pp >= 2, virtual_stages = 2"

    def cap_mb(self, pp: int) -> float:
        return pp


@register
class DualPipe(_TwoChunks):
    name = "dualpipe"
    layout = "mirror"
    requires = "even pp >= 2, virtual_stages = 2, an even number of micro-batches >= 2*pp"

    def microbatch_multiple(self, pp: int) -> int:
        return 2

    def min_microbatches(self, pp: int) -> int:
        return 2 * pp

    def accepts_pp(self, pp: int) -> bool:
        return pp >= self.min_pp and pp % 2 == 0

    def check(self, plan) -> None:
        super().check(plan)
        m = plan.micro_batches
        if plan.pp % 2:
            raise InputError("pp", f"the dualpipe schedule needs an even pp, got {plan.pp}")
        if m % 2 or m < 2 * plan.pp:
            raise InputError("global-batch", f"dualpipe needs an even number of micro-batches of at least 2*pp = "
                                             f"{2 * plan.pp} (global_batch/(dp*micro_batch) = {plan.global_batch}/"
                                             f"({plan.dp}*{plan.micro_batch}) = {m})")

    def ops(self, rank: int, pp: int, m: int, v: int) -> list[Op]:
        return [Op(*o) for o in dualpipe_order(rank, pp, m)[0]]

    def overlapped(self, rank: int, pp: int, m: int, v: int) -> frozenset[int]:
        return dualpipe_order(rank, pp, m)[1]
