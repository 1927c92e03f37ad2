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
