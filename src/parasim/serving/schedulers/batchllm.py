"""BatchLLM-style offline batching (Zheng et al. 2024): global prefix grouping.

The whole waiting queue is ordered so that requests sharing a prefix run back to back (the
prefix is computed once and stays cached while its group runs), decode-heavy requests first
inside a group (output/prompt ratio, descending) so prefill work can fill in behind them, and
batches are sized by KV memory (a large sequence cap and token budget) rather than a fixed count.
Only one request of a group whose prefix is not cached yet is admitted; the rest wait one
iteration and hit the cache. The ordering is a queue policy (`prefix_group_order`) the engine
applies when requests have arrived; `schedule` itself only reads.
"""

from __future__ import annotations

from collections.abc import Iterable

from parasim.serving.schedulers.base import EngineView
from parasim.serving.schedulers.policies import Sarathi


def prefix_group_order(st, waiting: Iterable[int]) -> list[int]:
    """The waiting queue in BatchLLM's order: preempted requests first, as they were; then the
    prefix groups, largest first (ties: the group whose first request came first), each
    decode-heavy first; requests without a prefix last, in arrival order."""
    waiting = list(waiting)
    front = [r for r in waiting if st.emitted[r]]
    rest = [r for r in waiting if not st.emitted[r]]
    size: dict[int, int] = {}
    first: dict[int, int] = {}
    for r in rest:
        g = st.prefix_id[r]
        if g >= 0:
            size[g] = size.get(g, 0) + 1
            first.setdefault(g, r)

    def key(r: int):
        g = st.prefix_id[r]
        if g < 0:
            return (1, 0, r, 0.0, r)
        return (0, -size[g], first[g], -st.output_tokens[r] / st.prompt_tokens[r], r)

    rest.sort(key=key)
    return front + rest


class BatchLLM(Sarathi):
    name = "batchllm"
    default_budget = 8192
    default_max_batch = 1024
    gated = True
    search_budgets = False  # a memory-bound batch is its policy, not a knob to tune
    shares_prefixes = True
    queue_order = staticmethod(prefix_group_order)

    def admissible(self, inst: EngineView, rid: int, pending: set[int]) -> bool:
        st = inst.st
        g = st.prefix_id[rid]
        if g < 0 or not inst.kv.enabled or inst.kv.cached_tokens(g):
            return True
        if g in pending:
            return False
        pending.add(g)
        return True
