"""The iteration-level, event-driven serving loop.

An *instance* is one engine loop: a replica, or with PP one of its `pp` virtual engines (vLLM's
pipeline mode: `pp` micro-batches in flight, each engine owning 1/pp of the KV blocks; a
micro-batch's iteration is its trip through every stage, so the stages stay busy with the
others). Each iteration is decide -> cost -> apply:

    batch = inst.decide()                  # queue policy orders the queue; scheduler.schedule reads only
    dt = inst.start(batch, t)              # preempt, admit, allocate KV, cost the exact batch
    inst.end(batch, t + dt)                # emit tokens, finish requests, free KV

Requests enter an instance one way, `Instance.enqueue` (an arrival the router sent, or a KV
cache that arrived at a decode pool), and leave its queue only through `start`.

Decoding requests are never iterated per step. The instance keeps aggregates: `n_dec`, the sum
of their cached contexts (grows by `n_dec` each step), a heap of finishing decode steps, and for
KV blocks the count of decoders per *phase* (context minus join step, modulo the block size): at
decode step d exactly the decoders of phase (1 - d) mod B cross into a new block. Token times are
the instance's array of decode-step end times; a request's tokens are a slice of it, so TPOT and
inter-token-latency statistics need no per-token Python work.

Events are ordered by `(time, kind rank, sequence)`: iteration ends, KV transfers, arrivals, then
iteration starts, so requests arriving at the instant an iteration ends join the next one.

Instances whose iterations touch nothing outside themselves (the ones that decode, unless
answers, ticks or moves couple them) are stepped on demand rather than through the heap
(`Loop._advance`): only up to the instant of the next event that reads or feeds them, which is
when the heap would have shown them to anyone.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import insort
from collections import deque
from collections.abc import Iterator
from functools import partial

from parasim.mathx import cdiv
from parasim.serving.autoscale import ReplicaClock
from parasim.serving.itercost import IterationCost
from parasim.serving.kvcache import KVPool, request_window_blocks
from parasim.serving.output_estimate import INIT_NEW_TOKEN_RATIO, ratio_after_retraction, ratio_now
from parasim.serving.reqstate import DECODE, DONE, DROPPED, PREFILL, TRANSFER, WAITING, ReqState
from parasim.serving.routers import ROUTERS, LeastOutstandingTokens, RoundRobin, Router  # ROUTERS: re-exported
from parasim.serving.schedulers.base import Batch, Scheduler

# event kind ranks (the tie-break between events at the same time)
END, XFER, ARRIVAL, START = 0, 1, 2, 3
DECODE_ALL = Batch(decode=True)  # every decoder steps (read only: start and end never change a batch)


class Instance:
    def __init__(self, idx: int, *, replica: int, role: str, cost: IterationCost, kv: KVPool, scheduler: Scheduler,
                 st: ReqState, reserve_full: bool, gpus: int, schedule_ahead: bool = False,
                 reserve_estimated: bool = False, window: tuple[int, int] = (0, 0)) -> None:
        self.idx, self.replica, self.role = idx, replica, role
        # sliding-window layers kept to their window (ServingPlan.sliding_kv window): (k, blocks per
        # group) of serving.kvcache.window_blocks; each request books its `window_blocks` at admission
        self.win_k, self.win_group = window
        self.cost, self.kv, self.sched, self.st = cost, kv, scheduler, st
        self.block = kv.block
        self.reserve_full = reserve_full
        # kv_reservation `estimated` (serving.output_estimate): a prompt is admitted only if it and
        # its output budget fit beside the running requests' estimated remaining output, booked at
        # SGLang's new_token_ratio, which is (ratio, decode step it was set at) here
        self.reserve_estimated = reserve_estimated
        self.ratio_anchor = (INIT_NEW_TOKEN_RATIO, 0)
        self.last_end_s = 0.0  # when the last batch other than a decode-only run ended (estimated: idle test)
        self.gpus = gpus
        self.waiting: deque[int] = deque()
        # schedule_ahead (ServingPlan): the next batch is formed while this one runs, so a request
        # that arrives during an iteration is held here, out of the scheduler's sight, until the
        # batch formed ahead of it has started (`release_held`)
        self.ahead = schedule_ahead
        self.held: deque[int] = deque()
        self.prefilling: list[int] = []
        self.n_dec = 0  # decoding requests
        self.decode_ctx_sum = 0  # their cached contexts, summed
        self.decode_out_sum = 0  # their output lengths, summed (kv_reservation estimated)
        self.decode_end_sum = 0  # the decode steps they finish at, summed: minus n_dec x decode_step, tokens left
        self.decode_step = 0  # decode steps taken so far (the decoders' shared clock)
        self.decoders_by_phase = [0] * self.block  # decoders per (context - join step) mod block
        self.finishing: list[tuple[int, int, int]] = []  # heap of (decode step it finishes at, request, epoch)
        # decoders in join order as (request, join epoch): lazy, so entries of requests that left are
        # skipped, and a request preempted and re-joined is listed twice but yielded once
        self.join_order: list[tuple[int, int]] = []
        self.first_step_pending: list[int] = []  # decoders that have not yet taken their first decode step here
        self.step_end_s = array("d", [0.0])  # end time of each decode step (index = step number)
        self.step_continuing = array("q", [0])  # decoders whose previous token was the previous step's
        self.busy = False
        self.start_pending = False
        # stepped on demand by the loop (Loop._advance), not through its heap: then `due_s` is the
        # in-flight iteration's end (busy) or the pending start's time, `in_flight` that batch
        self.on_demand = False
        self.due_s = 0.0
        self.started_s = 0.0  # the in-flight iteration's start
        self.in_flight: Batch | None = None
        self.outstanding = 0  # tokens still to process for requests routed here (router signal)
        self.busy_s = 0.0
        self.kv_block_s = 0.0  # integral of used blocks over time
        self.iterations = 0
        self.peak_running = 0
        self.completed = 0
        self.in_transfer = 0  # prefill pool: requests whose KV is still being sent
        self.queue_unordered = False  # requests arrived since the queue policy last ordered the queue
        # timeline recording (serving.recording), None when off: one tuple per iteration start
        # (t, dt, prefill tokens, decode requests, preempted, running, waiting, used blocks) and
        # one per end (t, running, waiting, used blocks), formatted after the run
        self.rec: list[tuple] | None = None
        self.rec_end: list[tuple] | None = None

    # --- queries used by schedulers (read-only) -------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self.waiting or self.prefilling or self.n_dec or self.held)

    def running(self) -> int:
        return self.n_dec + len(self.prefilling)

    def decode_block_need(self) -> int:
        if self.reserve_full or not self.n_dec:
            return 0
        return self.decoders_by_phase[(1 - (self.decode_step + 1)) % self.block]

    def decode_tokens_left(self) -> int:
        """Output tokens the decoders have still to generate, summed (O(1): each finishes at a known step)."""
        return self.decode_end_sum - self.n_dec * self.decode_step

    def new_token_ratio(self) -> float:
        """SGLang's new_token_ratio now (serving.output_estimate)."""
        r, at = self.ratio_anchor
        return ratio_now(r, self.decode_step - at)

    def ctx(self, rid: int) -> int:
        st = self.st
        return st.join_ctx[rid] + self.decode_step - st.join_step[rid]

    def needs_block_next(self, rid: int) -> int:
        if self.reserve_full:
            return 0
        return 1 if self.ctx(rid) % self.block == 0 else 0

    def window_blocks(self, rid: int) -> int:
        """Blocks `rid` holds for its sliding-window layers (0 unless sliding_kv is window): the
        whole request's (the prompt's in a prefill pool), booked at admission, freed with the rest."""
        if not self.win_k:
            return 0
        st = self.st
        tokens = st.prompt_tokens[rid] + (st.output_tokens[rid] if self.role != "prefill" else 0)
        return request_window_blocks(tokens, self.win_k, self.win_group, self.block)

    def own_blocks(self, rid: int) -> int:
        st = self.st
        if self.reserve_full or st.state[rid] != DECODE:
            return st.owned_blocks[rid]
        return cdiv(self.ctx(rid), self.block) - st.shared_tokens[rid] // self.block + self.window_blocks(rid)

    def latest_decoders(self) -> Iterator[int]:
        st, order = self.st, self.join_order
        for i in range(len(order) - 1, -1, -1):
            rid, ep = order[i]
            if st.epoch[rid] == ep and st.state[rid] == DECODE and st.instance[rid] == self.idx:
                yield rid

    def shared_tokens_if_admitted(self, rid: int) -> int:
        st = self.st
        pid = st.prefix_id[rid]
        if pid < 0 or not self.kv.enabled or st.emitted[rid]:
            return 0
        cached = self.kv.cached_tokens(pid)
        if not cached:
            return 0
        B = self.block
        usable = min(st.prefix_tokens[rid], st.prompt_tokens[rid] - 1) // B * B
        return min(cached, usable)

    # --- decide -----------------------------------------------------------------------------------------
    def requests_in(self) -> int:
        """Requests routed here and not finished: queued, prefilling or decoding."""
        return len(self.waiting) + len(self.prefilling) + self.n_dec + len(self.held)

    def enqueue(self, rid: int, tokens: int, held: bool = False) -> None:
        """Queue request `rid` here (an arrival, or a transferred KV cache): `tokens` still to
        process count towards this instance's load. `held`: it arrived while an iteration ran on
        an engine that forms its next batch ahead (schedule_ahead), so that batch cannot hold it."""
        st = self.st
        st.instance[rid] = self.idx
        st.state[rid] = WAITING
        self.outstanding += tokens
        if held:
            self.held.append(rid)
            return
        self.waiting.append(rid)
        self.queue_unordered = True

    def release_held(self) -> None:
        """The batch formed ahead has started (or none was formed): the requests held during the
        previous iteration join the queue, in arrival order, for the next decision."""
        self.waiting.extend(self.held)
        self.held.clear()
        self.queue_unordered = True

    def decide(self) -> Batch:
        """The next batch: the waiting queue put in the scheduler's order first (when it has a
        queue policy and requests have arrived since), then `schedule`, which only reads."""
        order = self.sched.queue_order
        if order is not None and self.queue_unordered and self.waiting:
            ordered = order(self.st, self.waiting)
            self.waiting.clear()  # in place: the loop holds this deque
            self.waiting.extend(ordered)
            self.queue_unordered = False
        return self.sched.schedule(self)

    # --- apply ------------------------------------------------------------------------------------------
    def start(self, b: Batch, t: float) -> float:
        st, kv, B = self.st, self.kv, self.block
        if (self.reserve_estimated and not self.n_dec and not self.prefilling
                and t > max(self.last_end_s, self.step_end_s[-1])):
            # the engine sat idle (no batch) since its last iteration: SGLang resets the ratio then
            self.ratio_anchor = (INIT_NEW_TOKEN_RATIO, self.decode_step)
        if b.victims:
            for rid in b.victims:
                self._preempt(rid)
            if self.reserve_estimated and self.n_dec:
                # retract_decode: the ratio from what the requests that stay have generated
                left = self.decode_tokens_left()
                self.ratio_anchor = (ratio_after_retraction(self.decode_out_sum - left, self.decode_out_sum, self.n_dec),
                                     self.decode_step)
        if b.admit:
            admitted = [self.waiting.popleft() for _ in range(b.admit)]
            # every admitted prompt takes its shared prefix before any allocates: the scheduler counted
            # on those cached blocks, and an earlier prompt's allocation must not evict them
            for rid in admitted:
                self._claim_prefix(rid)
            for rid in admitted:
                self._admit(rid, t)
        if b.joins:
            for _ in range(b.joins):
                self._join_transferred(self.waiting.popleft(), t)
        tokens = 0
        pairs = 0.0
        pkv = 0.0
        logits = 0
        if b.chunks:
            done, target, own = st.prefilled, st.prefill_target, st.owned_blocks
            full = self.reserve_full
            for rid, c in b.chunks:
                d = done[rid]
                if not full:
                    # blocks for the chunk, cdiv(d + c, B) - cdiv(d, B), as one floor difference
                    # (the same for every integer; no calls in the per-chunk loop)
                    nb = (d + c - 1) // B - (d - 1) // B
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
                    kv.alloc(self.decoders_by_phase[(-self.decode_step) % B])
                tokens += n
                logits += n
        dt = self.cost.time_s(tokens, pairs, pkv, n, self.decode_ctx_sum + n, logits)
        self.busy_s += dt
        self.kv_block_s += (kv.capacity - kv.free) * dt
        self.iterations += 1
        r = self.n_dec + len(self.prefilling)
        if r > self.peak_running:
            self.peak_running = r
        if self.rec is not None:
            self.rec.append((t, dt, tokens - n, n, len(b.victims), r, len(self.waiting), kv.capacity - kv.free))
        return dt

    def end(self, b: Batch, t: float, done_cb) -> None:
        st = self.st
        self.last_end_s = t
        if b.decode and self.n_dec:
            self._decode_step(t, done_cb)
        for rid, c in b.chunks:
            st.prefilled[rid] += c
            self.outstanding -= c
            if st.prefilled[rid] == st.prefill_target[rid]:
                self._prefill_complete(rid, t, done_cb)
        if self.rec_end is not None:
            self.rec_end.append((t, self.n_dec + len(self.prefilling), len(self.waiting), self.kv.capacity - self.kv.free))

    def decode_run(self, t: float, until_s: float, done_cb, end_by_s: float = float("inf")) -> float:
        """Decode-only iterations back to back from t, while nothing can change the batch: no
        request queued or prefilling, the next arrival after the iteration's start (`until_s`),
        and free blocks for each step's new blocks; with `end_by_s`, only steps that end by then
        (the loop's on-demand stepping: a step still running at a reader's instant stays a batch
        in flight). Exact: in that state the scheduler's batch is every decoder's step
        (`Scheduler.decodes_when_idle`), and each step here is what `start` and `end` apply to
        that batch, in the same float operations and order, without building a batch or asking the
        scheduler per step. Returns the time the last step ends."""
        kv, B, phase, full = self.kv, self.block, self.decoders_by_phase, self.reserve_full
        cap, fin, ends, conts = kv.capacity, self.finishing, self.step_end_s, self.step_continuing
        step, step_fn = self._decode_step, self.cost.decode_step_s
        while self.n_dec and t < until_s:
            n, d, ctx = self.n_dec, self.decode_step, self.decode_ctx_sum
            step_s = step_fn(n)
            stop = fin[0][0] if fin else 1 << 62  # the decode step at which one finishes
            if not self.first_step_pending and d + 1 < stop:
                # a quiet stretch: nobody joins or leaves, so `_decode_step` would only count; the
                # counters stay in locals (the same integer and float operations, in order)
                busy, kv_s, d0 = self.busy_s, self.kv_block_s, d
                while t < until_s and d + 1 < stop:
                    need = 0 if full else phase[(-d) % B]
                    if kv.free < need:
                        break
                    dt = step_s(ctx + n)
                    if t + dt > end_by_s:
                        break
                    if need:
                        kv.alloc(need)
                    busy += dt
                    kv_s += (cap - kv.free) * dt
                    t += dt
                    d += 1
                    ctx += n
                    ends.append(t)
                    conts.append(n)
                if d > d0:
                    self.busy_s, self.kv_block_s = busy, kv_s
                    self.iterations += d - d0
                    if n > self.peak_running:
                        self.peak_running = n
                    self.decode_step, self.decode_ctx_sum = d, ctx
                    self.outstanding -= n * (d - d0)
                if not t < until_s:
                    break
            need = 0 if full else phase[(-d) % B]
            if kv.free < need:
                break
            dt = step_s(ctx + n)  # reads no KV state: before the alloc
            if t + dt > end_by_s:
                break
            if need:
                kv.alloc(need)
            self._charge(n, dt)
            t += dt
            step(t, done_cb)
        return t

    def _charge(self, n: int, dt: float) -> None:
        """An iteration of `n` running sequences and `dt` seconds, as `start` counts it."""
        self.busy_s += dt
        self.kv_block_s += (self.kv.capacity - self.kv.free) * dt
        self.iterations += 1
        if n > self.peak_running:
            self.peak_running = n

    def start_decodes(self, t: float) -> float:
        """`start` of the all-decoders batch (`DECODE_ALL`) with nothing queued or prefilling and
        no timeline recorded: the same operations without the batch's other parts. Returns dt."""
        n = self.n_dec
        if not self.reserve_full:
            self.kv.alloc(self.decoders_by_phase[(-self.decode_step) % self.block])
        dt = self.cost.decode_step_s(n)(self.decode_ctx_sum + n)
        self._charge(n, dt)
        return dt

    # --- transitions --------------------------------------------------------------------------------------
    def _claim_prefix(self, rid: int) -> None:
        """Reference the cached prefix request `rid` will reuse (`shared_tokens`), so that no
        allocation evicts it before the request is admitted (`_admit`)."""
        st = self.st
        shared = self.shared_tokens_if_admitted(rid)
        if shared:
            self.kv.acquire(st.prefix_id[rid])
        st.shared_tokens[rid] = shared

    def _admit(self, rid: int, t: float) -> None:
        """Admit `rid` after `_claim_prefix`: its prefill starts after the shared tokens."""
        st, kv = self.st, self.kv
        st.state[rid] = PREFILL
        st.prefill_target[rid] = st.prompt_tokens[rid] + st.emitted[rid]
        shared = st.shared_tokens[rid]
        st.prefilled[rid] = shared
        self.outstanding -= shared
        win = self.window_blocks(rid) if self.win_k else 0
        if self.reserve_full:
            nb = (cdiv(st.prefill_target[rid] + st.output_tokens[rid] - st.emitted[rid], self.block) - shared // self.block
                  + win)
            kv.alloc(nb)
            st.owned_blocks[rid] = nb
        else:
            if win:
                kv.alloc(win)
            st.owned_blocks[rid] = win
        if st.first_scheduled_s[rid] < 0:
            st.first_scheduled_s[rid] = t
        self.prefilling.append(rid)

    def _prefill_complete(self, rid: int, t: float, done_cb) -> None:
        st, kv, B = self.st, self.kv, self.block
        self.prefilling.remove(rid)
        # the prefix this prompt computed becomes a shared cache entry
        pid = st.prefix_id[rid]
        if kv.enabled and pid >= 0 and not st.shared_tokens[rid] and not st.emitted[rid]:
            pb = min(st.prefix_tokens[rid], st.prompt_tokens[rid] - 1) // B
            if pb and kv.insert(pid, pb):
                st.shared_tokens[rid] = pb * B
                st.owned_blocks[rid] -= pb
        if st.emitted[rid] and st.last_token_s[rid] >= 0:
            st.extra_gaps_s.append(t - st.last_token_s[rid])  # the gap across a preemption
        st.emitted[rid] += 1
        self.outstanding -= 1
        if st.first_token_s[rid] < 0:
            st.first_token_s[rid] = t
        st.last_token_s[rid] = t
        if st.emitted[rid] >= st.output_tokens[rid]:
            self._release(rid)
            self._finish(rid, t, done_cb)
            return
        if self.role == "prefill":
            st.state[rid] = TRANSFER
            self.in_transfer += 1
            done_cb(rid, t, "transfer")
            return
        self._become_decoder(rid, st.prefill_target[rid])
        self.first_step_pending.append(rid)

    def _become_decoder(self, rid: int, ctx: int) -> None:
        st = self.st
        st.state[rid] = DECODE
        st.join_ctx[rid] = ctx
        st.join_step[rid] = self.decode_step
        st.epoch[rid] += 1
        self.n_dec += 1
        self.decode_ctx_sum += ctx
        self.decode_out_sum += st.output_tokens[rid]
        self.decode_end_sum += self.decode_step + st.output_tokens[rid] - st.emitted[rid]
        if not self.reserve_full:
            self.decoders_by_phase[(ctx - self.decode_step) % self.block] += 1
        heapq.heappush(self.finishing, (self.decode_step + st.output_tokens[rid] - st.emitted[rid], rid, st.epoch[rid]))
        order = self.join_order
        order.append((rid, st.epoch[rid]))
        if len(order) > 2 * self.n_dec + 64:  # drop the stale entries (amortised O(1) per join)
            ep, state, inst, me = st.epoch, st.state, st.instance, self.idx
            self.join_order = [(r, e) for r, e in order if ep[r] == e and state[r] == DECODE and inst[r] == me]

    def _join_transferred(self, rid: int, t: float) -> None:
        """Decode pool: a request whose KV arrived joins the decoders (blocks allocated here)."""
        st = self.st
        ctx = st.prefill_target[rid]
        if self.reserve_full:
            nb = cdiv(ctx + st.output_tokens[rid] - st.emitted[rid], self.block)
        else:
            nb = cdiv(ctx, self.block)
        if self.win_k:
            nb += self.window_blocks(rid)
        self.kv.alloc(nb)
        st.owned_blocks[rid] = nb
        st.shared_tokens[rid] = 0
        if st.first_scheduled_s[rid] < 0:
            st.first_scheduled_s[rid] = t
        self._become_decoder(rid, ctx)
        self.first_step_pending.append(rid)

    def _decode_step(self, t: float, done_cb) -> None:
        st = self.st
        n = self.n_dec
        self.decode_step += 1
        d = self.decode_step
        self.decode_ctx_sum += n
        self.outstanding -= n
        pend = self.first_step_pending
        if pend:
            for rid in pend:
                if st.state[rid] == DECODE and st.instance[rid] == self.idx:
                    st.extra_gaps_s.append(t - st.last_token_s[rid])
            cont = n - len(pend)
            pend.clear()
        else:
            cont = n
        self.step_end_s.append(t)
        self.step_continuing.append(cont)
        fin = self.finishing
        while fin and fin[0][0] <= d:
            _, rid, ep = heapq.heappop(fin)
            if st.epoch[rid] != ep or st.state[rid] != DECODE or st.instance[rid] != self.idx:
                continue
            st.emitted[rid] = st.output_tokens[rid]
            st.last_token_s[rid] = t
            self._leave_decoders(rid)
            self._finish(rid, t, done_cb)

    def _leave_decoders(self, rid: int) -> None:
        st = self.st
        ctx = self.ctx(rid)
        self.n_dec -= 1
        self.decode_ctx_sum -= ctx
        self.decode_out_sum -= st.output_tokens[rid]
        # both callers have brought `emitted` up to this step: the step it would have finished at
        self.decode_end_sum -= self.decode_step + st.output_tokens[rid] - st.emitted[rid]
        if not self.reserve_full:
            self.decoders_by_phase[(st.join_ctx[rid] - st.join_step[rid]) % self.block] -= 1
            st.owned_blocks[rid] = cdiv(ctx, self.block) - st.shared_tokens[rid] // self.block
            if self.win_k:
                st.owned_blocks[rid] += self.window_blocks(rid)
        self._release(rid)

    def _release(self, rid: int) -> None:
        st = self.st
        self.kv.release(st.owned_blocks[rid])
        st.owned_blocks[rid] = 0
        if st.shared_tokens[rid]:
            self.kv.release_prefix(st.prefix_id[rid])
            st.shared_tokens[rid] = 0

    def _finish(self, rid: int, t: float, done_cb) -> None:
        st = self.st
        st.state[rid] = DONE
        st.finish_s[rid] = t
        self.completed += 1
        done_cb(rid, t, "done")

    def _stop_decoding(self, rid: int) -> None:
        """Decoder `rid` leaves (a preemption or a migration): its tokens as of this decode step
        count as emitted, its KV is freed, its heap and join entries go stale."""
        st = self.st
        steps = self.decode_step - st.join_step[rid]
        st.emitted[rid] = st.emitted[rid] + steps
        if steps:
            st.last_token_s[rid] = self.step_end_s[self.decode_step]
        self._leave_decoders(rid)
        st.epoch[rid] += 1
        if rid in self.first_step_pending:
            self.first_step_pending.remove(rid)

    def _preempt(self, rid: int) -> None:
        """Recompute preemption: drop the KV, keep the emitted tokens, requeue at the front."""
        st = self.st
        if st.state[rid] == DECODE:
            self._stop_decoding(rid)
        else:
            self.prefilling.remove(rid)
            self._release(rid)
        st.state[rid] = WAITING
        st.preemptions[rid] += 1
        self.outstanding += st.prompt_tokens[rid] + st.emitted[rid]  # the recompute
        self.waiting.appendleft(rid)


    # --- live migration (serving.migration) -----------------------------------------------------------------
    def migrate_out(self, rid: int) -> int:
        """Stop decoding request `rid` here and free its KV (the last stage of a live migration):
        its tokens so far count as emitted; returns its cached context, which the destination
        takes over."""
        st = self.st
        ctx = self.ctx(rid)
        self._stop_decoding(rid)
        st.state[rid] = TRANSFER
        self.outstanding -= st.output_tokens[rid] - st.emitted[rid]
        return ctx

    def migrate_in(self, rid: int, ctx: int, blocks: int) -> None:
        """Request `rid` resumes decoding here with `ctx` cached tokens whose `blocks` the
        migration already allocated in this pool."""
        st = self.st
        st.instance[rid] = self.idx
        st.owned_blocks[rid] = blocks
        st.shared_tokens[rid] = 0
        self.outstanding += st.output_tokens[rid] - st.emitted[rid]
        self._become_decoder(rid, ctx)
        self.first_step_pending.append(rid)


