"""The iteration-level, event-driven serving loop.

An *instance* is one engine loop: a replica, or with PP one of its `pp` virtual engines (vLLM's
pipeline mode: `pp` micro-batches in flight, each engine owning 1/pp of the KV blocks; a
micro-batch's iteration is its trip through every stage, so the stages stay busy with the
others). Each iteration is decide -> cost -> apply:

    batch = scheduler.schedule(inst)       # reads state only
    dt = inst.start(batch, t)              # preempt, admit, allocate KV, cost the exact batch
    inst.end(batch, t + dt)                # emit tokens, finish requests, free KV

Decoding requests are never iterated per step. The instance keeps aggregates: `n_dec`, the sum
of their cached contexts (grows by `n_dec` each step), a heap of finishing decode steps, and for
KV blocks the count of decoders per *phase* (context minus join step, modulo the block size): at
decode step d exactly the decoders of phase (1 - d) mod B cross into a new block. Token times are
the instance's array of decode-step end times; a request's tokens are a slice of it, so TPOT and
inter-token-latency statistics need no per-token Python work.

Events are ordered by `(time, kind rank, sequence)`: iteration ends, KV transfers, arrivals, then
iteration starts, so requests arriving at the instant an iteration ends join the next one.
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from collections.abc import Iterator

import numpy as np

from parasim.mathx import cdiv
from parasim.serving.itercost import IterationCost
from parasim.serving.kvcache import KVPool
from parasim.serving.schedulers.base import Batch, Scheduler

# request states
NEW, WAITING, PREFILL, DECODE, TRANSFER, DONE, DROPPED = range(7)
# event kind ranks (the tie-break between events at the same time)
END, XFER, ARRIVAL, START = 0, 1, 2, 3


class ReqState:
    """Per-request columns as typed arrays (8 bytes per request and field: a million requests fit
    in about 150 MB) that index as fast as lists in the hot loop."""

    def __init__(self, arrival, prompt, output, pid, plen) -> None:
        n = len(arrival)
        self.n = n

        def col(code: str, values=None, fill=0):
            a = array(code)
            if values is None:
                a.frombytes(np.full(n, fill, dtype=np.float64 if code == "d" else np.int64).tobytes())
            else:
                a.frombytes(np.asarray(values, dtype=np.float64 if code == "d" else np.int64).tobytes())
            return a

        self.arrival, self.P, self.O = col("d", arrival), col("q", prompt), col("q", output)
        self.pid, self.plen = col("q", pid), col("q", plen)
        self.state = col("q", fill=NEW)
        self.target = col("q")  # tokens this (re)prefill must have cached when done
        self.done = col("q")  # tokens of the target already cached
        self.gen = col("q")  # output tokens emitted so far
        self.shared = col("q")  # prefix-cache tokens this request references (multiple of the block size)
        self.own = col("q")  # blocks owned while prefilling (or reserved, in full-reservation mode)
        self.j = col("q")  # decode step at which it joined the decoders
        self.c0 = col("q")  # cached context at join
        self.epoch = col("q")
        self.first_sched = col("d", fill=-1.0)
        self.first_tok = col("d", fill=-1.0)
        self.last_tok = col("d", fill=-1.0)
        self.finish = col("d", fill=-1.0)
        self.preempt = col("q")
        self.inst = col("q", fill=-1)
        self.extra_gaps = array("d")  # inter-token gaps not on a decode-step boundary (joins, resumes)

    def target_if_admitted(self, rid: int) -> int:
        return self.P[rid] + self.gen[rid]


class Instance:
    def __init__(self, idx: int, *, replica: int, role: str, cost: IterationCost, kv: KVPool, scheduler: Scheduler,
                 st: ReqState, reserve_full: bool, gpus: int) -> None:
        self.idx, self.replica, self.role = idx, replica, role
        self.cost, self.kv, self.sched, self.st = cost, kv, scheduler, st
        self.block = kv.block
        self.reserve_full = reserve_full
        self.gpus = gpus
        self.waiting: deque[int] = deque()
        self.prefilling: list[int] = []
        self.n_dec = 0
        self.sum_ctx = 0
        self.dstep = 0
        self.phase = [0] * self.block
        self.fin: list[tuple[int, int, int]] = []
        # decoders in join order as (request, join epoch): lazy, so entries of requests that left are
        # skipped, and a request preempted and re-joined is listed twice but yielded once
        self.order: list[tuple[int, int]] = []
        self.pending: list[int] = []  # decoders that have not yet taken their first decode step here
        self.dtimes = array("d", [0.0])  # end time of each decode step (index = step number)
        self.dweight = array("q", [0])  # decoders whose previous token was the previous step's
        self.busy = False
        self.start_pending = False
        self.outstanding = 0  # tokens still to process for requests routed here (router signal)
        self.busy_s = 0.0
        self.kv_block_s = 0.0  # integral of used blocks over time
        self.iterations = 0
        self.peak_running = 0
        self.completed = 0
        self.in_transfer = 0  # prefill pool: requests whose KV is still being sent
        self.routed = 0

    # --- queries used by schedulers (read-only) -------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self.waiting or self.prefilling or self.n_dec)

    def running(self) -> int:
        return self.n_dec + len(self.prefilling)

    def decode_block_need(self) -> int:
        if self.reserve_full or not self.n_dec:
            return 0
        return self.phase[(1 - (self.dstep + 1)) % self.block]

    def ctx(self, rid: int) -> int:
        st = self.st
        return st.c0[rid] + self.dstep - st.j[rid]

    def needs_block_next(self, rid: int) -> int:
        if self.reserve_full:
            return 0
        return 1 if self.ctx(rid) % self.block == 0 else 0

    def own_blocks(self, rid: int) -> int:
        st = self.st
        if self.reserve_full or st.state[rid] != DECODE:
            return st.own[rid]
        return cdiv(self.ctx(rid), self.block) - st.shared[rid] // self.block

    def latest_decoders(self) -> Iterator[int]:
        st, order = self.st, self.order
        for i in range(len(order) - 1, -1, -1):
            rid, ep = order[i]
            if st.epoch[rid] == ep and st.state[rid] == DECODE and st.inst[rid] == self.idx:
                yield rid

    def shared_tokens_if_admitted(self, rid: int) -> int:
        st = self.st
        pid = st.pid[rid]
        if pid < 0 or not self.kv.enabled or st.gen[rid]:
            return 0
        cached = self.kv.cached_tokens(pid)
        if not cached:
            return 0
        B = self.block
        usable = min(st.plen[rid], st.P[rid] - 1) // B * B
        return min(cached, usable)

    # --- apply ------------------------------------------------------------------------------------------
    def start(self, b: Batch, t: float) -> float:
        st, kv, B = self.st, self.kv, self.block
        if b.victims:
            for rid in b.victims:
                self._preempt(rid)
        if b.admit:
            for _ in range(b.admit):
                self._admit(self.waiting.popleft(), t)
        if b.joins:
            for _ in range(b.joins):
                self._join_transferred(self.waiting.popleft(), t)
        tokens = 0
        pairs = 0.0
        pkv = 0.0
        logits = 0
        if b.chunks:
            done, target, own = st.done, st.target, st.own
            full = self.reserve_full
            for rid, c in b.chunks:
                d = done[rid]
                if not full:
                    # blocks for the chunk: ceil((d + c) / B) - ceil(d / B)
                    nb = cdiv(d + c, B) - cdiv(d, B)
                    kv.alloc(nb)
                    own[rid] += nb
                tokens += c
                pairs += c * d + c * (c + 1) * 0.5
                pkv += d
                if d + c == target[rid]:
                    logits += 1
        n = 0
        if b.decode:
            n = self.n_dec
            if n:
                if not self.reserve_full:
                    kv.alloc(self.phase[(-self.dstep) % B])
                tokens += n
                logits += n
        dt = self.cost.time_s(tokens, pairs, pkv, n, self.sum_ctx + n, logits)
        self.busy_s += dt
        self.kv_block_s += (kv.capacity - kv.free) * dt
        self.iterations += 1
        r = self.n_dec + len(self.prefilling)
        if r > self.peak_running:
            self.peak_running = r
        return dt

    def end(self, b: Batch, t: float, done_cb) -> None:
        st = self.st
        if b.decode and self.n_dec:
            self._decode_step(t, done_cb)
        for rid, c in b.chunks:
            st.done[rid] += c
            self.outstanding -= c
            if st.done[rid] == st.target[rid]:
                self._prefill_complete(rid, t, done_cb)

    # --- transitions --------------------------------------------------------------------------------------
    def _admit(self, rid: int, t: float) -> None:
        st, kv = self.st, self.kv
        st.state[rid] = PREFILL
        st.target[rid] = st.P[rid] + st.gen[rid]
        shared = self.shared_tokens_if_admitted(rid)
        if shared:
            kv.acquire(st.pid[rid])
        st.shared[rid] = shared
        st.done[rid] = shared
        self.outstanding -= shared
        if self.reserve_full:
            nb = cdiv(st.target[rid] + st.O[rid] - st.gen[rid], self.block) - shared // self.block
            kv.alloc(nb)
            st.own[rid] = nb
        else:
            st.own[rid] = 0
        if st.first_sched[rid] < 0:
            st.first_sched[rid] = t
        self.prefilling.append(rid)

    def _prefill_complete(self, rid: int, t: float, done_cb) -> None:
        st, kv, B = self.st, self.kv, self.block
        self.prefilling.remove(rid)
        # the prefix this prompt computed becomes a shared cache entry
        pid = st.pid[rid]
        if kv.enabled and pid >= 0 and not st.shared[rid] and not st.gen[rid]:
            pb = min(st.plen[rid], st.P[rid] - 1) // B
            if pb and kv.insert(pid, pb):
                st.shared[rid] = pb * B
                st.own[rid] -= pb
        if st.gen[rid] and st.last_tok[rid] >= 0:
            st.extra_gaps.append(t - st.last_tok[rid])  # the gap across a preemption
        st.gen[rid] += 1
        self.outstanding -= 1
        if st.first_tok[rid] < 0:
            st.first_tok[rid] = t
        st.last_tok[rid] = t
        if st.gen[rid] >= st.O[rid]:
            self._release(rid)
            self._finish(rid, t, done_cb)
            return
        if self.role == "prefill":
            st.state[rid] = TRANSFER
            self.in_transfer += 1
            done_cb(rid, t, "transfer")
            return
        self._become_decoder(rid, st.target[rid])
        self.pending.append(rid)

    def _become_decoder(self, rid: int, ctx: int) -> None:
        st = self.st
        st.state[rid] = DECODE
        st.c0[rid] = ctx
        st.j[rid] = self.dstep
        st.epoch[rid] += 1
        self.n_dec += 1
        self.sum_ctx += ctx
        if not self.reserve_full:
            self.phase[(ctx - self.dstep) % self.block] += 1
        heapq.heappush(self.fin, (self.dstep + st.O[rid] - st.gen[rid], rid, st.epoch[rid]))
        order = self.order
        order.append((rid, st.epoch[rid]))
        if len(order) > 2 * self.n_dec + 64:  # drop the stale entries (amortised O(1) per join)
            ep, state, inst, me = st.epoch, st.state, st.inst, self.idx
            self.order = [(r, e) for r, e in order if ep[r] == e and state[r] == DECODE and inst[r] == me]

    def _join_transferred(self, rid: int, t: float) -> None:
        """Decode pool: a request whose KV arrived joins the decoders (blocks allocated here)."""
        st = self.st
        ctx = st.target[rid]
        if self.reserve_full:
            nb = cdiv(ctx + st.O[rid] - st.gen[rid], self.block)
        else:
            nb = cdiv(ctx, self.block)
        self.kv.alloc(nb)
        st.own[rid] = nb
        st.shared[rid] = 0
        if st.first_sched[rid] < 0:
            st.first_sched[rid] = t
        self._become_decoder(rid, ctx)
        self.pending.append(rid)

    def _decode_step(self, t: float, done_cb) -> None:
        st = self.st
        n = self.n_dec
        self.dstep += 1
        d = self.dstep
        self.sum_ctx += n
        self.outstanding -= n
        pend = self.pending
        if pend:
            for rid in pend:
                if st.state[rid] == DECODE and st.inst[rid] == self.idx:
                    st.extra_gaps.append(t - st.last_tok[rid])
            cont = n - len(pend)
            pend.clear()
        else:
            cont = n
        self.dtimes.append(t)
        self.dweight.append(cont)
        fin = self.fin
        while fin and fin[0][0] <= d:
            _, rid, ep = heapq.heappop(fin)
            if st.epoch[rid] != ep or st.state[rid] != DECODE or st.inst[rid] != self.idx:
                continue
            st.gen[rid] = st.O[rid]
            st.last_tok[rid] = t
            self._leave_decoders(rid)
            self._finish(rid, t, done_cb)

    def _leave_decoders(self, rid: int) -> None:
        st = self.st
        ctx = self.ctx(rid)
        self.n_dec -= 1
        self.sum_ctx -= ctx
        if not self.reserve_full:
            self.phase[(st.c0[rid] - st.j[rid]) % self.block] -= 1
            st.own[rid] = cdiv(ctx, self.block) - st.shared[rid] // self.block
        self._release(rid)

    def _release(self, rid: int) -> None:
        st = self.st
        self.kv.release(st.own[rid])
        st.own[rid] = 0
        if st.shared[rid]:
            self.kv.release_prefix(st.pid[rid])
            st.shared[rid] = 0

    def _finish(self, rid: int, t: float, done_cb) -> None:
        st = self.st
        st.state[rid] = DONE
        st.finish[rid] = t
        self.completed += 1
        done_cb(rid, t, "done")

    def _preempt(self, rid: int) -> None:
        """Recompute preemption: drop the KV, keep the emitted tokens, requeue at the front."""
        st = self.st
        if st.state[rid] == DECODE:
            # tokens emitted so far, as of this decode step
            steps = self.dstep - st.j[rid]
            st.gen[rid] = st.gen[rid] + steps
            if steps:
                st.last_tok[rid] = self.dtimes[self.dstep]
            self._leave_decoders(rid)
            st.epoch[rid] += 1
            if rid in self.pending:
                self.pending.remove(rid)
        else:
            self.prefilling.remove(rid)
            self._release(rid)
        st.state[rid] = WAITING
        st.preempt[rid] += 1
        self.outstanding += st.P[rid] + st.gen[rid]  # the recompute
        self.waiting.appendleft(rid)



class Router:
    """Picks a replica for each arriving request (small classes in a registry)."""

    name = ""

    def choose(self, rid: int, groups: list[list[Instance]], tokens: int) -> int:  # pragma: no cover
        raise NotImplementedError


class RoundRobin(Router):
    name = "round_robin"

    def __init__(self) -> None:
        self.next = 0

    def choose(self, rid: int, groups: list[list[Instance]], tokens: int) -> int:
        g = self.next % len(groups)
        self.next += 1
        return g


class LeastOutstandingTokens(Router):
    name = "least_outstanding_tokens"

    def choose(self, rid: int, groups: list[list[Instance]], tokens: int) -> int:
        best, best_v = 0, None
        for g, insts in enumerate(groups):
            v = sum(i.outstanding for i in insts)
            if best_v is None or v < best_v:
                best, best_v = g, v
        return best


ROUTERS = {RoundRobin.name: RoundRobin, LeastOutstandingTokens.name: LeastOutstandingTokens}


def least_loaded(insts: list[Instance]) -> Instance:
    best = insts[0]
    for i in insts[1:]:
        if i.outstanding < best.outstanding:
            best = i
    return best


class Loop:
    """The global event loop over all instances (one heap, arrivals merged from a sorted column)."""

    def __init__(self, st: ReqState, groups: list[list[Instance]], router: Router,
                 decode_groups: list[list[Instance]] | None = None, transfer_s=None,
                 max_concurrency: int | None = None) -> None:
        self.st = st
        self.groups = groups
        self.instances = [i for g in groups for i in g] + [i for g in (decode_groups or []) for i in g]
        self.router = router
        self.decode_groups = decode_groups
        self.decode_router = LeastOutstandingTokens()
        self.transfer_s = transfer_s
        self.heap: list = []
        self.seq = 0
        self.makespan = 0.0
        self.dropped = 0
        # closed-loop client (benchmark --max-concurrency N): request k + N is sent when the k-th
        # answer (or failure) comes back, not before its own arrival time; until then its arrival
        # is +inf, so the arrival-ordered loops below simply wait for it
        self._held: list[float] | None = None  # the held requests' own arrival times, from index N on
        self._next = st.n
        if max_concurrency is not None and max_concurrency < st.n:
            self._held = st.arrival[max_concurrency:].tolist()
            self._held_from = self._next = max_concurrency
            for k in range(max_concurrency, st.n):
                st.arrival[k] = float("inf")

    def _send_next(self, t: float) -> None:
        """A closed-loop client got an answer (or an error) at t: send its next request."""
        if self._held is not None and self._next < self.st.n:
            k = self._next
            orig = self._held[k - self._held_from]
            self.st.arrival[k] = orig if orig > t else t
            self._next = k + 1

    def _push(self, t: float, rank: int, kind: str, obj) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, rank, self.seq, kind, obj))

    def _wake(self, inst: Instance, t: float) -> None:
        if not inst.busy and not inst.start_pending:
            inst.start_pending = True
            self._push(t, START, "start", inst)

    def _on_done(self, rid: int, t: float, what: str) -> None:
        if t > self.makespan:
            self.makespan = t
        if what == "transfer":
            self._push(t + self.transfer_s(rid), XFER, "xfer", rid)
        else:
            self._send_next(t)

    def _begin(self, inst: Instance, t: float) -> None:
        """Start the next iteration of `inst` at time t, if it has anything to run."""
        inst.start_pending = False
        while True:
            b = inst.sched.schedule(inst)
            if b.empty():
                inst.busy = False
                self._check_stuck(inst)
                return
            dt = inst.start(b, t)
            inst.busy = True
            self._push(t + dt, END, "end", (inst, b))
            return

    def _check_stuck(self, inst: Instance, restart: bool = True) -> None:
        """Nothing runnable but work queued: the head request can never fit (drop it, say so)."""
        if inst.waiting and not inst.prefilling and not inst.n_dec and not inst.in_transfer:
            rid = inst.waiting.popleft()
            self.st.state[rid] = DROPPED
            self.dropped += 1
            self._send_next(self._now)
            if inst.waiting and restart:
                self._begin(inst, self._now)
        elif not restart:  # pragma: no cover - a scheduler that idles with work it could run
            raise RuntimeError(f"scheduler {inst.sched.name} returned an empty batch with work pending")

    def independent(self) -> bool:
        """Round-robin over single-engine replicas: no instance's decisions depend on another's."""
        return (isinstance(self.router, RoundRobin) and not self.decode_groups and self._held is None
                and all(len(g) == 1 for g in self.groups))

    def run(self) -> None:
        if self.independent():
            for g, grp in enumerate(self.groups):
                self._run_alone(grp[0], g, len(self.groups))
            return
        self._run_events()

    def _run_alone(self, inst: Instance, first: int, stride: int) -> None:
        """The event loop specialised to one instance that receives every `stride`-th arrival
        starting at `first`: same ordering rules (an arrival at an iteration's end joins the next
        iteration), no heap."""
        st = self.st
        arr, P, O, state, sinst = st.arrival, st.P, st.O, st.state, st.inst
        n = st.n
        i = first
        t = 0.0
        sched, waiting, idx = inst.sched, inst.waiting, inst.idx
        on_done = self._on_done
        while True:
            while i < n and arr[i] <= t:
                if state[i] == DROPPED:  # rejected on arrival: it can never fit (simulate's kv_fit)
                    i += stride
                    continue
                sinst[i] = idx
                state[i] = WAITING
                inst.outstanding += P[i] + O[i]
                inst.routed += 1
                waiting.append(i)
                i += stride
            if not (waiting or inst.prefilling or inst.n_dec):
                if i >= n:
                    break
                t = arr[i]
                continue
            b = sched.schedule(inst)
            if b.empty():
                self._now = t
                self._check_stuck(inst, restart=False)
                if not (waiting or inst.prefilling or inst.n_dec) and i < n:
                    t = max(t, arr[i])
                continue
            t += inst.start(b, t)
            inst.end(b, t, on_done)

    def _run_events(self) -> None:
        st = self.st
        arr = st.arrival
        n = st.n
        i = 0
        heap = self.heap
        groups = self.groups
        router = self.router
        on_done = self._on_done
        self._now = 0.0
        while True:
            ta = arr[i] if i < n else float("inf")
            if heap and (heap[0][0] < ta or (heap[0][0] == ta and heap[0][1] < ARRIVAL)):
                t, _, _, kind, obj = heapq.heappop(heap)
                self._now = t
                if kind == "end":
                    inst, b = obj
                    inst.end(b, t, on_done)
                    inst.busy = False
                    if inst.has_work():
                        nxt = heap[0][0] if heap else float("inf")
                        if ta > t and nxt > t:
                            self._begin(inst, t)
                        else:
                            self._wake(inst, t)
                elif kind == "start":
                    if not obj.busy:
                        self._begin(obj, t)
                    else:
                        obj.start_pending = False
                else:  # KV transfer done: free on the prefill side, queue on the decode side
                    rid = obj
                    src = self.instances[st.inst[rid]]
                    src._release(rid)
                    src.in_transfer -= 1
                    g = self.decode_router.choose(rid, self.decode_groups, 0)
                    dst = least_loaded(self.decode_groups[g])
                    st.inst[rid] = dst.idx
                    st.state[rid] = WAITING
                    dst.outstanding += st.O[rid] - st.gen[rid]
                    dst.waiting.append(rid)
                    self._wake(dst, t)
                    if src.has_work() and not src.busy:
                        self._wake(src, t)
            elif i < n:
                if ta == float("inf"):  # pragma: no cover - every answer sends the next held request
                    raise RuntimeError("closed-loop client waits for an answer that never comes")
                rid = i
                i += 1
                self._now = ta
                tokens = st.P[rid] + st.O[rid]
                g = router.choose(rid, groups, tokens)
                if st.state[rid] == DROPPED:  # rejected on arrival (as in _run_alone: it used its turn)
                    self._send_next(ta)
                    continue
                grp = groups[g]
                inst = grp[0] if len(grp) == 1 else least_loaded(grp)
                st.inst[rid] = inst.idx
                st.state[rid] = WAITING
                inst.outstanding += tokens
                inst.routed += 1
                inst.waiting.append(rid)
                self._wake(inst, ta)
            else:
                break
