"""Op orders for split-backward pipeline schedules, built by list scheduling at given op times.

The zero-bubble papers (Qi et al., ICLR 2024, arXiv 2401.10241; Qi et al., "Pipeline
Parallelism with Controllable Memory", arXiv 2405.15362) fix an order for each rank and then run
it; the order comes from a simple rule under a memory limit: at every time slot a rank runs the
input-gradient backward B of the oldest micro-batch whose gradient has arrived; else a forward F
if its activations still fit under `cap`; else a deferred weight-gradient W (first in, first
out); else it idles until another rank finishes an op. Ops take the given F, B, W times (no
transfer time), and the rank that is free first decides first. Memory is
counted in units of one chunk's activations: an F holds 1 until its W, and after its B only the
`held` fraction the W needs (so W frees memory: the lever the papers pull).

The orders are valid at any op times, not only unit ones: each rank's list was executed once
against the same dependencies, and `run_pipeline` only ever waits on earlier ops of other lists.
"""

from __future__ import annotations

import heapq
from collections import deque


def greedy_order(pp: int, m: int, stages: tuple[tuple[int, ...], ...], cap: float, held: float = 1.0,
                 times: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> list[list[tuple[str, int, int]]]:
    """Per rank, the (kind, micro-batch, chunk) list; `stages[r][c]` is the virtual stage of
    chunk c on rank r (each virtual stage on exactly one rank), `cap` the activation limit,
    `times` the (F, B, W) seconds of one chunk op the order is planned at."""
    v = len(stages[0])
    n = pp * v
    inf = float("inf")
    f_done = [[inf] * m for _ in range(n)]  # when the result is usable
    b_done = [[inf] * m for _ in range(n)]
    next_f = [[0] * v for _ in range(pp)]
    next_b = [[0] * v for _ in range(pp)]
    wq: list[deque] = [deque() for _ in range(pp)]
    mem = [0.0] * pp
    out: list[list[tuple[str, int, int]]] = [[] for _ in range(pp)]
    left = [3 * m * v] * pp
    dur = dict(zip("FBW", times))
    heap = [(0.0, r) for r in range(pp)]  # (free at, rank) of the ranks with ops left, rank order at ties
    waiting: list[int] = []  # ranks with nothing to run at the current time
    lifted = False
    while heap or waiting:
        if not heap or (waiting and heap[0][0] > t):  # time moves on: the idle ranks look again
            if not heap:  # every rank waits on memory: lift the cap for one op
                if lifted:
                    raise RuntimeError("pipeline order: no rank can run (a schedule rule is inconsistent)")
                lifted = True
            for x in waiting:
                heapq.heappush(heap, (heap[0][0] if heap and not lifted else t, x))
            waiting = []
        t, r = heapq.heappop(heap)
        op = _pick(t, stages[r], n, m, f_done, b_done, next_f[r], next_b[r], wq[r], mem[r] + 1.0 <= cap or lifted)
        if op is None:
            waiting.append(r)
            continue
        lifted = False
        kind, j, c = op
        g = stages[r][c]
        end = t + dur[kind]
        if kind == "F":
            f_done[g][j] = end
            next_f[r][c] += 1
            mem[r] += 1.0
        elif kind == "B":
            b_done[g][j] = end
            next_b[r][c] += 1
            wq[r].append((j, c))
            mem[r] -= 1.0 - held
        else:
            mem[r] -= held
        left[r] -= 1
        out[r].append(op)
        if left[r]:
            heapq.heappush(heap, (end, r))
    return out


def _pick(t: float, row: tuple[int, ...], n: int, m: int, f_done: list, b_done: list, next_f: list,
          next_b: list, wq: deque, room: bool) -> tuple[str, int, int] | None:
    """The op a rank free at t runs (see the module docstring), or None."""
    best = None
    for c, g in enumerate(row):  # B: the oldest micro-batch whose gradient is here, later stage first
        j = next_b[c]
        if j < m and (f_done[g][j] if g == n - 1 else b_done[g + 1][j]) <= t and f_done[g][j] <= t:
            if best is None or (j, -g) < best[0]:
                best = ((j, -g), ("B", j, c))
    if best is not None:
        return best[1]
    if room:
        for c, g in (enumerate(row) if len(row) == 1 or row[0] > row[1] else reversed(list(enumerate(row)))):
            # F: the later stage first
            j = next_f[c]
            if j < m and (g == 0 or f_done[g - 1][j] <= t):
                return ("F", j, c)
    if wq:
        j, c = wq.popleft()
        return ("W", j, c)
    return None
