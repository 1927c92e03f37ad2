"""Balancing strategies for variable-length data (`--varlen-balance`), one small class each.

Every strategy spreads one step's document pieces (training/varlen.py) over the dp*cp ranks of a
pipeline stage and says, per rank, its tokens (linear-layer work), attention pairs and
sequence-parallel communication. The slowest rank sets the step (`balance`).

- static: today's loaders. Packed sequences go round-robin to DP ranks, micro-batch by
  micro-batch, and each sequence is split over the CP group in zigzag chunks (Megatron-Core),
  every document paying the CP ring whatever its length.
- bytescale: ByteScale's data-aware dynamic CP (Ge et al. 2025, arXiv:2502.21231): a piece runs
  on ceil(length / capacity) ranks (short ones on one rank, no CP communication), and a balance
  scheduler places pieces longest-work-first on the least-loaded ranks.
- zeppelin: Zeppelin (Chen et al. 2025, arXiv:2509.21841): hierarchical sequence partitioning
  splits a piece over as many ranks as balancing attention needs, widening inside a node (NVLink)
  only; a remapping layer then re-balances tokens for the linear layers (two all-to-alls of the
  moved tokens per layer), so only attention is placed.
- flexsp: heterogeneity-adaptive sequence parallelism (FlexSP, Wang et al., ASPLOS 2025,
  arXiv:2412.01523): each piece gets its own Ulysses group of the smallest power-of-two size
  that fits it (all-to-alls, not overlapped with attention), groups placed as for bytescale.
  The paper's solver is a MILP; greedy placement stands in for it.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from parasim.registry import Registry
from parasim.training.varlen import VarlenBalance, packed_pieces, piece_pairs, zigzag_pairs


@dataclass(frozen=True)
class Pool:
    """One step's pieces and what the ranks' work costs (seconds per layer forward)."""

    sequences: tuple[tuple[int, ...], ...]  # pieces of each packed sequence
    seq_len: int
    micro_batch: int
    dp: int
    cp: int
    token_s: float  # linear layers, per token
    pair_s: float  # attention, per causal pair
    ring_s: Callable[[float, int], float]  # CP ring of a shard of x tokens over c ranks
    a2a_s: Callable[[float, int], float]  # Ulysses all-to-alls of a shard of x tokens over c ranks
    remap_s: Callable[[float], float]  # Zeppelin's two all-to-alls moving x tokens
    node_ranks: int  # dp*cp ranks that share an NVLink domain
    overlap_slowdown: float  # what hiding the ring under attention still costs (step.OVERLAP_SLOWDOWN)

    @property
    def ranks(self) -> int:
        return self.dp * self.cp

    @property
    def capacity(self) -> float:
        """Tokens of one rank per micro-batch in the static plan."""
        return self.micro_batch * self.seq_len / self.cp

    @property
    def micro_batches(self) -> int:
        return len(self.sequences) // (self.dp * self.micro_batch)


@dataclass
class Load:
    """One rank's work over the step."""

    tokens: float = 0.0
    pairs: float = 0.0
    ring_s: float = 0.0  # overlaps the rank's attention
    exposed_s: float = 0.0  # does not

    def time_s(self, pool: Pool) -> float:
        attn = self.pairs * pool.pair_s
        ring = self.ring_s - min(self.ring_s, attn) * (1 - pool.overlap_slowdown)
        return self.tokens * pool.token_s + attn + ring + self.exposed_s


@dataclass(frozen=True)
class Unit:
    """A piece placed on `ranks` ranks: what each of them gets."""

    ranks: int
    tokens: float
    pairs: float
    ring_s: float = 0.0
    exposed_s: float = 0.0


class Strategy:
    """A balancing strategy: `place` gives each of the pool's ranks its load."""

    name = ""
    source = ""
    plan_ring = False  # True: communication is the plan's own CP ring (static)

    def place(self, pool: Pool) -> list[Load]:
        raise NotImplementedError


STRATEGIES: Registry[type[Strategy]] = Registry("varlen balance")


@STRATEGIES.register
class Static(Strategy):
    name, source, plan_ring = "static", "packed sequences round-robin over DP, zigzag over CP (Megatron-Core)", True

    def place(self, pool: Pool) -> list[Load]:
        return [Load(t, p) for t, p in _static_loads(pool.sequences, pool.micro_batch, pool.dp, pool.cp)]


@STRATEGIES.register
class ByteScale(Strategy):
    name, source = "bytescale", "ByteScale data-aware dynamic CP, arXiv:2502.21231"

    def place(self, pool: Pool) -> list[Load]:
        def unit(p: int) -> Unit:
            c = math.ceil(p / pool.capacity)
            return Unit(c, p / c, piece_pairs(p) / c, ring_s=pool.ring_s(p / c, c))

        return _greedy(pool, _units(pool, unit))


