"""Power, energy and dollars.

Board power is modelled as idle + (TDP - idle) * utilisation, with utilisation the busy
fraction of the GPU (time in kernels / wall time); both ends are catalogued per accelerator.
Dollars are GPU-hours times the catalogue's (editable, assumed) price per GPU-hour.
"""

from __future__ import annotations

from parasim.specs.accelerator import AcceleratorSpec


def power_w(acc: AcceleratorSpec, utilisation: float) -> float:
    u = min(max(utilisation, 0.0), 1.0)
    return acc.idle_w + (acc.tdp_w - acc.idle_w) * u


def energy_j(acc: AcceleratorSpec, gpus: int, wall_s: float, utilisation: float) -> float:
    return gpus * wall_s * power_w(acc, utilisation)


def cost_usd(acc: AcceleratorSpec, gpus: int, wall_s: float, price_usd_per_hour: float | None = None) -> float:
    price = acc.price_usd_per_hour if price_usd_per_hour is None else price_usd_per_hour
    return gpus * wall_s / 3600.0 * price
