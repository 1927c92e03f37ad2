"""The global batch a training plan runs: exact sequences, or the nearest fit to a token budget.

A user who types `--global-batch-tokens 16000000` means "about 16M tokens per step". No layout
can run a fractional number of sequences, and each layout can only split a batch that is a
multiple of its granule: dp * micro_batch sequences (and, for interleaved 1F1B, dp * micro_batch
* pp, since the micro-batch count must be a multiple of pp). So each plan gets the multiple of its
granule nearest the budget, and the plan is dropped only when that multiple is further from the
budget than the stated relative tolerance. `--global-batch` (sequences) stays exact: a plan
whose granule does not divide it is dropped.

Ties (two multiples equally far from the budget) go to the smaller batch, so the rule is
deterministic and stays under the budget when staying under costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from parasim.errors import InputError
from parasim.specs.edge import number, positive_int

#: relative tolerance on a token budget when the user gives none (+-5 %: the Llama 3 paper's
#: 16M-token batch at 8K context is 2048 sequences = 16,777,216 tokens, 4.9 % above 16,000,000)
DEFAULT_BATCH_TOLERANCE = 0.05
#: the largest tolerance accepted: past +-50 % a "token budget" no longer names a batch size
MAX_BATCH_TOLERANCE = 0.5


@dataclass(frozen=True, kw_only=True)
class BatchTarget:
    """What the user asked for: `sequences` exactly, or `tokens` within +-`tolerance` (relative)."""

    seq_len: int
    sequences: int | None = None
    tokens: int | None = None
    tolerance: float | None = None  # None with `sequences` (exact); a fraction with `tokens`

    @classmethod
    def from_request(cls, *, seq_len, global_batch, global_batch_tokens, tolerance) -> BatchTarget:
        """Validate the batch flags once; exactly one of global_batch / global_batch_tokens."""
        seq_len = positive_int("seq-len", seq_len)
        if (global_batch is None) == (global_batch_tokens is None):
            raise InputError("global-batch", "give exactly one of --global-batch (sequences) or --global-batch-tokens")
        if global_batch is not None:
            if tolerance is not None:
                raise InputError("batch-tolerance", "applies to --global-batch-tokens only; --global-batch "
                                                    "(sequences) is exact")
            return cls(seq_len=seq_len, sequences=positive_int("global-batch", global_batch))
        tokens = positive_int("global-batch-tokens", global_batch_tokens)
        if tokens < seq_len:
            raise InputError("global-batch-tokens", f"must be at least seq_len={seq_len}, got {tokens}")
        tol = DEFAULT_BATCH_TOLERANCE if tolerance is None else float(
            number("batch-tolerance", tolerance, lo=0, hi=MAX_BATCH_TOLERANCE))
        return cls(seq_len=seq_len, tokens=tokens, tolerance=tol)

    @property
    def exact(self) -> bool:
        return self.sequences is not None

    def pick(self, granule: int) -> int | None:
        """Sequences per step for a plan whose batch must be a multiple of `granule`, or None."""
        if self.sequences is not None:
            return self.sequences if self.sequences % granule == 0 else None
        below = (self.tokens // self.seq_len // granule) * granule  # largest multiple at or under the budget
        cands = [b for b in (below, below + granule) if b >= granule]
        best = min(cands, key=lambda b: (abs(b * self.seq_len - self.tokens), b))
        return best if abs(best * self.seq_len - self.tokens) <= self.tolerance * self.tokens else None

    def deviation(self, sequences: int) -> float:
        """Relative distance of `sequences` from the token budget (0 for an exact request)."""
        if self.tokens is None:
            return 0.0
        return abs(sequences * self.seq_len - self.tokens) / self.tokens

    def describe(self) -> str:
        if self.exact:
            return f"{self.sequences} sequences (exact)"
        return f"{self.tokens:,} tokens +-{100 * self.tolerance:g} % (the nearest batch each layout can split)"

    def as_dict(self) -> dict:
        return {"global_batch": self.sequences, "global_batch_tokens": self.tokens, "batch_tolerance": self.tolerance}