def least_loaded(insts: list[Instance]) -> Instance:
    best = insts[0]
    for i in insts[1:]:
        if i.outstanding < best.outstanding:
            best = i
    return best


class Loop:
    """The global event loop over all instances (one heap, arrivals merged from a sorted column)."""

    STEP_ON_DEMAND = True  # Loop._advance (class-level: a test compares it with stepping every iteration on the heap)
    # a run may stop once requests in hand (a batch or KV transfer in flight, a queue) are seen past
    # horizon_s: its makespan is then at least cut_s (> horizon_s), all a caller asking "does it
    # end by horizon_s?" needs (simulate)
    horizon_s = float("inf")
    cut_s: float | None = None

    def __init__(self, st: ReqState, groups: list[list[Instance]], router: Router,
                 decode_groups: list[list[Instance]] | None = None, transfer_s=None,
                 max_concurrency: int | None = None, deps=None, answer_delay_s: float = 0.0,
                 max_queued: int | None = None, autoscaler=None) -> None:
        self.st = st
        self.groups = groups
        self.instances = [i for g in groups for i in g] + [i for g in (decode_groups or []) for i in g]
        self.router = router
        router.bind(st.prefix_id)
        self.decode_groups = decode_groups
        self.decode_router = LeastOutstandingTokens()
        self.transfer_s = transfer_s
        self.heap: list = []
        self.seq = 0
        self.on_demand = False  # set per run (_on_demand_ok): instances that decode stepped by _advance
        self._gap_buf = array("d")
        self.makespan = 0.0
        self.dropped = 0
        self.max_queued = max_queued  # admission control: shed an arrival that finds this many queued
        self.shed = 0
        # autoscaling (serving.autoscale): the router sees the `routable` replica groups only; the
        # others are starting (routable after the start-up delay), draining, or not held
        self.auto = autoscaler
        if autoscaler is not None:
            self.routable = list(range(autoscaler.min_replicas))
            self.starting: set[int] = set()
            self.draining: set[int] = set()
            self.clock = ReplicaClock.start(len(groups), autoscaler.min_replicas)
            self.replica_samples: list[tuple[float, int]] = [(0.0, autoscaler.min_replicas)]
            self._push(autoscaler.interval_s, START, "tick", None)
        # closed-loop client (benchmark --max-concurrency N): request k + N is sent when the k-th
        # answer (or failure) comes back, not before its own arrival time; until then its arrival
        # is +inf, so the arrival-ordered loops below simply wait for it
        self._held: list[float] | None = None  # the held requests' own arrival times, from index N on
        self._next = st.n
        if max_concurrency is not None and max_concurrency < st.n:
            self._held = st.arrival_s[max_concurrency:].tolist()
            self._held_from = self._next = max_concurrency
            for k in range(max_concurrency, st.n):
                st.arrival_s[k] = float("inf")
        # workflows (serving.workflow.Dependencies): a call enters when its last parent has finished,
        # plus its tool latency, through an ARRIVAL event on the heap; only the roots are in the
        # arrival column
        self._column: list[int] | None = None
        self._answer_delay_s = answer_delay_s  # a call's answer reaches its workflow this long after its last iteration
        if deps is not None:
            self._column = deps.roots.tolist()
            self._left = deps.parents.tolist()
            self._ready = [0.0] * st.n
            self._cstart, self._children = deps.child_start.tolist(), deps.children.tolist()
            self._tool = deps.tool_latency_s.tolist()
            for k, waits in enumerate(self._left):
                if waits:
                    st.arrival_s[k] = float("inf")

    def _answered(self, rid: int, t: float) -> None:
        """Request `rid` finished (or failed) at t: a closed-loop client sends its next request, a
        workflow the calls that waited for it (a failed call's dependants are sent all the same)."""
        if self._held is not None:  # checked here, not in a call: this runs once per request
            self._send_next(t)
        if self._column is not None:
            t += self._answer_delay_s
            left, ready, children = self._left, self._ready, self._children
            for k in range(self._cstart[rid], self._cstart[rid + 1]):
                c = children[k]
                left[c] -= 1
                if t > ready[c]:
                    ready[c] = t
                if not left[c]:
                    ta = ready[c] + self._tool[c]
                    self.st.arrival_s[c] = ta
                    self._push(ta, ARRIVAL, "arrive", c)

    def _tick(self, t: float, arrivals_left: bool) -> None:
        """The autoscaler's periodic look: scale to its recommendation (new replicas start, removed
        ones drain), release drained replicas, and look again while anything is left to do."""
        a, groups = self.auto, self.groups
        in_flight = sum(i.requests_in() for g in self.routable for i in groups[g])
        want = a.desired(t, in_flight)
        have = len(self.routable) + len(self.starting)
        if want > have:
            a.ups += 1
            for _ in range(want - have):
                if self.draining:  # a draining replica is still loaded: take it back at once
                    g = min(self.draining)
                    self.draining.discard(g)
                    insort(self.routable, g)
                    continue
                g = next(k for k in range(len(groups)) if k not in self.routable and k not in self.starting)
                self.starting.add(g)
                self.clock.up(g, t)
                self._push(t + a.startup_s, ARRIVAL, "ready", g)
        elif want < have:
            a.downs += 1
            for _ in range(have - want):
                if self.starting:
                    g = max(self.starting)
                    self.starting.discard(g)
                    self.clock.down(g, t)  # cancelled before it served
                else:
                    g = self.routable.pop()
                    self.draining.add(g)
        for g in sorted(self.draining):
            if not any(i.has_work() or i.busy for i in groups[g]):
                self.draining.discard(g)
                self.clock.down(g, t)
        self.replica_samples.append((t, len(self.routable) + len(self.starting) + len(self.draining)))
        busy = any(i.has_work() or i.busy for i in self.instances)
        if arrivals_left or busy or len(self.heap) > 0:
            self._push(t + a.interval_s, START, "tick", None)

    def _shed(self, rid: int, t: float) -> None:
        """Admission control refused `rid` at t (its engine's queue was full): dropped, counted apart."""
        self.st.state[rid] = DROPPED
        self.dropped += 1
        self.shed += 1
        self._answered(rid, t)

    def _send_next(self, t: float) -> None:
        """A closed-loop client got an answer (or an error) at t: send its next request."""
        if self._held is not None and self._next < self.st.n:
            k = self._next
            orig = self._held[k - self._held_from]
            self.st.arrival_s[k] = orig if orig > t else t
            self._next = k + 1

    def _push(self, t: float, rank: int, kind: str, obj) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, rank, self.seq, kind, obj))

    def _wake(self, inst: Instance, t: float) -> None:
        if not inst.busy and not inst.start_pending:
            inst.start_pending = True
            if inst.on_demand:
                inst.due_s = t
            else:
                self._push(t, START, "start", inst)

    def _on_done(self, rid: int, t: float, what: str) -> None:
        if t > self.makespan:
            self.makespan = t
        if what == "transfer":
            self._push(t + self.transfer_s(rid), XFER, "xfer", rid)
        else:
            self._answered(rid, t)

    def _begin(self, inst: Instance, t: float) -> None:
        """Start the next iteration of `inst` at time t, if it has anything to run."""
        inst.start_pending = False
        while True:
            b = inst.decide()
            if b.empty():
                if inst.held:  # nothing was formed ahead of them: the scheduler sees them now
                    inst.release_held()
                    continue
                inst.busy = False
                self._check_stuck(inst)
                return
            dt = inst.start(b, t)
            if inst.held:
                inst.release_held()
            inst.busy = True
            self._push(t + dt, END, "end", (inst, b))
            return

    def _check_stuck(self, inst: Instance, restart: bool = True) -> None:
        """Nothing runnable but work queued: the head request can never fit (drop it, say so)."""
        if self._drop_stuck(inst):
            if inst.waiting and restart:
                self._begin(inst, self._now)
        elif not restart:  # pragma: no cover - a scheduler that idles with work it could run
            raise RuntimeError(f"scheduler {inst.sched.name} returned an empty batch with work pending")

    def _drop_stuck(self, inst: Instance) -> bool:
        """If `inst` has nothing runnable but work queued, drop the head request (it can never fit)."""
        if inst.waiting and not inst.prefilling and not inst.n_dec and not inst.in_transfer:
            rid = inst.waiting.popleft()
            self.st.state[rid] = DROPPED
            self.dropped += 1
            self._answered(rid, self._now)
            return True
        return False

    def independent(self) -> bool:
        """Round-robin over single-engine replicas: no instance's decisions depend on another's."""
        return (isinstance(self.router, RoundRobin) and not self.decode_groups and self._held is None
                and self._column is None and self.auto is None and all(len(g) == 1 for g in self.groups))

    def run(self) -> None:
        if self.independent():
            for g, grp in enumerate(self.groups):
                self._run_alone(grp[0], g, len(self.groups))
                if self.cut_s is not None:
                    return
            return
        self._run_events()

    def _run_alone(self, inst: Instance, first: int, stride: int) -> None:
        """The event loop specialised to one instance that receives every `stride`-th arrival
        starting at `first`: same ordering rules (an arrival at an iteration's end joins the next
        iteration), no heap."""
        st = self.st
        arr, prompt, output, state = st.arrival_s, st.prompt_tokens, st.output_tokens, st.state
        n = st.n
        i = first
        t = 0.0
        waiting = inst.waiting
        on_done = self._on_done
        max_queued = self.max_queued
        # decide() without its frame when the scheduler keeps the arrival order (the common case)
        decide = inst.decide if inst.sched.queue_order is not None else partial(inst.sched.schedule, inst)
        runs = inst.sched.decodes_when_idle and inst.rec is None  # decode stretches without a batch per step
        inf = float("inf")
        horizon = self.horizon_s
        ahead, held = inst.ahead, inst.held
        since = 0.0  # schedule_ahead: the start of the iteration that ended at t (arrivals after it are held)
        while True:
            while i < n and arr[i] <= t:
                if state[i] == DROPPED:  # rejected on arrival: it can never fit (simulate's kv_fit)
                    i += stride
                    continue
                if max_queued is not None and len(waiting) >= max_queued:
                    self._shed(i, t)
                    i += stride
                    continue
                inst.enqueue(i, prompt[i] + output[i], ahead and since < arr[i] < t)
                i += stride
            if not (waiting or inst.prefilling or inst.n_dec):
                if held:  # nothing was formed ahead of them: the scheduler sees them now
                    inst.release_held()
                    continue
                if i >= n:
                    break
                t = since = arr[i]
                continue
            if t > horizon:  # requests in hand past the horizon: each finishes after t
                self.cut_s = t
                return
            if runs and not waiting and not inst.prefilling and not held:
                steps = inst.iterations
                t0 = t
                t = inst.decode_run(t, min(arr[i] if i < n else inf, horizon), on_done)
                if inst.iterations != steps:
                    if ahead:  # the last step's start: the previous step's end, or the run's start
                        since = max(t0, inst.step_end_s[inst.decode_step - 1])
                    continue
            b = decide()
            if b.empty():
                if held:
                    inst.release_held()
                    continue
                self._now = t
                self._check_stuck(inst, restart=False)
                if not (waiting or inst.prefilling or inst.n_dec) and i < n:
                    t = since = max(t, arr[i])
                continue
            since = t
            t += inst.start(b, t)
            if held:
                inst.release_held()
            inst.end(b, t, on_done)

    def _run_events(self) -> None:
        """The general loop: one heap of iteration ends, KV transfers and iteration starts, merged
        with the arrivals column (an event at an arrival's instant goes first when its kind ranks
        before ARRIVAL)."""
        arr, heap = self.st.arrival_s, self.heap
        col = self._column if self._column is not None else range(self.st.n)  # request ids in arrival order
        n = len(col)
        i = 0
        self._now = 0.0
        self.on_demand = self._on_demand_ok()
        self._gaps: list[tuple[float, float, int, int, float]] = []  # see _tag_gaps
        for inst in self.instances:
            inst.on_demand = self.on_demand and inst.role != "prefill"
        horizon = self.horizon_s
        while True:
            ta = arr[col[i]] if i < n else float("inf")
            if heap and (heap[0][0] < ta or (heap[0][0] == ta and heap[0][1] < ARRIVAL)):
                t, _, _, kind, obj = heapq.heappop(heap)
                if t > horizon and (kind == "end" or kind == "xfer"):  # a batch or KV in flight past it
                    self.cut_s = t
                    return
                self._now = t
                if kind == "end":
                    self._iteration_end(*obj, t, ta)
                elif kind == "start":
                    if not obj.busy:
                        self._begin(obj, t)
                    else:
                        obj.start_pending = False
                elif kind == "arrive":
                    self._arrive(obj, t)
                elif kind == "tick":
                    self._tick(t, i < n)
                elif kind == "ready":
                    self.starting.discard(obj)
                    insort(self.routable, obj)
                elif kind == "call":  # a policy's own event (serving.migration): obj(t)
                    obj(t)
                else:
                    self._transfer_done(obj, t)
            elif i < n:
                if ta == float("inf"):  # pragma: no cover - every answer sends the next held request
                    raise RuntimeError("closed-loop client waits for an answer that never comes")
                self._now = ta
                self._arrive(col[i], ta)
                i += 1
            else:
                break
        if not self._finish_on_demand(horizon):
            return
        if self._gaps:
            self.st.extra_gaps_s.extend(g for *_, g in sorted(self._gaps))

    def _finish_on_demand(self, horizon: float) -> bool:
        """Step the on-demand instances to the end of the run; False (and `cut_s` set) if one still
        has a batch in flight at the horizon. An instance idle at the horizon with work left (a
        start at exactly the horizon) is run to its end: stepping to the horizon and then on is
        what stepping to the end does (`_advance` is exact for any sequence of instants)."""
        for inst in self.instances:
            if inst.on_demand:
                if horizon < float("inf"):
                    self._advance(inst, horizon)
                    if inst.busy:  # its batch ends after the horizon
                        self.cut_s = inst.due_s
                        return False
                self._advance(inst, float("inf"))
        return True

    def _on_demand_ok(self) -> bool:
        """Whether the instances that decode can be stepped on demand (`_advance`): their
        iterations then touch nothing outside themselves (no closed-loop client or workflow whose
        next call an answer releases, no autoscaler reading them on ticks, no subclass hooks such
        as migration's on their starts and ends); a prefill pool's instances stay on the heap,
        since their ends send KV transfers."""
        hooks = ("_begin", "_iteration_end", "_arrive", "_transfer_done", "_route", "_wake")
        return (self.STEP_ON_DEMAND and self._held is None and self._column is None and self.auto is None
                and all(getattr(type(self), h) is getattr(Loop, h) for h in hooks))

    def _advance(self, inst: Instance, tau: float, hold: bool = False) -> None:
        """Step an on-demand instance to the instant `tau` of an event that reads or feeds it (an
        arrival routed over it, a KV transfer routed to its pool; +inf at the end of the run).
        Exact, event for event: between such events nothing else reads or changes the instance,
        so its iterations are what the heap would run, in the same order and float operations.
        At `tau` it is as the heap leaves it before that event: iterations ending at `tau` applied
        (iteration ends rank first), one that started earlier and ends later in flight, and one
        that would start at `tau` not started (starts rank after arrivals and transfers). With
        `hold`, an all-decoders batch that would start before `tau` and end after it is left to
        start later (`_route`: for readers of `outstanding` alone)."""
        if (inst.due_s > tau) if inst.busy else (not inst.start_pending or inst.due_s >= tau):
            return  # nothing to step before tau (the common case: most events find it so)
        st = self.st
        shared = st.extra_gaps_s
        st.extra_gaps_s = buf = self._gap_buf  # this instance's gaps, tagged with their iteration's times
        try:
            self._step_to(inst, tau, buf, hold)
        finally:
            st.extra_gaps_s = shared

    def _step_to(self, inst: Instance, tau: float, buf, hold: bool) -> None:
        """`_advance`'s loop: end the batch in flight, start the next, decode runs in between."""
        runs = inst.sched.decodes_when_idle and inst.rec is None
        on_done = self._on_done
        while True:
            if inst.busy:
                if inst.due_s > tau:
                    return
                inst.end(inst.in_flight, inst.due_s, on_done)
                if buf:
                    self._tag_gaps(buf, inst.due_s, inst.started_s, inst.idx)
                inst.busy, inst.in_flight = False, None
                inst.start_pending = inst.has_work()
            t = inst.due_s
            if not inst.start_pending or t >= tau:
                return
            if runs and not inst.waiting and not inst.prefilling and not inst.held:
                first = inst.decode_step + 1
                inst.due_s = inst.decode_run(t, tau, on_done, end_by_s=tau)
                if buf:  # a join's first step: the run's first
                    self._tag_gaps(buf, inst.step_end_s[first], t, inst.idx)
                t = inst.due_s
                if not inst.has_work():
                    inst.start_pending = False
                if not inst.start_pending or t >= tau:
                    return
            if (runs and not inst.waiting and not inst.prefilling and inst.n_dec
                    and inst.kv.free >= inst.decode_block_need()):  # (n_dec: not only held requests)
                n = inst.n_dec
                if hold and t + inst.cost.decode_step_s(n)(inst.decode_ctx_sum + n) > tau:
                    return  # in flight at tau: its start changes nothing a reader of `outstanding` sees
                b = DECODE_ALL  # what the scheduler decides here (Scheduler.decodes_when_idle), without asking
            else:
                b = inst.decide()
            if b.empty():  # as _begin: drop a head that can never fit, else idle until woken
                if inst.held:
                    inst.release_held()
                    continue
                self._now = t
                inst.start_pending = self._drop_stuck(inst) and bool(inst.waiting)
                continue
            inst.start_pending = False
            inst.started_s = t
            inst.due_s = t + (inst.start_decodes(t) if b is DECODE_ALL else inst.start(b, t))
            if inst.held:
                inst.release_held()
            inst.busy, inst.in_flight = True, b

    def _tag_gaps(self, buf, end_s: float, start_s: float, idx: int) -> None:
        """Keep the off-grid gaps an iteration (start_s, end_s) of instance `idx` just appended, in
        the order the heap appends them: by iteration end, then start (an earlier start was pushed
        earlier), then instance and append order (the heap's order of two instances' iterations
        with the same start and end can differ). The pooled ITL statistics sort the gaps; the
        order only reaches `--bench-json`'s mean and spread, summed in array order."""
        gaps = self._gaps
        for g in buf:
            gaps.append((end_s, start_s, idx, len(gaps), g))
        del buf[:]

    def _route(self, router: Router, groups: list[list[Instance]], rid: int, tokens: int, t: float) -> Instance:
        """The instance a request goes to at t: the router picks a replica (of the routable ones
        when autoscaling), and inside a replica of PP virtual engines the least loaded one takes
        it. On-demand instances are stepped to t first: all of them when the router reads their
        load, the chosen replica's otherwise (round-robin reads none), and the chosen instance
        fully. Where only `outstanding` is read (round-robin's and least-outstanding-tokens'
        choices, `least_loaded`), an instance about to start an all-decoders batch before t that
        would still run at t may hold that start (`hold`): starting it changes no `outstanding`,
        and nothing else reads or feeds the instance before it is stepped again, from that start."""
        if self.auto is not None and groups is self.groups:
            groups = [groups[g] for g in self.routable]
        hold = type(router) in (RoundRobin, LeastOutstandingTokens)
        if self.on_demand and not isinstance(router, RoundRobin):
            for g in groups:
                self._catch_up(g, t, hold)
        grp = groups[router.choose(rid, groups, tokens)]
        if self.on_demand:
            self._catch_up(grp, t, True)
        inst = grp[0] if len(grp) == 1 else least_loaded(grp)
        if inst.on_demand:
            self._advance(inst, t)
        return inst

    def _catch_up(self, grp: list[Instance], t: float, hold: bool) -> None:
        for inst in grp:
            if inst.on_demand:
                self._advance(inst, t, hold)

    def _arrive(self, rid: int, t: float) -> None:
        st = self.st
        tokens = st.prompt_tokens[rid] + st.output_tokens[rid]
        inst = self._route(self.router, self.groups, rid, tokens, t)  # a rejected request used its turn too
        if st.state[rid] == DROPPED:  # rejected on arrival (as in _run_alone)
            self._answered(rid, t)
            return
        if self.max_queued is not None and len(inst.waiting) >= self.max_queued:
            self._shed(rid, t)
            return
        inst.enqueue(rid, tokens, inst.ahead and inst.busy)
        self._wake(inst, t)

    def _iteration_end(self, inst: Instance, b: Batch, t: float, next_arrival_s: float) -> None:
        """Apply the batch; start the next iteration now unless another event shares this instant
        (then a START event orders it after them)."""
        inst.end(b, t, self._on_done)
        inst.busy = False
        if inst.has_work():
            heap = self.heap
            nxt = heap[0][0] if heap else float("inf")
            if next_arrival_s > t and nxt > t:
                self._begin(inst, t)
            else:
                self._wake(inst, t)

    def _transfer_done(self, rid: int, t: float) -> None:
        """A KV transfer arrived: free it on the prefill side, queue it on the decode side."""
        st = self.st
        src = self.instances[st.instance[rid]]
        src._release(rid)
        src.in_transfer -= 1
        dst = self._route(self.decode_router, self.decode_groups, rid, 0, t)
        dst.enqueue(rid, st.output_tokens[rid] - st.emitted[rid])
        self._wake(dst, t)
        if src.has_work() and not src.busy:
            self._wake(src, t)
