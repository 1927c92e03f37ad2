"""Collectives: ring all-reduce against 2(n-1)/n * S/B + latency, hierarchy, placement."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_accelerator, make_cluster
from parasim.cost.comm import Group, collective_time_s, p2p_all_reduce_s
from parasim.specs.accelerator import Efficiency


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("size", [1e6, 1e9])
def test_ring_all_reduce_alpha_beta(n, size):
    c = make_cluster(8)
    eff = c.accelerator.efficiency
    bw = c.accelerator.link_bw_bytes_per_s * eff.nvlink_busbw
    expected = 2 * (n - 1) / n * size / bw + 2 * (n - 1) * eff.nvlink_latency_s
    got = collective_time_s("all_reduce", size, Group(n, n), c, algorithm="ring")
    assert got == pytest.approx(expected, rel=1e-12)


def test_all_gather_is_half_an_all_reduce_in_bandwidth():
    c = make_cluster(8)
    zero_lat = c.with_(accelerator=make_accelerator(efficiency=Efficiency(nvlink_latency_s=0.0)))
    ar = collective_time_s("all_reduce", 1e9, Group(8, 8), zero_lat, algorithm="ring")
    ag = collective_time_s("all_gather", 1e9, Group(8, 8), zero_lat)
    assert ag == pytest.approx(ar / 2)


def test_crossing_nodes_is_slower_than_staying_inside():
    c = make_cluster(64, nic_bw_bytes_per_s_per_gpu=50e9)
    inside = collective_time_s("all_reduce", 1e9, Group(8, 8), c)
    across = collective_time_s("all_reduce", 1e9, Group(16, 8), c)
    one_per_node = collective_time_s("all_reduce", 1e9, Group(8, 1), c)
    assert inside < across < one_per_node


def test_hierarchical_equals_intra_rs_ag_plus_inter_on_a_shard():
    c = make_cluster(64, nic_bw_bytes_per_s_per_gpu=50e9)
    eff = c.accelerator.efficiency
    nv = c.accelerator.link_bw_bytes_per_s * eff.nvlink_busbw
    nic = 50e9 * eff.network_busbw
    S, g, m = 8e9, 8, 4
    intra = 2 * ((g - 1) / g * S / nv + (g - 1) * eff.nvlink_latency_s)
    inter = 2 * (m - 1) / m * (S / g) / nic + 2 * (m - 1) * eff.network_latency_s
    got = collective_time_s("all_reduce", S, Group(32, 8), c, algorithm="ring")
    assert got == pytest.approx(intra + inter, rel=1e-12)


def test_group_placement_follows_stride():
    c = make_cluster(1024, gpus_per_node=8)
    assert Group.strided(8, 1, c).per_node == 8  # TP inside a node
    assert Group.strided(4, 2, c).per_node == 4
    assert Group.strided(16, 8, c).per_node == 1  # DP across nodes when TP fills the node
    assert Group.strided(1, 1, c).n == 1


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p"]),
       n=st.integers(2, 256), per_node=st.sampled_from([1, 2, 4, 8]), size=st.floats(1e3, 1e10),
       factor=st.floats(1.0, 8.0))
def test_more_bandwidth_never_slower(kind, n, per_node, size, factor):
    per_node = min(per_node, n)
    base = make_cluster(n * 8, nic_bw_bytes_per_s_per_gpu=25e9)
    acc = base.accelerator
    faster = base.with_(accelerator=acc.with_(link_bw_bytes_per_s=acc.link_bw_bytes_per_s * factor),
                        nic_bw_bytes_per_s_per_gpu=25e9 * factor)
    g = Group(n, per_node)
    assert collective_time_s(kind, size, g, faster) <= collective_time_s(kind, size, g, base) * (1 + 1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 64), size=st.floats(1e3, 1e10))
def test_bigger_messages_never_faster(n, size):
    c = make_cluster(512)
    g = Group(n, min(n, 8))
    assert collective_time_s("all_reduce", size, g, c) <= collective_time_s("all_reduce", size * 2, g, c)


def test_single_rank_is_free():
    assert collective_time_s("all_reduce", 1e9, Group(1, 1), make_cluster(1)) == 0


# vLLM PR #24111 ("Enable Torch Symmetric Memory All-Reduce By Default", 2025-09-02), isolated benchmark
# on H100, TP=6, bf16 rows of hidden 8192: (rows, ca_1stage ms, ca_2stage ms), vLLM's custom one- and two-shot
# all-reduce kernels. The model is not fitted to these; it takes the catalog's NVLink busbw and latency.
_VLLM_H100_TP6_CUSTOM_AR = [(32, 0.013, 0.015), (64, 0.021, 0.017), (96, 0.030, 0.020), (128, 0.038, 0.026),
                            (192, 0.053, 0.029), (256, 0.070, 0.037)]


@pytest.mark.parametrize(("rows", "one_ms", "two_ms"), _VLLM_H100_TP6_CUSTOM_AR)
def test_p2p_all_reduce_matches_vllms_published_h100_kernels(rows, one_ms, two_ms):
    from parasim.specs.catalog import get_accelerator

    c = make_cluster(8, accelerator=get_accelerator("h100-sxm"))
    got = p2p_all_reduce_s(rows * 8192 * 2, 6, c)
    assert got == pytest.approx(min(one_ms, two_ms) * 1e-3, rel=0.25)


@given(a=st.floats(1.0, 1e9), b=st.floats(1.0, 1e9), n=st.integers(2, 8))
def test_p2p_all_reduce_is_monotone_in_size(a, b, n):
    c = make_cluster(8)
    lo, hi = sorted((a, b))
    assert p2p_all_reduce_s(lo, n, c) <= p2p_all_reduce_s(hi, n, c)


def test_p2p_all_reduce_hand_formula():
    c = make_cluster(8)
    eff = c.accelerator.efficiency
    bw, a = c.accelerator.link_bw_bytes_per_s * eff.nvlink_busbw, eff.nvlink_latency_s
    size = 4e6
    assert p2p_all_reduce_s(size, 4, c) == pytest.approx(min(a + 3 * size / bw, 2 * a + 1.5 * size / bw))
    assert p2p_all_reduce_s(size, 1, c) == 0.0


def test_nccl_ll_ring_hand_formula():
    """NCCL's LL ring (NVIDIA/nccl src/graph/tuning.cc): 6.6 us per call + 0.6 us per step over
    NVLink, 2(n-1) steps for an all-reduce (n-1 for a gather), and half the bus bandwidth."""
    c = make_cluster(8)
    bw = c.accelerator.link_bw_bytes_per_s * c.accelerator.efficiency.nvlink_busbw
    size = 16 * 1024
    expected = 6.6e-6 + 14 * 0.6e-6 + 2 * 7 / 8 * size / (bw / 2)
    assert collective_time_s("all_reduce", size, Group(8, 8), c) == pytest.approx(expected)
    expected_ag = 6.6e-6 + 7 * 0.6e-6 + 7 / 8 * size / (bw / 2)
    assert collective_time_s("all_gather", size, Group(8, 8), c) == pytest.approx(expected_ag)


@pytest.mark.parametrize("kind", ["all_reduce", "all_gather", "reduce_scatter"])
@pytest.mark.parametrize("size", [16 * 2 ** 20, 64 * 2 ** 20, 1e9])
def test_nccl_ll_never_carries_training_sized_messages(kind, size):
    """At 16 MiB and up the LL protocol's half bandwidth loses to the ring and tree: training's TP
    and DP collectives keep the alpha-beta formulas."""
    c = make_cluster(8)
    eff = c.accelerator.efficiency
    bw = c.accelerator.link_bw_bytes_per_s * eff.nvlink_busbw
    ring = collective_time_s(kind, size, Group(8, 8), c, algorithm="ring")
    expected = ring if kind != "all_reduce" else min(ring, 2 * size / bw + 2 * 3 * eff.nvlink_latency_s)
    assert collective_time_s(kind, size, Group(8, 8), c) == pytest.approx(expected)


# kvcache-ai/Mooncake PR #3484 ("[PG][1/N] Initialize the new collective framework"): nccl-tests 2.19.7
# all_reduce_perf, NCCL 2.30.4, 8 NVIDIA H20 of one node (NVLink 450 GB/s one way, as the H100), no CUDA
# graphs, out-of-place time in us. Below 256 KiB it levels at 18.7-19.3 us, the call's launch included.
_NCCL_TESTS_H20_8GPU_US = {256 * 1024: 19.54, 512 * 1024: 20.39, 1024 * 1024: 27.76, 2048 * 1024: 40.66}


@pytest.mark.parametrize("size", sorted(_NCCL_TESTS_H20_8GPU_US))
def test_nccl_small_all_reduce_matches_nccl_tests(size):
    from parasim.specs.catalog import default_cluster

    got = collective_time_s("all_reduce", size, Group(8, 8), default_cluster("h20", 8))
    assert got * 1e6 == pytest.approx(_NCCL_TESTS_H20_8GPU_US[size], rel=0.10)


# Published nccl-tests all_reduce_perf runs of PCIe-only servers (no NVLink), large messages, bus bandwidth
# (2(n-1)/n x size / time) as a fraction of the one-way x16 link: NVIDIA/nccl #1603 (RTX 4090, Gen4 32 GB/s:
# 18 GB/s through host memory, 22 with P2P), tinygrad/open-gpu-kernel-modules #36 (4x RTX 4090, Gen4, P2P:
# 25.72-25.95 GB/s), NVIDIA/nccl #1639 (RTX 5090, Gen5 64 GB/s: 28 GB/s on 8 GPUs, 35 on 4).
_PCIE_BUSBW_FRACTIONS = (18 / 32, 22 / 32, 25.72 / 32, 25.95 / 32, 28 / 64, 35 / 64)


def _pcie_parts():
    from parasim.specs.catalog import accelerators

    return sorted(a.id for a in accelerators().values() if a.scale_up == "pcie")


def _busbw(acc_id: str, n: int, size: float = 2.0**30) -> float:
    from parasim.specs.catalog import default_cluster

    c = default_cluster(acc_id, 8)
    return 2 * (n - 1) / n * size / collective_time_s("all_reduce", size, Group(n, n), c)


@pytest.mark.parametrize("acc_id", ["l40s", "a100-pcie-80gb"])
def test_pcie_gen4_all_reduce_busbw_matches_published_eight_gpu_servers(acc_id):
    """8 GPUs on PCIe Gen4 without NVLink: NVIDIA/nccl #1603 measured 18 GB/s (host memory) to 22 GB/s (P2P)."""
    assert 0.95 * 18e9 <= _busbw(acc_id, 8) <= 22e9


@pytest.mark.parametrize("n", [2, 4, 8])
def test_pcie_all_reduce_busbw_inside_published_range(n):
    """Every PCIe-only part's large all-reduce runs at a share of its link inside the published servers' spread."""
    from parasim.specs.catalog import get_accelerator

    parts = _pcie_parts()
    assert {"l4", "l40s", "a100-pcie-80gb"} <= set(parts)
    for acc_id in parts:
        frac = _busbw(acc_id, n) / get_accelerator(acc_id).link_bw_bytes_per_s
        assert min(_PCIE_BUSBW_FRACTIONS) * 0.98 <= frac <= max(_PCIE_BUSBW_FRACTIONS), acc_id
