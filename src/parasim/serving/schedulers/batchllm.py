"""BatchLLM-style offline batching (Zheng et al. 2024): global prefix grouping.

The whole waiting queue is reordered so that requests sharing a prefix run back to back (the
prefix is computed once and stays cached while its group runs), decode-heavy requests first
inside a group (output/prompt ratio, descending) so prefill work can fill in behind them, and
batches are sized by KV memory (a large sequence cap and token budget) rather than a fixed count.
Only one request of a group whose prefix is not cached yet is admitted; the rest wait one
iteration and hit the cache.
"""

from __future__ import annotations

from parasim.serving.schedulers.base import Batch
from parasim.serving.schedulers.policies import Sarathi


class BatchLLM(Sarathi):
    name = "batchllm"
    default_budget = 8192
    default_max_batch = 1024
    gated = True
    search_budgets = False  # a memory-bound batch is its policy, not a knob to tune
    shares_prefixes = True

    def __init__(self, token_budget: int, max_batch: int) -> None:
        super().__init__(token_budget, max_batch)
        self._sorted_at: dict[int, int] = {}

    def _regroup(self, inst) -> None:
        st = inst.st
        front = [r for r in inst.waiting if st.gen[r]]  # preempted: keep them first
        rest = [r for r in inst.waiting if not st.gen[r]]
        size: dict[int, int] = {}
        first: dict[int, int] = {}
        for r in rest:
            g = st.pid[r]
            if g >= 0:
                size[g] = size.get(g, 0) + 1
                first.setdefault(g, r)

        def key(r: int):
            g = st.pid[r]
            if g < 0:
                return (1, 0, r, 0.0, r)
            return (0, -size[g], first[g], -st.O[r] / st.P[r], r)

        rest.sort(key=key)
        inst.waiting.clear()  # in place: the engine holds this deque
        inst.waiting.extend(front + rest)
        self._sorted_at[inst.idx] = inst.routed

    def admissible(self, inst, rid: int, pending: set[int]) -> bool:
        st = inst.st
        g = st.pid[rid]
        if g < 0 or not inst.kv.enabled or inst.kv.cached_tokens(g):
            return True
        if g in pending:
            return False
        pending.add(g)
        return True

    def schedule(self, inst) -> Batch:
        if inst.waiting and self._sorted_at.get(inst.idx) != inst.routed:
            self._regroup(inst)
        return super().schedule(inst)
