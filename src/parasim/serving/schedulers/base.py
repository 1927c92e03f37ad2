"""What every scheduler shares: the `Batch` it decides, and the budget rules it decides with.

Deciding is separate from applying: `schedule(inst) -> Batch` only reads the engine instance,
through `EngineView`; `Instance.start(batch)` and `Instance.end(batch)` change it. A scheduler
that wants the waiting queue in another order than arrival names a `queue_order` policy, which the
engine applies when requests have arrived (BatchLLM's prefix groups). A batch is

* `victims`  — running requests to preempt (recompute) first, latest-joined first;
* `admit`    — how many requests to take from the head of the waiting queue (in order);
* `chunks`   — prefill chunks `(request, tokens)`, ongoing prefills first, then the admitted ones;
* `decode`   — whether every running decoder takes one step (decoders are aggregates, never listed);
* `joins`    — (decode pools) how many transferred requests join the decoders directly.

The budget rules (token budget, sequence slots, KV blocks with vLLM's watermark, ongoing prefills
before new ones, FCFS head-of-line) live in `fill_prefill` so that each scheduler is a few lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from parasim.mathx import cdiv
from parasim.serving.kvcache import WATERMARK, KVPool
from parasim.serving.output_estimate import CLIP_MAX_NEW_TOKENS, RETRACT_DECODE_STEPS
from parasim.serving.reqstate import ReqState

class Batch:
    __slots__ = ("chunks", "admit", "decode", "victims", "joins")

    def __init__(self, chunks: list[tuple[int, int]] | None = None, admit: int = 0, decode: bool = False,
                 victims: list[int] | None = None, joins: int = 0) -> None:
        self.chunks = chunks if chunks is not None else []
        self.admit = admit
        self.decode = decode
        self.victims = victims if victims is not None else []
        self.joins = joins

    def empty(self) -> bool:
        """Nothing to run and nothing to change (a victims-only batch is a scheduler step)."""
        return not self.chunks and not self.decode and not self.joins and not self.victims

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Batch(chunks={self.chunks}, admit={self.admit}, decode={self.decode}, victims={self.victims})"


class EngineView(Protocol):
    """What a scheduler reads of an engine instance (`engine.Instance`), and all it reads."""

    idx: int
    role: str  # mixed | prefill | decode
    block: int  # tokens per KV block
    reserve_full: bool  # blocks for prompt + output booked at admission
    reserve_estimated: bool  # SGLang's admission: prompt + output budget beside the running requests' estimate
    st: ReqState  # the per-request columns
    kv: KVPool
    waiting: Sequence[int]  # queued requests, head first
    prefilling: list[int]  # admitted requests whose prefill is not done
    n_dec: int  # decoding requests (aggregated, never listed)
    win_k: int  # sliding-window KV groups per full-attention group (0: none kept apart; serving.kvcache)

    def decode_block_need(self) -> int: ...
    def decode_tokens_left(self) -> int: ...
    def new_token_ratio(self) -> float: ...
    def latest_decoders(self) -> Iterator[int]: ...
    def needs_block_next(self, rid: int) -> int: ...
    def own_blocks(self, rid: int) -> int: ...
    def window_blocks(self, rid: int) -> int: ...
    def shared_tokens_if_admitted(self, rid: int) -> int: ...


class Scheduler:
    """Base: subclasses set the policy knobs or override `schedule`."""

    name = ""
    default_budget: int | None = None  # None = the model's max_seq_len (whole prompts)
    chunked = False  # prompts may be split across iterations
    default_max_batch = 256  # running sequences (vLLM's max_num_seqs default)
    gated = False  # consult `admissible` for each waiting request
    # what the plan and the planner ask of a scheduler (rather than testing its name)
    search_budgets = False  # `plan serve` tries several token budgets (the chunk size is its knob)
    disaggregated = False  # prefill and decode pools of their own (the plan's prefill_*/decode_* fields)
    shares_prefixes = False  # its policy is prefix sharing: the prefix cache is always on
    #: the waiting queue's order, (request columns, queue) -> queue; None = arrival order (FCFS)
    queue_order: Callable[[ReqState, Iterable[int]], list[int]] | None = None
    #: with nothing queued or prefilling and free blocks for the next step's new ones, `schedule`
    #: returns every decoder's step (Batch(decode=True)): the engine may then run such steps back
    #: to back without asking (engine.Instance.decode_run); a subclass that decides otherwise there
    #: sets it False
    decodes_when_idle = False

    def admissible(self, inst: EngineView, rid: int, pending: set[int]) -> bool:
        return True

    def __init__(self, token_budget: int, max_batch: int) -> None:
        self.budget = token_budget
        self.max_batch = max_batch

    def schedule(self, inst: EngineView) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- shared rules -------------------------------------------------------------------------------
    def decode_victims(self, inst: EngineView) -> tuple[list[int], int]:
        """Decoders to preempt so the next decode step's new blocks fit; returns (victims, blocks left)."""
        avail = inst.kv.available()
        need = inst.decode_block_need()
        if need <= avail:
            return [], avail - need
        victims = []
        # SGLang (kv_reservation estimated) retracts on until RETRACT_DECODE_STEPS tokens per request
        # left are free (`ScheduleBatch.retract_decode`), not just the next step's
        per_left = RETRACT_DECODE_STEPS if inst.reserve_estimated else 0
        left = inst.n_dec
        for rid in inst.latest_decoders():
            need -= inst.needs_block_next(rid)
            avail += inst.own_blocks(rid)
            victims.append(rid)
            left -= 1
            if need <= avail and avail * inst.block >= per_left * left:
                break
        return victims, max(0, avail - need)

    def stalled_prefill_victims(self, inst: EngineView) -> list[int]:
        """Ongoing prefills hold blocks but none can take a chunk and nothing decodes: preempt the
        latest one (it recomputes later), as vLLM does when the running queue cannot grow."""
        return [inst.prefilling[-1]] if inst.prefilling else []

    def fill_prefill(self, inst: EngineView, budget: int, avail: int, seqs: int, *, chunked: bool,
                     admit_new: bool = True) -> tuple[list[tuple[int, int]], int]:
        """Prefill chunks under `budget` tokens, `avail` KV blocks and `seqs` running sequences
        already counted: the next chunk of each ongoing prefill first, in order, then the waiting
        queue head-first (`_admit_chunks`). Returns (chunks, requests admitted)."""
        chunks: list[tuple[int, int]] = []
        B = inst.block
        st = inst.st
        for rid in inst.prefilling:
            if budget <= 0:
                break
            done, target = st.prefilled[rid], st.prefill_target[rid]
            c = target - done if not chunked else min(target - done, budget)
            if c > budget:
                break
            # new blocks, cdiv(done + c, B) - cdiv(done, B) as one floor difference (no calls per chunk)
            nb = 0 if inst.reserve_full else (done + c - 1) // B - (done - 1) // B
            if nb > avail:
                c = (avail + done // B) * B - done if chunked else 0  # what the blocks left can hold
                if c <= 0:
                    break
                nb = (done + c - 1) // B - (done - 1) // B
            chunks.append((rid, c))
            budget -= c
            avail -= nb
        if not admit_new or not inst.waiting or budget <= 0:
            return chunks, 0
        return chunks, self._admit_chunks(inst, chunks, budget, avail, self.max_batch - seqs - len(inst.prefilling),
                                          chunked)

    def _admit_chunks(self, inst: EngineView, chunks: list[tuple[int, int]], budget: int, avail: int, slots: int,
                      chunked: bool) -> int:
        """Append the first chunks of waiting requests, head first (FCFS: the first that does not fit
        stops admission), while the budget, the blocks (above vLLM's watermark) and the sequence
        `slots` last; returns how many were admitted."""
        B = inst.block
        st = inst.st
        mark = int(WATERMARK * inst.kv.capacity)
        est = inst.reserve_estimated
        if est:
            mark = 0  # SGLang keeps no watermark: its booking below replaces it
            rem = self._estimated_room(inst, chunks, avail)
        waiting = inst.waiting
        nwait = len(waiting)
        pending: set[int] | None = None
        acquired: set[int] | None = None
        admit = 0
        while admit < nwait and budget > 0 and slots > 0:
            rid = waiting[admit]
            if self.gated:
                if pending is None:
                    pending = {st.prefix_id[r] for r in inst.prefilling if st.prefix_id[r] >= 0}
                if not self.admissible(inst, rid, pending):
                    break
            target = st.target_if_admitted(rid)
            shared = inst.shared_tokens_if_admitted(rid)
            rest = target - shared
            c = rest if not chunked else min(rest, budget)
            if c > budget:
                break
            if inst.reserve_full:
                nb = cdiv(target + st.output_tokens[rid] - st.emitted[rid], B) - shared // B
            else:
                nb = cdiv(shared + c, B) - shared // B
            if inst.win_k:  # the sliding-window layers' blocks, booked at admission
                nb += inst.window_blocks(rid)
            if shared:
                pid = st.prefix_id[rid]
                if acquired is None:
                    acquired = set()
                if pid not in acquired:  # acquiring an unreferenced entry takes it off the evictable list
                    acquired.add(pid)
                    nb += inst.kv.evictable_blocks(pid)
            if nb + mark > avail:
                break
            if est:
                own = min(st.output_tokens[rid] - st.emitted[rid], CLIP_MAX_NEW_TOKENS)
                if rest + own >= rem:  # PrefillAdder.add_one_req: NO_TOKEN
                    break
                rem -= cdiv(c, B) * B + (own if c == rest else 0)  # a chunk books its pages, a whole prompt its output too
            chunks.append((rid, c))
            budget -= c
            avail -= nb
            slots -= 1
            admit += 1
        return admit

    @staticmethod
    def _estimated_room(inst: EngineView, chunks: list[tuple[int, int]], avail: int) -> float:
        """SGLang's `rem_total_tokens` before the waiting queue is tried (serving.output_estimate):
        the free tokens left after this iteration's chunks of ongoing prefills, less the decoders'
        remaining output (each clipped; here the sum is, exact while none has more than the clip
        left) at new_token_ratio, less the whole clipped output of each prefill this iteration
        completes (`add_chunked_req` books it in full)."""
        st = inst.st
        n = inst.n_dec
        left = min(inst.decode_tokens_left(), n * CLIP_MAX_NEW_TOKENS)
        booked = sum(min(st.output_tokens[r] - st.emitted[r], CLIP_MAX_NEW_TOKENS)
                     for r, c in chunks if st.prefilled[r] + c == st.prefill_target[r])
        return avail * inst.block - left * inst.new_token_ratio() - booked