@STRATEGIES.register
class Zeppelin(Strategy):
    name, source = "zeppelin", "Zeppelin hierarchical partitioning + remapping, arXiv:2509.21841"

    def place(self, pool: Pool) -> list[Load]:
        target = sum(piece_pairs(p) for s in pool.sequences for p in s) / pool.ranks  # pairs per rank

        def unit(p: int) -> Unit:
            need = math.ceil(p / pool.capacity)
            c = max(need, min(math.ceil(piece_pairs(p) / target), pool.node_ranks, pool.ranks))
            return Unit(c, p / c, piece_pairs(p) / c, ring_s=pool.ring_s(p / c, c))

        loads = _greedy(pool, _units(pool, unit))
        mean = pool.micro_batches * pool.capacity
        for load in loads:  # the remapping layer gives every rank the mean tokens for linear layers
            load.exposed_s += pool.remap_s(abs(load.tokens - mean))
            load.tokens = mean
        return loads


@STRATEGIES.register
class FlexSP(Strategy):
    name, source = "flexsp", "FlexSP heterogeneity-adaptive SP (Ulysses groups), arXiv:2412.01523"

    def place(self, pool: Pool) -> list[Load]:
        def unit(p: int) -> Unit:
            c = min(1 << math.ceil(math.log2(p / pool.capacity)), pool.ranks) if p > pool.capacity else 1
            return Unit(c, p / c, piece_pairs(p) / c, exposed_s=pool.a2a_s(p / c, c))

        return _greedy(pool, _units(pool, unit))


def _units(pool: Pool, unit: Callable[[int], Unit]) -> list[Unit]:
    """One unit per document piece of the step (built once per distinct length)."""
    made: dict[int, Unit] = {}
    return [made[p] if p in made else made.setdefault(p, unit(p)) for seq in pool.sequences for p in seq]


@lru_cache(maxsize=64)
def _static_loads(sequences: tuple[tuple[int, ...], ...], mb: int, dp: int, cp: int) -> tuple[tuple[float, float], ...]:
    seq_len = sum(sequences[0])
    tokens = [0.0] * (dp * cp)
    pairs = [0.0] * (dp * cp)
    for k, seq in enumerate(sequences):
        d = (k // mb) % dp
        for i, p in enumerate(zigzag_pairs(seq, cp)):
            tokens[d * cp + i] += seq_len / cp
            pairs[d * cp + i] += p
    return tuple(zip(tokens, pairs))


def _greedy(pool: Pool, units: list[Unit]) -> list[Load]:
    """Longest work first onto the least-loaded ranks (a unit of c ranks takes the c least loaded).
    No shard exceeds a rank's micro-batch tokens, so activation memory stays the plan's; a rank
    may run more or fewer micro-batches' worth of tokens in the step (ByteScale's balance scheduler
    hands ranks with long sequences fewer micro-batches)."""
    loads = [Load() for _ in range(pool.ranks)]
    heap = [(0.0, r) for r in range(pool.ranks)]
    work = {id(u): u.ranks * (u.tokens * pool.token_s + u.pairs * pool.pair_s + u.ring_s + u.exposed_s)
            for u in units}
    for u in sorted(units, key=lambda u: (-work[id(u)], -u.ranks, -u.tokens)):
        for _, r in [heapq.heappop(heap) for _ in range(u.ranks)]:
            load = loads[r]
            load.tokens += u.tokens
            load.pairs += u.pairs
            load.ring_s += u.ring_s
            load.exposed_s += u.exposed_s
            heapq.heappush(heap, (load.time_s(pool), r))
    return loads


def balance(lengths: tuple[int, ...], pool_costs: dict, *, strategy: str, seq_len: int, global_batch: int,
            dp: int, cp: int, micro_batch: int) -> VarlenBalance:
    """Place one step's pieces with `strategy`; the critical rank as the layer model takes it."""
    seqs = packed_pieces(lengths, seq_len, global_batch)
    pool = Pool(seqs, seq_len, micro_batch, dp, cp, **pool_costs)
    strat = STRATEGIES.get(strategy, field="varlen-balance")()
    loads = strat.place(pool)
    m = pool.micro_batches
    times = [load.time_s(pool) for load in loads]
    crit = loads[max(range(len(loads)), key=times.__getitem__)]
    extra_tokens = crit.tokens - m * pool.capacity  # costed at the attention rate (one knob)
    pairs_eq = max(0.0, crit.pairs + extra_tokens * pool.token_s / pool.pair_s) if pool.pair_s else crit.pairs
    total = sum(load.pairs for load in loads)
    docs = sum(lengths) / len(lengths)
    return VarlenBalance(
        mean_pairs_per_mb=total / dp / m, max_pairs_per_mb=pairs_eq * cp / m,
        documents_per_sequence=seq_len / docs if docs < seq_len else 1.0,
        cp_comm=None if strat.plan_ring else (crit.ring_s / m, crit.exposed_s / m),
        dp_cp_imbalance=max(times) / (sum(times) / len(times)) - 1.0 if sum(times) else 0.0)
