"""Live migration of decoding requests between replicas, as Llumnix does it (Sun et al., "Llumnix:
Dynamic Scheduling for Large Language Model Serving", OSDI'24, sections 4.2-4.4).

Every `interval_s` the policy pairs the instances whose freeness (`routers.freeness`: free KV
blocks per request, queued prompts counted) is below the migrate-out threshold, least free first,
with those above it, most free first, and moves one decoding request per pair: the one with the
fewest cached tokens (Llumnix's default request policy, "SR"), the cheapest to move.

A move copies the KV cache in stages while the request keeps decoding at the source: stage 0
sends the whole cache, each later stage the tokens decoded during the one before. When what is
left is at most LAST_STAGE_MAX_BLOCKS blocks, the source stops the request between two of its
iterations and sends the rest; that last copy is the request's downtime, after which it decodes
at the destination. A move that would need more than MAX_STAGES stages, whose request finishes
or is preempted at the source meanwhile, or whose destination runs out of blocks, is dropped
(the request stays). Costs: the destination holds the blocks copied so far from the first stage
on, the source keeps its own until the stop (both count against their KV caches), and each
stage takes the link's time (`cost.comm.kv_link`: NVLink inside a node, the NICs across nodes).
Not modelled: the copy's use of HBM bandwidth on the running batches (Llumnix measures it as
negligible, section 6.2), and migration in the prefill phase or of queued requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from parasim.cost.comm import KVLink
from parasim.mathx import cdiv
from parasim.serving.engine import START, XFER, Instance, Loop
from parasim.serving.reqstate import DECODE
from parasim.serving.routers import blocks_left, freeness

#: Llumnix's defaults (llumnix/config/default.py): seconds between pairings (POLLING_INTERVAL, with
#: PAIR_MIGRATION_FREQUENCY 1), the migrate-out freeness threshold (MIGRATE_OUT_THRESHOLD), most
#: copy stages (MAX_STAGES) and the largest last stage in blocks (LAST_STAGE_MAX_BLOCKS)
POLLING_INTERVAL_S = 0.05
MIGRATE_OUT_THRESHOLD = 3.0
MAX_STAGES = 3
LAST_STAGE_MAX_BLOCKS = 16


@dataclass(kw_only=True)
class Move:
    """One request's migration in progress."""

    rid: int
    epoch: int  # the request's epoch at the start: a preemption or finish at the source changes it
    src: Instance
    dst: Instance
    link: KVLink
    t0: float
    copied: int  # tokens sent so far (after the stop: the whole cached context)
    held: int  # blocks allocated at the destination so far
    stages: int = 1
    stopped: bool = False  # the source has stopped it: its last copy is under way


@dataclass(kw_only=True)
class Migration:
    """The policy and its counters (the run's `summary.migration`)."""

    interval_s: float
    threshold: float
    bytes_per_token: float
    link_of: Callable[[Instance, Instance], KVLink]  # the KV path between two instances
    moves: dict[int, Move] = field(default_factory=dict)  # by request
    stopping: dict[int, Move] = field(default_factory=dict)  # by source instance: stop at its next iteration start
    joining: dict[int, Move] = field(default_factory=dict)  # by destination: join at its next iteration start
    migrations: int = 0
    aborted: int = 0
    bytes_moved: float = 0.0
    stages: int = 0
    downtime_s: list[float] = field(default_factory=list)
    copy_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        n = self.migrations
        return {"policy": "llumnix", "interval_s": self.interval_s, "migrate_out_threshold": self.threshold,
                "migrations": n, "aborted": self.aborted, "bytes_moved": self.bytes_moved,
                "stages_mean": self.stages / n if n else None,
                "downtime_mean_s": sum(self.downtime_s) / n if n else None,
                "downtime_max_s": max(self.downtime_s) if n else None,
                "copy_time_mean_s": sum(self.copy_s) / n if n else None}


