"""Roofline time of one kernel: max(compute, memory) with shape-dependent achievable efficiency.

    time = max(flops / (peak * eff_compute(shape)), bytes / (hbm_bw * eff_mem)) + kernel overhead

Near the ridge point (compute and memory time close) the sharp max is replaced, where the catalog
measures it, by a p-norm of the two (`ridge_time_s`): the weight stream and the MMA pipeline do not
overlap perfectly, so a GEMM there runs below both rooflines.

GEMM efficiency depends on M (tokens): an output tile is `gemm_tile_m` rows tall, so a GEMM with
M rows keeps only M / (ceil(M / tile) * tile) of each tile busy (tile quantisation); for small M
the memory term (reading the weights) dominates anyway, which is why decode is bandwidth-bound.
Where the catalog gives the SM count, the output tiles (gemm_tile_m x gemm_tile_n) also run in
waves of `sms`, and a partly filled last wave idles the rest (wave quantisation). The catalog's
efficiencies are measured on large square GEMMs whose waves are (almost) all full.
"""

from __future__ import annotations

import math

from parasim.cost.dtypes import attention_dtype
from parasim.mathx import cdiv
from parasim.specs.accelerator import AcceleratorSpec


def tile_fill(m: float, tile_m: int) -> float:
    """Fraction of the M-tiles a GEMM with m rows actually fills (1.0 for multiples of the tile)."""
    if m <= 0:
        return 1.0
    tiles = cdiv(m, tile_m)
    return m / (tiles * tile_m)


def wave_fill(m: float, n: float, acc: AcceleratorSpec, tile_m: int = 0) -> float:
    """Fraction of the SM-slots the output tiles of an (m x n) GEMM keep busy, M-tile fill included.

    Tiles of gemm_tile_m x gemm_tile_n run in waves of `sms`; the last wave is partly idle. When a
    GEMM has fewer tiles than SMs, libraries switch to smaller tiles / split-K, so only the M-fill
    is charged. Without an SM count (or n) this is tile_fill(m). `tile_m` overrides the part's
    tile height for kernels with their own (weight-only Marlin GEMMs: cost.quant.MARLIN_TILE_M).
    """
    e = acc.efficiency
    tm = tile_m or e.gemm_tile_m
    fill = tile_fill(m, tm)
    if n <= 0 or e.sms <= 0:
        return fill
    tiles = cdiv(m, tm) * cdiv(n, e.gemm_tile_n)
    if tiles < e.sms:
        return fill
    waves = cdiv(tiles, e.sms)
    return m * n / (waves * e.sms * tm * e.gemm_tile_n)


def grouped_fill(mean_rows: float, tiles_per_group: float, groups: float, n: float, acc: AcceleratorSpec,
                 tile_m: int = 0) -> float:
    """Fraction of the SM-slots a grouped GEMM keeps busy: `groups` GEMMs (experts) of `mean_rows`
    real rows each, padded to `tiles_per_group` row tiles on average, all launched together so that
    every group's output tiles share the waves (a fused-MoE / grouped-GEMM kernel). With fewer tiles
    than SMs, or no SM count, only the row padding is charged."""
    tm = tile_m or acc.efficiency.gemm_tile_m
    if mean_rows <= 0 or tiles_per_group <= 0:
        return 1.0
    pad = min(1.0, mean_rows / (tiles_per_group * tm))
    e = acc.efficiency
    if n <= 0 or e.sms <= 0:
        return pad
    tiles = groups * tiles_per_group * cdiv(n, e.gemm_tile_n)
    if tiles < e.sms:
        return pad
    waves = cdiv(math.ceil(tiles - 1e-9), e.sms)
    return min(1.0, groups * mean_rows * n / (waves * e.sms * tm * e.gemm_tile_n))


def gemm_flops_bytes(m: float, k: float, n: float, *, weight_bytes: float, act_bytes: float,
                     count: float = 1.0) -> tuple[float, float]:
    """FLOPs and HBM bytes of `count` (m x k) @ (k x n) GEMMs: weights read once, input read,
    output written."""
    return 2.0 * m * k * n * count, (k * n * weight_bytes + m * (k + n) * act_bytes) * count


