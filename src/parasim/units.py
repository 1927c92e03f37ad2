"""Memory sizes as people read them: GiB (2**30 bytes), the unit HBM and DRAM are built in.

An "80 GB" H100 holds 80 GiB (nvidia-smi: 81559 MiB; specs.accelerator.HBM_GB_BYTES), so every
memory size parasim prints is in GiB and every JSON key that carries one ends in `_gib` (or is in
bytes, `_bytes`); bandwidths and FLOP/s stay decimal (GB/s, TFLOP/s) as their vendors quote them.
"""

from __future__ import annotations

GIB = float(2 ** 30)


def gib(n_bytes: float) -> float:
    """Bytes -> GiB."""
    return n_bytes / GIB


def fmt_gib(n_bytes: float, digits: int | None = 1) -> str:
    """'79.6 GiB': how every human-readable line shows a memory size. digits=None for a capacity:
    no trailing zeros ('80 GiB', '94.5 GiB')."""
    if digits is None:
        return f"{round(n_bytes / GIB, 1):g} GiB"
    return f"{n_bytes / GIB:.{digits}f} GiB"
