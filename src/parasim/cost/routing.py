"""What top-k routing does to a mixture-of-experts layer's GEMMs, from the statistics of the routing.

With T tokens each picking k of E experts, an expert's token count is Binomial(T, k/E) (taken as
uniform routing: the first-principles floor of the imbalance; learned routers are at least this
uneven). Two consequences the mean count misses:

* grouped / fused-MoE GEMMs pad every expert's rows up to whole row tiles, so the padded rows are
  the expected number of tiles E[ceil(X / tile)] x tile, not ceil(mean / tile) x tile;
* with expert parallelism the ep ranks wait for the busiest one at the combine all-to-all: its
  token-expert pairs are the expected maximum of ep (nearly normal) rank loads.

A benchmark may replace the router by a fixed one (`ROUTING_LAYOUTS`): `contiguous` is NeMo
AutoModel's `FakeBalancedGate` (components/moe/layers.py, v0.2.0): token t of a rank takes the k
consecutive experts from (t k mod E), so every expert gets exactly T k / E pairs (no sampling
noise) and a token's experts sit on the one or two ranks holding that run of ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_STD = NormalDist()

#: how tokens pick experts: `random` (a router's top-k, or Megatron's force-balanced random logits)
#: or `contiguous` (k consecutive expert ids per token, a fixed benchmark gate; module docstring)
ROUTING_LAYOUTS = ("random", "contiguous")


@dataclass(frozen=True)
class ExpertRouting:
    """What a training plan says about its MoE routing: the busiest expert's load over the mean
    (`skew`, 1 = only routing's sampling noise), the capacity factor beyond which tokens are
    dropped (None = dropless, Megatron-Core's default), the dispatch kernel (cost.moe_a2a) and the
    bytes per dispatched element when the dispatch moves fp8 (None = the activations' dtype)."""

    skew: float = 1.0
    capacity_factor: float | None = None
    a2a: str = "alltoall"
    dispatch_bytes: float | None = None
    layout: str = "random"


def expected_tiles(tokens: float, p: float, tile: int, mean: float | None = None) -> float:
    """E[ceil(X / tile)] for X ~ Binomial(tokens, p) (mean `mean` if given, e.g. a busier rank's):
    sum over j >= 0 of P(X > j * tile); P(X > 0) exactly, the rest by the normal approximation with a
    continuity correction."""
    if tokens <= 0 or p <= 0 or tile <= 0:
        return 0.0
    mu = tokens * p if mean is None else mean
    sd = math.sqrt(max(tokens * p * (1.0 - p), 0.0))
    total = 1.0 - (1.0 - min(p, 1.0)) ** tokens  # P(X > 0)
    j = 1
    while True:
        edge = j * tile + 0.5
        if sd == 0.0:
            tail = 1.0 if mu > edge else 0.0
        else:
            tail = 1.0 - _STD.cdf((edge - mu) / sd)
        if tail < 1e-9 and edge > mu:
            return total
        total += tail
        j += 1


def expected_max_normal(n: int) -> float:
    """E[max of n iid standard normals], Blom's approximation Phi^-1((n - 0.375) / (n + 0.25))
    (Blom 1958, Statistical Estimates and Transformed Beta-Variables): 4 % high at n = 2, under 1 %
    from n = 8."""
    if n <= 1:
        return 0.0
    return _STD.inv_cdf((n - 0.375) / (n + 0.25))


def busiest_rank_factor(tokens: float, k: int, experts: int, ep: int) -> float:
    """The busiest of ep ranks' token-expert pairs over the mean rank's. Each token's k distinct
    experts land on one rank's E/ep experts hypergeometrically: variance k (1/ep)(1 - 1/ep)(E - k)/(E - 1)
    per token, summed over the tokens; the maximum of ep such loads is mean + sd x E[max of ep normals]."""
    if ep <= 1 or tokens <= 0 or experts <= 1:
        return 1.0
    q = 1.0 / ep
    mean = tokens * k * q
    var = tokens * k * q * (1.0 - q) * (experts - k) / (experts - 1)
    return 1.0 + math.sqrt(max(var, 0.0)) * expected_max_normal(ep) / mean


def skewed_rank_factor(skew: float, experts: int, ep: int) -> float:
    """The busiest EP rank's load over the mean when the busiest expert carries `skew` x the mean
    expert load (a learned router's systematic imbalance) and the rank's other E/ep - 1 experts the
    mean: (skew + E/ep - 1) / (E/ep). One expert per rank gives the skew itself."""
    local = max(experts // max(ep, 1), 1)
    return (max(skew, 1.0) + local - 1) / local


def dropped_fraction(skew: float, capacity_factor: float | None) -> float:
    """Share of token-expert pairs a capacity factor c drops (GShard / Switch token dropping):
    expert loads spread evenly between (2 - skew) and skew times the mean (skew <= 2; a larger
    skew is taken as 2, the widest even spread with that mean), pairs above c x mean dropped:
    E[max(0, X - c)] / E[X]."""
    if capacity_factor is None:
        return 0.0
    s, c = min(max(skew, 1.0), 2.0), capacity_factor
    lo = 2.0 - s
    if c >= s:
        return 0.0
    if s == lo:  # every expert at the mean
        return 1.0 - c
    if c <= lo:
        return 1.0 - c
    return (s - c) ** 2 / (2.0 * (s - lo))


def expert_load_factor(tokens: float, k: int, experts: int, ep: int, *, skew: float = 1.0,
                       capacity_factor: float | None = None, layout: str = "random") -> float:
    """The busiest EP rank's token-expert pairs over the mean rank's: the larger of routing's
    sampling noise (`busiest_rank_factor`; none under a `contiguous` fixed gate) and the router's
    systematic skew, capped at the capacity factor when tokens beyond it are dropped."""
    noise = 1.0 if layout == "contiguous" else busiest_rank_factor(tokens, k, experts, ep)
    f = max(noise, skewed_rank_factor(skew, experts, ep))
    return min(f, capacity_factor) if capacity_factor is not None else f