def gemm_roofline_s(m: float, flops: float, bytes_moved: float, acc: AcceleratorSpec, *, compute_dtype: str,
                    n: float = 0.0, k: float = 0.0, tile_m: int = 0, fill: float = 0.0, rate: float = 1.0,
                    dequant: float = 1.0) -> float:
    """`n` (output columns), when given, adds wave quantisation over the part's SMs; `k` (reduction
    depth), when given, the per-tile prologue/epilogue share (AcceleratorSpec.gemm_efficiency);
    `tile_m`, the kernel's own tile height (0 = the part's `gemm_tile_m`); `fill`, when given, the
    share of the padded tile rows that are real (a grouped GEMM's, from its routing: cost.routing)
    in place of wave_fill; `rate`, the kernel's MMA rate against the part's dense GEMM at the same
    shape (a grouped expert GEMM's: cost.moe_tile.grouped_gemm_rate; 1 = the dense kernel's), which
    scales the compute side only, padded and ridge alike, never the bytes; `dequant`, a weight-only
    kernel's rate on its real rows once it dequantizes every weight element per row block
    (cost.quant.marlin_rate; 1 = none): the real rows' MMA time over it is one more floor of the compute
    side beside the padded one, so it binds at prefill sizes and stays under the weight read at decode."""
    if m <= 0 or flops <= 0:
        return 0.0
    base, peak = acc.gemm_efficiency(compute_dtype, k) * rate, acc.sustained_peak(compute_dtype)
    eff = base * (fill if fill > 0 else wave_fill(m, n, acc, tile_m))
    memory_s = bytes_moved / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory)
    t = max(flops / (peak * eff), flops / (peak * base * dequant), memory_s)
    p = acc.gemm_ridge_p(compute_dtype)
    if p > 0:  # real rows only: the padding is in the floor above (ridge_time_s)
        t = max(t, ridge_time_s(flops / (peak * base * dequant), memory_s, p))
    return t + acc.efficiency.kernel_overhead_s


def ridge_time_s(compute_s: float, memory_s: float, p: float) -> float:
    """Smooth roofline: the p-norm (c^p + m^p)^(1/p) of a GEMM's MMA time on its real rows and its
    HBM time. Far from the ridge it is the larger of the two (the sharp roofline); where they are
    close, neither hides the other completely: at c = m it is 2^(1/p) times either. Measured GEMM
    sweeps over M on H100 (the catalog's `gemm_ridge_p` sources) follow it; the tile and wave
    padding is not part of c here, since padded rows cost MMA issue slots, not operand traffic,
    and stays the floor max(padded compute, memory) in gemm_roofline_s."""
    if memory_s <= 0 or compute_s <= 0:
        return max(compute_s, memory_s)
    big, small = max(compute_s, memory_s), min(compute_s, memory_s)
    return big * (1.0 + (small / big) ** p) ** (1.0 / p)


def gemm_time_s(m: float, k: float, n: float, acc: AcceleratorSpec, *, compute_dtype: str,
                weight_bytes: float, act_bytes: float, count: float = 1.0) -> float:
    """`count` identical (m x k) @ (k x n) GEMMs whose weights are `weight_bytes` per element."""
    if m <= 0 or count <= 0:
        return 0.0
    flops, mem = gemm_flops_bytes(m, k, n, weight_bytes=weight_bytes, act_bytes=act_bytes, count=count)
    return gemm_roofline_s(m, flops, mem, acc, compute_dtype=compute_dtype, n=n, k=k)


def memory_time_s(bytes_moved: float, acc: AcceleratorSpec, *, kernels: int = 1) -> float:
    """A bandwidth-bound kernel (norms, elementwise, decode attention reading the KV cache)."""
    if bytes_moved <= 0:
        return 0.0
    return bytes_moved / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory) + kernels * acc.efficiency.kernel_overhead_s


def attention_time_s(flops: float, bytes_moved: float, acc: AcceleratorSpec, *, dtype: str,
                     shape: float = 1.0) -> float:
    """Fused attention: compute at the catalogued flash-attention efficiency, or memory-bound.

    Its math runs in 16-bit even for 8-bit activations or caches (`cost.dtypes.attention_dtype`).
    `shape` multiplies the compute time: the kernel's rate at this sequence length and mask against
    the catalogued point (`cost.attn_shape.AttnLaw.time_scale`; 1 = the catalog's rate).
    """
    if flops <= 0 and bytes_moved <= 0:
        return 0.0
    dt = attention_dtype(dtype)
    t = max(flops * shape / (acc.sustained_peak(dt) * acc.efficiency.attention),
            bytes_moved / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory))
    return t + acc.efficiency.kernel_overhead_s
