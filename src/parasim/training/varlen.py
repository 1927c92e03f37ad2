"""Variable-length data: documents packed into fixed seq-len sequences, attention per document.

Documents (training/length_dist.py: a length file, a histogram or a named law) are concatenated
in order and cut into sequences of seq_len tokens (a document crossing a boundary is split, as
packed pre-training loaders do); the attention of a piece of l tokens is l(l+1)/2 causal pairs
(variable-length flash attention with a per-document mask). A balancing strategy
(training/varlen_balance.py) then gives every one of the dp*cp ranks of a pipeline stage its
tokens, attention pairs and sequence-parallel communication; the slowest rank sets the step.

With per-document masks, CP's zigzag split (rank i holds chunks i and 2cp-1-i of each sequence)
no longer balances: it equalises the pairs of one causal sequence, not of several documents.
`zigzag_pairs` counts each CP rank's pairs exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from parasim.training.length_dist import load_lengths

__all__ = ["VarlenBalance", "load_lengths", "packed_pieces", "packed_pairs", "zigzag_pairs", "piece_pairs"]


def piece_pairs(length: float) -> float:
    """Causal (query, key) pairs of one document piece."""
    return length * (length + 1) / 2


@lru_cache(maxsize=32)
def packed_pieces(lengths: tuple[int, ...], seq_len: int, sequences: int) -> tuple[tuple[int, ...], ...]:
    """Document pieces of each of `sequences` packed sequences (documents cycled if short)."""
    out: list[tuple[int, ...]] = []
    cur: list[int] = []
    room, i, n = seq_len, 0, len(lengths)
    left = lengths[0]
    while len(out) < sequences:
        take = min(left, room)
        cur.append(take)
        left -= take
        room -= take
        if room == 0:
            out.append(tuple(cur))
            cur, room = [], seq_len
        if left == 0:
            i += 1
            left = lengths[i % n]
    return tuple(out)


def packed_pairs(lengths: tuple[int, ...], seq_len: int, sequences: int) -> list[float]:
    """Causal attention pairs of each packed sequence."""
    return [sum(piece_pairs(p) for p in seq) for seq in packed_pieces(lengths, seq_len, sequences)]


def zigzag_pairs(pieces: tuple[int, ...] | list[int], cp: int) -> list[float]:
    """Pairs each of `cp` ranks computes for one packed sequence under the load-balanced zigzag
    split (2*cp equal chunks; rank i holds chunks i and 2cp-1-i), with per-document masks."""
    seq = sum(pieces)
    if cp == 1:
        return [sum(piece_pairs(p) for p in pieces)]
    bounds = [j * seq // (2 * cp) for j in range(2 * cp + 1)]
    chunk = [0.0] * (2 * cp)
    start = 0
    for p in pieces:  # document [start, start + p): queries at q see q - start + 1 keys
        end = start + p
        for j in range(2 * cp):
            lo, hi = max(bounds[j], start), min(bounds[j + 1], end)
            if lo < hi:
                chunk[j] += piece_pairs(hi - start) - piece_pairs(lo - start)
        start = end
    return [chunk[i] + chunk[2 * cp - 1 - i] for i in range(cp)]


@dataclass(frozen=True)
class VarlenBalance:
    """What a balancing strategy leaves on the critical (slowest) rank, per micro-batch."""

    mean_pairs_per_mb: float  # attention pairs of a micro-batch, averaged over DP ranks
    max_pairs_per_mb: float  # the critical rank's pairs, times cp (the layer model divides by cp)
    documents_per_sequence: float
    cp_comm: tuple[float, float] | None = None  # (overlappable ring s, exposed s) per layer; None: the plan's CP ring
    dp_cp_imbalance: float = 0.0  # critical rank's work over the mean work, minus 1
