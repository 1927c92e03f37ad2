"""Variable-length data: documents packed into fixed seq-len sequences, attention per document.

Documents (one length per line of the file) are concatenated in file order and cut into
sequences of seq_len tokens (a document crossing a boundary is split, as packed pre-training
loaders do); the attention of a sequence is the sum over its document pieces of l(l+1)/2 causal
pairs (variable-length flash attention with a per-document mask). Sequences go to DP ranks
round-robin, micro-batch by micro-batch; GEMM work is the same on every rank (same token count),
attention is not, and the slowest rank sets the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=16)
def load_lengths(path: str) -> tuple[int, ...]:
    """Document lengths, one per line (specs.length_file: bad lines are errors naming the line)."""
    from parasim.specs import model_limits
    from parasim.specs.length_file import read_lengths

    lengths, _ = read_lengths(path, "seq-len-dist", hi=model_limits.limit("context"), weighted=False)
    return tuple(lengths)


def packed_pairs(lengths: tuple[int, ...], seq_len: int, sequences: int) -> list[float]:
    """Causal attention pairs of each of `sequences` packed sequences (documents cycled if short)."""
    pairs = []
    cur = 0.0
    room = seq_len
    i = 0
    n = len(lengths)
    left = lengths[0]
    while len(pairs) < sequences:
        take = min(left, room)
        cur += take * (take + 1) / 2
        left -= take
        room -= take
        if room == 0:
            pairs.append(cur)
            cur, room = 0.0, seq_len
        if left == 0:
            i += 1
            left = lengths[i % n]
    return pairs


@dataclass(frozen=True)
class VarlenBalance:
    mean_pairs_per_mb: float  # over all ranks
    max_pairs_per_mb: float  # the DP rank with the most attention work
    documents_per_sequence: float


def balance(lengths: tuple[int, ...], *, seq_len: int, global_batch: int, dp: int, micro_batch: int) -> VarlenBalance:
    pairs = packed_pairs(lengths, seq_len, global_batch)
    per_rank = [0.0] * dp
    for k, p in enumerate(pairs):
        per_rank[(k // micro_batch) % dp] += p
    mbs = global_batch // (dp * micro_batch)
    mean = sum(per_rank) / dp / mbs
    docs = sum(lengths) / len(lengths)
    return VarlenBalance(mean, max(per_rank) / mbs, seq_len / docs if docs < seq_len else 1.0)
