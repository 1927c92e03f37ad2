"""ZeRO-3 hybrid sharding (`fsdp_shard`): the model state sharded over groups of data-parallel ranks and
replicated across them (PyTorch FSDP HYBRID_SHARD / HSDP; MaxText's ici_fsdp x dcn_data_parallelism).

Expected values are derived by hand from the definition: a shard group's gathers and reduce-scatters are
those of a full-shard run on that many GPUs, and after the backward each replica group all-reduces its
1/fsdp_shard of the fp32 gradients (ring: 2 (n-1)/n x bytes over the NIC at the catalog's network efficiency).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.errors import InputError
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from parasim.training import TrainingPlan, simulate

LLAMA2_7B = get_model("llama-2-7b")
MIXTRAL = get_model("mixtral-8x7b")
H100 = get_accelerator("h100-sxm")
#: Llama 2 7B: 32 x (4 h^2 + 3 h f + 2 h) + 2 V h + h, h 4096, f 11008, V 32000 (untied output layer)
PARAMS_7B = 32 * (4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096) + 2 * 32000 * 4096 + 4096


def _plan(gpus: int, shard: int | None, **kw) -> TrainingPlan:
    return TrainingPlan(dp=gpus, zero=3, micro_batch=4, global_batch=4 * gpus, seq_len=4096, fsdp_shard=shard, **kw)


def _run(gpus: int, shard: int | None, gbps: float = 100.0):
    cluster = cluster_for(H100, gpus, gpus_per_node=8, nic_bw_bytes_per_s_per_gpu=gbps * 1e9 / 8)
    return simulate(LLAMA2_7B, cluster, _plan(gpus, shard).check(LLAMA2_7B, gpus))


def test_parameter_count_is_the_catalogs():
    assert PARAMS_7B == 6_738_415_616


def test_replica_all_reduce_by_hand():
    """2 nodes of 8, shard 8: each GPU all-reduces 1/8 of the fp32 gradients with its peer on the other node."""
    res = _run(16, 8)
    size = PARAMS_7B / 8 * 4.0  # bytes: fp32 gradient shard
    nic = 100e9 / 8 * H100.efficiency.network_busbw  # bytes/s the NIC sustains
    ring = 2 * (2 - 1) / 2 * size / nic
    assert res.details["dp_grad_comm"] == pytest.approx(ring, rel=0.01)
    assert 0 < res.details["dp_grad_comm_exposed"] < res.details["dp_grad_comm"]  # mostly under the backward


def test_full_shard_has_no_replica_all_reduce_and_the_default_is_full():
    full, default = _run(16, 16), _run(16, None)
    assert full.details["dp_grad_comm"] == 0.0
    assert full.step_time_s == default.step_time_s and full.memory == default.memory


def test_shard_group_memory_is_the_memory_of_that_many_gpus():
    """Weights, gradients and optimizer state over 8 ranks whether 8 or 128 GPUs train."""
    state = ("weights_gib", "gradients_gib", "optimizer_gib")
    hybrid, node = _run(128, 8), _run(8, None)
    assert [hybrid.memory[k] for k in state] == pytest.approx([node.memory[k] for k in state])
    full = _run(128, None)
    assert sum(full.memory[k] for k in state) < sum(hybrid.memory[k] for k in state) / 8


def test_in_layer_gathers_stay_in_the_shard_group():
    """The per-layer FSDP exposure of 128 GPUs sharded by 8 is that of one 8-GPU node."""
    keys = ("fsdp_layer_exposed_fwd", "fsdp_layer_exposed_bwd", "fsdp_first_gather_exposed_s")
    hybrid, node = _run(128, 8), _run(8, None)
    assert [hybrid.details[k] for k in keys] == pytest.approx([node.details[k] for k in keys])


def test_slower_network_slows_only_the_replica_reduction():
    fast, slow = _run(32, 8, gbps=400.0), _run(32, 8, gbps=50.0)
    assert slow.details["dp_grad_comm"] == pytest.approx(8 * fast.details["dp_grad_comm"], rel=0.02)
    assert slow.step_time_s > fast.step_time_s


@pytest.mark.parametrize("kw,needle", [({"fsdp_shard": 3}, "must divide dp*cp"),
                                       ({"fsdp_shard": 8, "zero": 1}, "needs zero=3")])
def test_bad_shard(kw, needle):
    plan = TrainingPlan(**{"dp": 16, "zero": 3, "global_batch": 16, **kw})
    with pytest.raises(InputError) as e:
        plan.check(LLAMA2_7B, 16)
    assert e.value.field == "fsdp-shard" and needle in e.value.message


def test_moe_refused():
    with pytest.raises(InputError) as e:
        TrainingPlan(dp=16, zero=3, global_batch=16, fsdp_shard=8).check(MIXTRAL, 16)
    assert e.value.field == "fsdp-shard"


@pytest.mark.parametrize("value", [0, -8, 2.5, True, "8", [8]])
def test_hostile_mapping_values(value):
    with pytest.raises(InputError) as e:
        TrainingPlan.from_mapping({"dp": 16, "zero": 3, "fsdp_shard": value})
    assert e.value.field == "fsdp-shard"


@settings(max_examples=40, deadline=None)
@given(shard=st.integers(min_value=1, max_value=64))
def test_any_shard_divides_or_is_refused(shard):
    plan = TrainingPlan.from_mapping({"dp": 32, "zero": 3, "global_batch": 32, "fsdp_shard": shard})
    if 32 % shard:
        with pytest.raises(InputError):
            plan.check(LLAMA2_7B, 32)
    else:
        assert plan.check(LLAMA2_7B, 32).fsdp_replicas == 32 // shard


def test_mixed_cluster_refused():
    from parasim.specs.mixed import from_text
    from parasim.training.hetero import simulate_mixed

    mixed = from_text("h100-sxm:8,a100-sxm-80gb:8")
    with pytest.raises(InputError) as e:
        simulate_mixed(LLAMA2_7B, mixed, TrainingPlan(dp=16, zero=3, global_batch=16, fsdp_shard=8))
    assert e.value.field == "fsdp-shard"
