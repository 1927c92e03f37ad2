"""Wave quantisation: output tiles run in waves of the SM count; a partial last wave idles SMs."""

from __future__ import annotations

import pytest

from conftest import make_accelerator
from parasim.cost.roofline import tile_fill, wave_fill
from parasim.specs.accelerator import Efficiency


def _acc(sms):
    return make_accelerator(efficiency=Efficiency(sms=sms, gemm_tile_m=128, gemm_tile_n=256))


def test_wave_fill_hand_formula():
    # 4096 x 4096 output: 32 x 16 = 512 tiles on 132 SMs -> 4 waves, 512 / 528 busy
    assert wave_fill(4096, 4096, _acc(132)) == pytest.approx(512 / (4 * 132))


def test_full_waves_are_free():
    assert wave_fill(128 * 132, 256, _acc(132)) == pytest.approx(1.0)


def test_without_sm_count_only_m_fill():
    assert wave_fill(100, 4096, _acc(0)) == pytest.approx(tile_fill(100, 128))


def test_fewer_tiles_than_sms_pays_only_m_fill():
    assert wave_fill(64, 1024, _acc(132)) == pytest.approx(64 / 128)


def test_catalog_sm_counts_from_hardware_md():
    from parasim.specs.catalog import get_accelerator

    assert get_accelerator("h100-sxm").efficiency.sms == 132
    assert get_accelerator("a100-sxm-80gb").efficiency.sms == 108


def test_gemm_depth_efficiency_follows_k_over_k_plus_k0():
    """Per-tile prologue/epilogue: efficiency ~ K/(K+k0), equal to the catalogued value at the
    measured depth, and an 8-bit K-loop has twice the k0 of a 16-bit one."""
    from parasim.specs.catalog import get_accelerator

    a = get_accelerator("h100-sxm")
    e = a.efficiency
    assert a.gemm_efficiency("bf16", e.gemm_ref_k) == pytest.approx(e.gemm)
    assert a.gemm_efficiency("fp8", e.gemm_ref_k_fp8) == pytest.approx(e.gemm_fp8)
    k, k0 = 4096, e.gemm_k0
    expected = e.gemm * (k / (k + k0)) / (e.gemm_ref_k / (e.gemm_ref_k + k0))
    assert a.gemm_efficiency("bf16", k) == pytest.approx(expected)
    k0_8 = 2 * k0
    expected8 = e.gemm_fp8 * (k / (k + k0_8)) / (e.gemm_ref_k_fp8 / (e.gemm_ref_k_fp8 + k0_8))
    assert a.gemm_efficiency("fp8", k) == pytest.approx(expected8)
    assert a.gemm_efficiency("bf16") == e.gemm  # unknown depth: the catalogued value


def test_mi300x_one_row_past_a_full_wave_of_its_304_cus_costs_a_second_wave():
    """A compute-bound FP8 GEMM whose 128 x 256 tiles exactly fill the MI300X's 304 compute units
    (16 x 19 tiles) against one row more (17 x 19 = 323 tiles, two waves): the GPU time doubles,
    as it does on an NVIDIA part at its SM count."""
    from parasim.cost.roofline import gemm_time_s
    from parasim.specs.catalog import get_accelerator

    a = get_accelerator("mi300x")
    ovh = a.efficiency.kernel_overhead_s
    k, n = 16384, 19 * 256
    full = gemm_time_s(16 * 128, k, n, a, compute_dtype="fp8", weight_bytes=1, act_bytes=1) - ovh
    over = gemm_time_s(16 * 128 + 1, k, n, a, compute_dtype="fp8", weight_bytes=1, act_bytes=1) - ovh
    # compute-bound: the weights (80 MB) stream in far less time than the FLOPs take
    assert k * n / (a.hbm_bw_bytes_per_s * a.efficiency.memory) < 0.2 * full
    assert over == pytest.approx(2 * full, rel=1e-3)
