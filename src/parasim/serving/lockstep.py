"""Attention-DP ranks in lockstep (`ServingPlan.ep > 1`): one iteration per EP group, ended by its slowest rank.

With data-parallel attention each of the group's `ep` one-GPU ranks keeps its own queue, batch and
KV cache, but every MoE layer's dispatch and combine is a collective over all of them, so no rank
can run ahead: an iteration of the group lasts as long as its slowest rank's own work (attention,
dense layers, shared experts, LM head, host) plus the part they share (the routed experts, fed
the group's tokens, and the all-to-alls). TensorRT-LLM's tech blog 10 ("ADP Balance Strategy")
writes the iteration time the same way, as the maximum over ranks. A rank with nothing to run
while the group works still steps one dummy token so the collectives complete (TensorRT-LLM pads
an idle rank with a dummy request, vLLM's DP engines run `execute_dummy_batch`); a group where no
rank has work idles. Each rank decides its own batch (`Instance.decide`); arrivals go to the rank
with the fewest active prompt tokens, then requests (TensorRT-LLM's `DefaultADPRouter` heap).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

from parasim.cost.layer import LayerCost, Sharding, op_time_s
from parasim.serving.engine import END, START, Instance, Loop
from parasim.serving.itercost import TOKEN_PARTS, IterationCost
from parasim.serving.reqstate import DROPPED
from parasim.serving.schedulers.base import Batch

#: tokens an idle rank puts through the model so the group's collectives complete: one (TensorRT-LLM's
#: dummy generation request; vLLM `DPEngineCoreProc.execute_dummy_batch` runs a one-token forward)
DUMMY_TOKENS = 1
_EXPERT_OPS = ("experts_up", "experts_down")
_MOE, _ELEM, _EP = (TOKEN_PARTS.index(k) for k in ("moe", "elementwise", "ep_comm"))


class RankCost(IterationCost):
    """One rank's iteration split in two: `time_s` is the rank's own part (everything but the
    routed experts' GEMMs and activation and the EP all-to-alls), `group_s` the part the group
    shares. With equal batches the two add up to the independent-replica `IterationCost` (its
    experts see ep equal batches), so lockstep only changes what unequal batches cost."""

    def __init__(self, model, cluster, **kw) -> None:
        super().__init__(model, cluster, **kw)
        self.ep = self.layer.s.ep
        # the experts of one rank fed the whole group's tokens (no multiplier: the group's sum is given)
        self.group_layer = LayerCost(model, cluster, Sharding(tp=self.tp, ep=self.ep), weight_dtype=kw["weights"],
                                     act_dtype=kw["act_dtype"], kv_dtype=kw["kv_dtype"],
                                     moe_gemm=kw.get("moe_gemm", "cutlass"), quant=self.quant,
                                     marlin_moe=self.marlin_moe)
        self._experts: dict[int, float] = {}  # group tokens -> routed experts, every MoE layer
        self._a2a: dict[int, float] = {}  # busiest rank's tokens -> all-to-alls, every MoE layer
        self.last_tokens = 0  # the token count the GPU ran in the last `time_s` (padding included)
        self.last_real_tokens = 0  # the real tokens of the last `time_s` (Instance.start's batch)
        self._dummy_s: float | None = None  # dummy_s, computed at its first use
        # the largest decode batch of a group iteration whose ranks are all generation-only (None: some
        # rank runs context work, so no rank replays a CUDA graph); set by LockstepLoop before the ranks start
        self.group_batch: int | None = None

    @staticmethod
    def _expert_gemms_s(layer: LayerCost, tokens: float) -> float:
        """One MoE layer's routed-expert GEMMs at `tokens` (as the layer's routing sees them)."""
        return sum(op_time_s(o, layer.acc) for o in layer.token_ops(tokens, moe=True) if o.name in _EXPERT_OPS)

    @staticmethod
    def _activation_s(layer: LayerCost, tokens: float) -> float:
        """One MoE layer's expert activation over `tokens` tokens' rows."""
        return layer.nongemm_s(tokens, moe=True)["activation"]

    def _token_parts(self, tokens: int) -> tuple[float, ...]:
        parts = super()._token_parts(tokens)
        if tokens <= 0 or not self.moe_layers:
            return parts
        p = list(parts)
        p[_MOE] -= self.moe_layers * self._expert_gemms_s(self.layer, tokens)
        p[_ELEM] -= self.moe_layers * self._activation_s(self.layer, tokens)
        p[_EP] = 0.0
        return tuple(p)

    def padded(self, tokens: int, prefill_pairs: float, decode_seqs: int) -> int:
        """CUDA-graph padding under attention DP: graphs run only when every rank of the group is
        generation-only, and then every rank pads to the captured size at or above the group's largest
        batch (TensorRT-LLM `_get_padded_batch`: the ranks' `[can_run_cuda_graph, batch_size]` all-gathered,
        the maximum rounded up; `_maybe_get_cuda_graph` replays a graph only when all ranks are
        generation-only with equal batches). A group with any context work runs eagerly, unpadded."""
        pad, g = self.graph_pad, self.group_batch
        if (not pad or g is None or prefill_pairs > 0 or tokens != decode_seqs or decode_seqs <= 0
                or not 0 < g <= pad[-1]):
            return decode_seqs
        return pad[bisect_left(pad, max(g, decode_seqs))]

    def time_s(self, tokens: int, prefill_pairs: float, prefill_kv_tokens: float, decode_seqs: int,
               decode_ctx: float, logits: int) -> float:
        self.last_real_tokens = tokens
        p = self.padded(tokens, prefill_pairs, decode_seqs) if self.graph_pad else decode_seqs
        self.last_tokens = p if p != decode_seqs else tokens  # the dummy slots go through the MoE layers too
        return super().time_s(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx, logits)

    def group_s(self, total: int, most: int) -> float:
        """The shared part of a group iteration whose ranks put `total` tokens through the MoE layers,
        `most` on the busiest rank: each rank's experts run the group's routed rows (their busiest
        rank's share, cost.routing), the activation its mean share, and the dispatch and combine
        all-to-alls last as long as the rank that sends the most."""
        e = self._experts.get(total)
        if e is None:
            e = self._experts[total] = self.moe_layers * (self._expert_gemms_s(self.group_layer, total)
                                                          + self._activation_s(self.group_layer, total / self.ep))
        c = self._a2a.get(most)
        if c is None:
            c = self._a2a[most] = self.moe_layers * self.layer.ep_comm_s(most)
        return e + c

    def dummy_s(self) -> float:
        """A rank's own part of a dummy step: DUMMY_TOKENS decoding over one cached token (computed once;
        in a padded graph step the dummy request is a generation request and pads like the others)."""
        if self.graph_pad and self.group_batch is not None:
            d = self.time_s(DUMMY_TOKENS, 0.0, 0.0, DUMMY_TOKENS, float(DUMMY_TOKENS), DUMMY_TOKENS)
            self.last_real_tokens = 0
            return d
        d = self._dummy_s
        if d is None:
            d = self._dummy_s = self.time_s(DUMMY_TOKENS, 0.0, 0.0, DUMMY_TOKENS, float(DUMMY_TOKENS), DUMMY_TOKENS)
        self.last_tokens = DUMMY_TOKENS
        self.last_real_tokens = 0
        return d


def generation_only_batch(grp: list[Instance], batches: list[Batch | None]) -> int | None:
    """The largest decode batch of a group iteration whose ranks are all generation-only (an idle
    rank's dummy request is a generation request of one), else None: the iteration runs eagerly."""
    most = 0
    for r, b in zip(grp, batches):
        if b is None:
            most = max(most, DUMMY_TOKENS)
        elif b.chunks or not b.decode or not r.n_dec:
            return None
        else:
            most = max(most, r.n_dec)
    return most or None


class LockstepLoop(Loop):
    """The event loop with each group of `groups` (an EP group's ranks) stepping together: one
    start and one end event per group iteration. The plan's router picks the EP group, the rank
    inside it is the one with the fewest active prompt tokens, then requests, then the lowest index."""

    def __init__(self, st, groups: list[list[Instance]], router, *, cost: RankCost, **kw) -> None:
        super().__init__(st, groups, router, **kw)
        self.cost = cost
        self._group = {i.idx: g for g in groups for i in g}
        self._prompt_in = [0] * len(self.instances)  # prompt tokens of the requests routed to each rank, not answered
        self._rank_of = array("q", [-1]) * st.n
        self.group_iterations = 0
        self.dummy_steps = 0
        self.wait_s = 0.0  # rank-seconds spent waiting for the group's slowest rank
        self.group_s = 0.0  # seconds of group iterations, summed over the groups
        self.balanced_s = 0.0  # group time weighted by mean / max tokens over the ranks (blog 10's balance ratio)
        self.ratio_sum = 0.0

    def _rank_for(self, grp: list[Instance]) -> Instance:
        best = grp[0]
        key = (self._prompt_in[best.idx], best.requests_in())
        for inst in grp[1:]:
            k = (self._prompt_in[inst.idx], inst.requests_in())
            if k < key:
                best, key = inst, k
        return best

    def _arrive(self, rid: int, t: float) -> None:
        st = self.st
        tokens = st.prompt_tokens[rid] + st.output_tokens[rid]
        grp = self.groups[self.router.choose(rid, self.groups, tokens)]
        if st.state[rid] == DROPPED:  # rejected on arrival (as Loop._arrive)
            self._answered(rid, t)
            return
        inst = self._rank_for(grp)
        if self.max_queued is not None and len(inst.waiting) >= self.max_queued:
            self._shed(rid, t)
            return
        inst.enqueue(rid, tokens, inst.ahead and inst.busy)  # held while the group's batch runs (schedule_ahead)
        self._rank_of[rid] = inst.idx
        self._prompt_in[inst.idx] += st.prompt_tokens[rid]
        self._wake(inst, t)

    def _answered(self, rid: int, t: float) -> None:
        k = self._rank_of[rid]
        if k >= 0:
            self._prompt_in[k] -= self.st.prompt_tokens[rid]
            self._rank_of[rid] = -1
        super()._answered(rid, t)

    def _wake(self, inst: Instance, t: float) -> None:
        lead = self._group[inst.idx][0]  # the group's events are its first rank's
        if not lead.busy and not lead.start_pending:
            lead.start_pending = True
            self._push(t, START, "start", lead)

    def _decide(self, inst: Instance) -> Batch | None:
        """The rank's batch, None when it has nothing to run (a head that can never fit is dropped first)."""
        if not inst.has_work():
            return None
        b = inst.decide()
        while b.empty() and self._drop_stuck(inst) and inst.waiting:
            b = inst.decide()
        return None if b.empty() else b

    def _begin(self, inst: Instance, t: float) -> None:
        """Start the group's next iteration at t: every rank starts its own batch (or a dummy step),
        all end when the slowest rank's own part plus the shared MoE part is done."""
        grp = self._group[inst.idx]
        lead = grp[0]
        lead.start_pending = False
        self._now = t
        batches = [self._decide(r) for r in grp]
        if all(b is None for b in batches):
            if not any(r.held for r in grp):
                return
            # the group was idle: nothing was formed ahead of the held requests, the schedulers see them now
            # (while the group runs, a rank with only held requests steps a dummy batch formed without them)
            for r in grp:
                r.release_held()
            batches = [self._decide(r) for r in grp]
        cost = self.cost
        cost.group_batch = generation_only_batch(grp, batches) if cost.graph_pad else None
        own, tokens, real = [], [], []
        for r, b in zip(grp, batches):
            if b is None:
                own.append(cost.dummy_s())
                self.dummy_steps += 1
            else:
                own.append(r.start(b, t))
            if r.held:  # the batch formed ahead of them has started
                r.release_held()
            tokens.append(cost.last_tokens)
            real.append(cost.last_real_tokens)
        cost.group_batch = None
        slow = max(own)
        most = max(tokens)
        dt = slow + cost.group_s(sum(tokens), most)
        for r, b, s in zip(grp, batches, own):
            extra = dt - s if b is not None else dt  # start charged the rank's own part
            r.busy_s += extra
            r.kv_block_s += (r.kv.capacity - r.kv.free) * extra
            if b is not None and r.rec is not None:
                r.rec[-1] = (t, dt, *r.rec[-1][2:])
            r.busy = True
            self.wait_s += slow - s
        # blog 10's balance ratio: real tokens (a dummy step's and CUDA-graph padding's are not)
        ratio = sum(real) / (len(grp) * max(real)) if max(real) else 1.0
        self.group_iterations += 1
        self.group_s += dt
        self.balanced_s += dt * ratio
        self.ratio_sum += ratio
        self._push(t + dt, END, "end", (lead, batches))

    def _iteration_end(self, lead: Instance, batches: list[Batch | None], t: float, next_arrival_s: float) -> None:
        grp = self._group[lead.idx]
        for r, b in zip(grp, batches):
            if b is not None:
                r.end(b, t, self._on_done)
            r.busy = False
        if any(r.has_work() for r in grp):  # the next start, after any arrival or end at this instant
            self._wake(lead, t)

    def summary(self) -> dict:
        """`serve --json`'s `lockstep` object: what waiting for the slowest rank cost."""
        n = self.group_iterations
        busy = sum(i.busy_s for i in self.instances)
        return {"ep": self.cost.ep, "groups": len(self.groups), "group_iterations": n, "dummy_steps": self.dummy_steps,
                "wait_s": self.wait_s, "wait_fraction": self.wait_s / busy if busy > 0 else 0.0,
                "balance_ratio_mean": self.ratio_sum / n if n else None,
                "balanced_time_fraction": self.balanced_s / self.group_s if self.group_s > 0 else None}
