"""DualPipe's op order per rank (DeepSeek-V3 technical report, arXiv 2412.19437, section 3.2.1;
the order follows the eight phases of DeepSeek's published `DualPipe.step`).

pp ranks (even), m micro-batches (even, at least 2*pp): half enter at rank 0 and travel down
(direction 0: rank r runs stage r), half enter at rank pp-1 and travel up (direction 1: rank r
runs stage pp-1-r, its second copy of the parameters). The chunk of an op is its direction;
micro-batches 0..m/2-1 go down, m/2..m-1 go up. On the first half of the ranks "phase 0" is
direction 0; on the second half the phases are swapped, so both halves run the same program.

A backward is split into B (input gradient) and W (weight gradient); "zero-bubble" backwards
queue their W (run later, first in, first out), the others run W right after B. In the main
phase a forward of one direction and a backward of the other run as an overlapped pair: the
returned set holds the index of each pair's F (its B is the next op).
"""

from __future__ import annotations

from collections import deque


def dualpipe_order(rank: int, pp: int, m: int) -> tuple[list[tuple[str, int, int]], frozenset[int]]:
    """(ops, paired F indices) of one rank; see the module docstring."""
    half_ranks, half_rank, half_m = pp // 2, min(rank, pp - 1 - rank), m // 2
    middle = rank in (half_ranks - 1, half_ranks)
    direction = (0, 1) if rank < half_ranks else (1, 0)  # phase -> direction
    nxt = {"F": [0, 0], "B": [0, 0]}
    ops: list[tuple[str, int, int]] = []
    pairs: set[int] = set()
    wq: deque = deque()

    def op(kind: str, phase: int) -> None:
        d = direction[phase]
        j = nxt[kind][d] + d * half_m
        nxt[kind][d] += 1
        ops.append((kind, j, d))

    def fwd(phase: int) -> None:
        op("F", phase)

    def bwd(phase: int, zb: bool = False) -> None:
        op("B", phase)
        if zb:
            wq.append(ops[-1][1:])
        else:
            ops.append(("W", *ops[-1][1:]))

    def weight() -> None:
        ops.append(("W", *wq.popleft()))

    def pair(phase_f: int, phase_b: int) -> None:
        pairs.add(len(ops))
        fwd(phase_f)
        bwd(phase_b)

    for _ in range((half_ranks - half_rank - 1) * 2):  # 1: nF0
        fwd(0)
    for _ in range(half_rank + 1):  # 2: nF0F1
        fwd(0)
        fwd(1)
    for _ in range(half_ranks - half_rank - 1):  # 3: nB1W1F1
        bwd(1, zb=True)
        weight()
        fwd(1)
    for i in range(half_m - pp + half_rank + 1):  # 4: nF0B1F1B0, the main phase
        if i == 0 and middle:  # DualPipe does not overlap the middle ranks' first pair
            fwd(0)
            bwd(1)
        else:
            pair(0, 1)
        pair(1, 0)
    for _ in range(half_ranks - half_rank - 1):  # 5: nB1F1B0
        bwd(1)
        pair(1, 0)
    zb = False
    for i in range(half_rank + 1):  # 6: nB1B0, the second half with deferred W
        if i == (half_rank + 1) // 2 and half_rank % 2 == 1:
            zb = True
        bwd(1, zb)
        if i == (half_rank + 1) // 2 and half_rank % 2 == 0:
            zb = True
        bwd(0, zb)
    for _ in range(half_ranks - half_rank - 1):  # 7: nWB0
        weight()
        bwd(0, zb=True)
    while wq:  # 8: nW
        weight()
    return ops, frozenset(pairs)
