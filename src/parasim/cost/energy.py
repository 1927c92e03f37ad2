"""Power, energy and dollars.

Board power is idle + (TDP - idle) x utilisation x activity. Utilisation is the busy fraction
of the GPU (time in kernels / wall time); activity is what the busy time does: a compute-saturated
second draws the TDP (activity 1), a memory-bound second (HBM streaming: LLM decode) draws the
part's catalogued `memory_bound_power_fraction` of the rated TDP, which measurements put far below
it (H200 decode 137-300 W of 700 W, specs/data/accelerators.yaml [ma-decode-h200]). A part with no
such figure charges every busy second the TDP. Both ends (idle, TDP) are catalogued per accelerator.
Dollars are GPU-hours times the catalogue's (editable, assumed) price per GPU-hour.
"""

from __future__ import annotations

from parasim.specs.accelerator import AcceleratorSpec


def memory_bound_activity(acc: AcceleratorSpec) -> float:
    """Dynamic power of a memory-bound busy second as a fraction of (TDP - idle): the catalogued
    streaming watts (fraction x rated TDP, never above the present limit) above idle."""
    span = acc.tdp_w - acc.idle_w
    if acc.memory_bound_power_fraction >= 1.0 or span <= 0:
        return 1.0
    watts = min(acc.memory_bound_power_fraction * (acc.rated_tdp_w or acc.tdp_w), acc.tdp_w)
    return min(max((watts - acc.idle_w) / span, 0.0), 1.0)


def busy_activity(acc: AcceleratorSpec, compute_share: float) -> float:
    """Dynamic power while busy as a fraction of (TDP - idle), when `compute_share` of the busy
    time is compute-saturated and the rest memory-bound; 1.0 for a part without a streaming figure."""
    m = memory_bound_activity(acc)
    if m >= 1.0:
        return 1.0
    c = min(max(compute_share, 0.0), 1.0)
    return c + m * (1.0 - c)


def power_w(acc: AcceleratorSpec, utilisation: float, compute_share: float = 1.0) -> float:
    u = min(max(utilisation, 0.0), 1.0)
    if compute_share >= 1.0:
        return acc.idle_w + (acc.tdp_w - acc.idle_w) * u
    return acc.idle_w + (acc.tdp_w - acc.idle_w) * u * busy_activity(acc, compute_share)


def energy_j(acc: AcceleratorSpec, gpus: int, wall_s: float, utilisation: float, compute_share: float = 1.0) -> float:
    return gpus * wall_s * power_w(acc, utilisation, compute_share)


def energy_by_phase_j(acc: AcceleratorSpec, total_j: float, idle_j: float, compute_share: float) -> dict[str, float]:
    """`total_j` split three ways: the idle draw over the held time, and the dynamic rest in
    proportion to the busy time's compute-saturated share (at activity 1) and memory-bound rest
    (at `memory_bound_activity`); the parts add up to `total_j`."""
    c = min(max(compute_share, 0.0), 1.0)
    a = busy_activity(acc, c)
    dynamic = total_j - idle_j
    compute = dynamic * c / a if a > 0 else 0.0
    return {"idle": idle_j, "compute_bound": compute, "memory_bound": dynamic - compute}


def cost_usd(acc: AcceleratorSpec, gpus: int, wall_s: float, price_usd_per_hour: float | None = None) -> float:
    price = acc.price_usd_per_hour if price_usd_per_hour is None else price_usd_per_hour
    return gpus * wall_s / 3600.0 * price