def _blocks_at_dst(inst: Instance, rid: int, ctx: int) -> int:
    """Blocks the destination needs for `ctx` cached tokens of `rid` (with full reservation: the
    whole request, prompt and output, as the source reserved it)."""
    if inst.reserve_full:
        st = inst.st
        emitted = st.emitted[rid] + inst.decode_step - st.join_step[rid]
        return cdiv(inst.ctx(rid) + st.output_tokens[rid] - emitted, inst.block)
    return cdiv(ctx, inst.block)


class MigratingLoop(Loop):
    """The event loop with a migration policy: its pairings and copy stages are events on the
    heap (kind "call"); a stop waits for the source's next iteration start (`_begin`)."""

    def __init__(self, *args, migration: Migration, **kw) -> None:
        super().__init__(*args, **kw)
        self.mig = migration
        self._ticking = False

    def independent(self) -> bool:
        return False  # migration couples the instances

    def _arrive(self, rid: int, t: float) -> None:
        super()._arrive(rid, t)
        if not self._ticking:
            self._ticking = True
            self._push(t + self.mig.interval_s, START, "call", self._tick_migration)

    def _begin(self, inst: Instance, t: float) -> None:
        """A request stops or joins between two iterations of its instance, never during one."""
        m = self.mig
        if m.stopping and inst.idx in m.stopping:
            self._stop(m.stopping.pop(inst.idx), t)
        if m.joining and inst.idx in m.joining:
            self._join(m.joining.pop(inst.idx), t)
        super()._begin(inst, t)

    def _iteration_end(self, inst: Instance, b, t: float, next_arrival_s: float) -> None:
        super()._iteration_end(inst, b, t, next_arrival_s)
        m = self.mig
        if (m.joining or m.stopping) and not inst.busy and not inst.start_pending and (
                inst.idx in m.joining or inst.idx in m.stopping):
            self._begin(inst, t)  # it ran out of work: the request waiting for this iteration's end goes now

    # --- the policy -----------------------------------------------------------------------------------------
    def _tick_migration(self, t: float) -> None:
        """Pair the least free instances below the threshold with the most free above it."""
        m = self.mig
        for mv in [mv for mv in m.moves.values() if not mv.stopped and not self._valid(mv)]:
            if m.stopping.get(mv.src.idx) is mv:  # finished or preempted at the source meanwhile
                del m.stopping[mv.src.idx]
            self._abort(mv, t)
        moving = {mv.src.idx for mv in m.moves.values()} | {mv.dst.idx for mv in m.moves.values()}
        idle = [i for i in self.instances if i.idx not in moving]
        # free blocks per request bound the freeness from above (queued prompts only lower it): when
        # no engine could take a request in, no pair forms, and the queues need not be read
        if any(i.kv.available() > m.threshold * i.requests_in() for i in idle):
            free = [(freeness([i]), i.idx) for i in idle]
            src = sorted((f, k) for f, k in free if f < m.threshold)
            dst = sorted(((-f, k) for f, k in free if f > m.threshold))
            for (_, s), (_, d) in zip(src, dst):
                a, b = self.instances[s], self.instances[d]
                if a.replica != b.replica:
                    self._start(a, b, t)
        if any(i.has_work() or i.busy for i in self.instances) or m.moves:
            self._push(t + m.interval_s, START, "call", self._tick_migration)
        else:
            self._ticking = False

    def _start(self, a: Instance, b: Instance, t: float) -> None:
        """Move a's decoder with the fewest cached tokens to b, if b stays above the threshold."""
        m, st = self.mig, self.st
        rid = min(a.latest_decoders(), key=a.ctx, default=None)
        if rid is None:
            return
        ctx = a.ctx(rid)
        need = _blocks_at_dst(a, rid, ctx)
        if need > b.kv.free or (blocks_left([b]) - need) / (b.requests_in() + 1) < m.threshold:
            return
        b.kv.alloc(need)
        b.in_transfer += 1  # blocks held for an incoming request: an idle destination's queue waits for it
        link = m.link_of(a, b)
        mv = Move(rid=rid, epoch=st.epoch[rid], src=a, dst=b, link=link, t0=t, copied=ctx, held=need)
        m.moves[rid] = mv
        m.bytes_moved += ctx * m.bytes_per_token
        self._push(t + link.time_s(ctx * m.bytes_per_token), XFER, "call", partial(self._stage, mv))

    def _valid(self, mv: Move) -> bool:
        st, rid = self.st, mv.rid
        return st.epoch[rid] == mv.epoch and st.state[rid] == DECODE and st.instance[rid] == mv.src.idx

    def _live(self, mv: Move, t: float) -> bool:
        """The move is still under way and its request still decodes at the source; a move whose
        request finished or was preempted meanwhile is dropped here."""
        if self.mig.moves.get(mv.rid) is not mv:  # dropped already (at a pairing)
            return False
        if not self._valid(mv):
            self._abort(mv, t)
            return False
        return True

    def _hold(self, mv: Move, ctx: int) -> bool:
        """Allocate at the destination the blocks `ctx` cached tokens need beyond those held; False
        (nothing allocated) when it has too few free."""
        extra = _blocks_at_dst(mv.src, mv.rid, ctx) - mv.held
        if extra > mv.dst.kv.free:
            return False
        mv.dst.kv.alloc(extra)
        mv.held += extra
        return True

    def _stage(self, mv: Move, t: float) -> None:
        """A copy stage ended: send what was decoded meanwhile in another stage, or stop the request."""
        m = self.mig
        if not self._live(mv, t):
            return
        cur = mv.src.ctx(mv.rid)
        new = cur - mv.copied
        if cdiv(new, mv.src.block) <= LAST_STAGE_MAX_BLOCKS:
            if mv.src.busy:
                m.stopping[mv.src.idx] = mv
            else:
                self._stop(mv, t)
            return
        if mv.stages >= MAX_STAGES or not self._hold(mv, cur):
            self._abort(mv, t)
            return
        mv.copied = cur
        mv.stages += 1
        m.bytes_moved += new * m.bytes_per_token
        self._push(t + mv.link.time_s(new * m.bytes_per_token), XFER, "call", partial(self._stage, mv))

    def _stop(self, mv: Move, t: float) -> None:
        """The last stage: the source stops the request and sends the rest (the downtime)."""
        m, src = self.mig, mv.src
        if not self._live(mv, t):
            return
        if not self._hold(mv, src.ctx(mv.rid)):
            self._abort(mv, t)
            return
        ctx = src.migrate_out(mv.rid)
        mv.stopped = True
        rest = (ctx - mv.copied) * m.bytes_per_token
        m.bytes_moved += rest
        down = mv.link.time_s(rest)
        m.downtime_s.append(down)
        mv.copied = ctx
        self._push(t + down, XFER, "call", partial(self._arrived, mv))
        if src.has_work() and not src.busy:
            self._wake(src, t)

    def _arrived(self, mv: Move, t: float) -> None:
        """The last copy is in: the request joins the destination's decoders now, or when the
        iteration running there ends."""
        if mv.dst.busy:
            self.mig.joining[mv.dst.idx] = mv
        else:
            self._join(mv, t)

    def _join(self, mv: Move, t: float) -> None:
        m = self.mig
        mv.dst.in_transfer -= 1
        mv.dst.migrate_in(mv.rid, mv.copied, mv.held)
        del m.moves[mv.rid]
        m.migrations += 1
        m.stages += mv.stages + 1
        m.copy_s.append(t - mv.t0)
        self._wake(mv.dst, t)

    def _abort(self, mv: Move, t: float) -> None:
        m, dst = self.mig, mv.dst
        dst.kv.release(mv.held)
        dst.in_transfer -= 1
        del m.moves[mv.rid]
        m.aborted += 1
        if dst.has_work() and not dst.busy:
            self._wake(dst, t)
