"""Host-bound MoE layers (cost/moe_host.py): the GPU waiting for the host to issue an MoE layer's
kernels. Checked by conservation (the breakdown still sums to the step), by the directions the
physics fixes (CUDA graphs never slow a step; more GPU work per layer hides more host work; a
dense model has no such term) and by invariants of the exposure rule on hostile inputs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.moe_host import HostWork, exposed_s, moe_layer_host, scope_set
from parasim.errors import InputError
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan, simulate

QWEN = get_model("qwen3-30b-a3b")
B200 = ClusterSpec(accelerator=get_accelerator("b200"), gpus=8)


def _plan(**kw) -> TrainingPlan:
    """No expert parallelism: all 128 experts on every GPU, so the grouped MLP's host work
    (per local expert) outgrows the GPU's work at one 4,096-token sequence per micro-batch."""
    base = dict(dp=8, ep=1, micro_batch=1, global_batch=64, seq_len=4096, precision="fp8")
    base.update(kw)
    return TrainingPlan(**base)


def _sum(bd: dict[str, float]) -> float:
    return sum(bd.values())


def test_the_breakdown_still_sums_to_the_step_with_the_host_term():
    res = simulate(QWEN, B200, _plan())
    assert res.breakdown["moe_host"] > 0.05 * res.step_time_s  # host-bound
    assert _sum(res.breakdown) == pytest.approx(res.step_time_s, rel=1e-12)


def test_the_host_term_is_the_per_layer_exposure_times_layers_and_micro_batches():
    res = simulate(QWEN, B200, _plan())
    per_layer = res.details["layer_moe_host_fwd_s"] + res.details["layer_moe_host_bwd_s"]
    micro_batches = 64 // 8
    assert res.breakdown["moe_host"] == pytest.approx(micro_batches * QWEN.layers * per_layer, rel=1e-12)


def test_cuda_graphs_never_slow_a_step_and_a_full_iteration_graph_removes_the_term():
    steps = [simulate(QWEN, B200, _plan(cuda_graph_scope=s, moe_capacity_factor=1.0)) for s in
             (None, "moe_router,moe_preprocess", "attn,moe_router,moe_preprocess", "full_iteration")]
    times = [r.step_time_s for r in steps]
    assert times == sorted(times, reverse=True)
    assert steps[-1].breakdown["moe_host"] == 0.0
    # what the graphs remove is host time only: the GPU's own work is the same
    assert steps[0].breakdown["compute"] == pytest.approx(steps[-1].breakdown["compute"], rel=1e-12)


def test_more_tokens_per_micro_batch_hide_more_of_the_host_work():
    """The host issues the same kernels whatever the micro-batch; the GPU's work grows with it
    (Megatron-Bridge's GB200 Qwen3 30B-A3B runs MBS 4, its B200 run MBS 1)."""
    share = []
    for mbs in (1, 2, 4, 8, 16):
        res = simulate(QWEN, B200, _plan(micro_batch=mbs, global_batch=64 * mbs))
        share.append(res.breakdown["moe_host"] / res.step_time_s)
    assert share == sorted(share, reverse=True)
    assert share[-1] < 0.5 * share[0]


def test_fewer_experts_per_gpu_issue_fewer_kernels():
    scopes = frozenset()
    few = moe_layer_host(2, fp8=True, scopes=scopes)
    many = moe_layer_host(16, fp8=True, scopes=scopes)
    assert few.fwd_s < many.fwd_s and few.bwd_s < many.bwd_s


def test_a_dense_model_has_no_host_term_and_refuses_a_graph_scope():
    llama = get_model("llama-3-8b")
    res = simulate(llama, ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=8),
                   TrainingPlan(dp=8, micro_batch=1, global_batch=8, seq_len=2048))
    assert "moe_host" not in res.breakdown
    with pytest.raises(InputError) as e:
        TrainingPlan(dp=8, global_batch=8, cuda_graph_scope="attn").check(llama, 8)
    assert e.value.field == "cuda-graph-scope"


def test_a_full_iteration_graph_needs_static_moe_shapes():
    """Dropless routing has data-dependent shapes: Megatron-Core cannot capture the MoE layers."""
    with pytest.raises(InputError) as e:
        _plan(cuda_graph_scope="full_iteration").check(QWEN, 8)
    assert e.value.field == "cuda-graph-scope" and "capacity" in e.value.message
    _plan(cuda_graph_scope="full_iteration", moe_capacity_factor=1.0).check(QWEN, 8)


@pytest.mark.parametrize("scope", ["bogus", "attn,bogus", ",", "full_iteration,attn"])
def test_bad_scopes_name_the_field(scope):
    with pytest.raises(InputError) as e:
        _plan(cuda_graph_scope=scope).check(QWEN, 8)
    assert e.value.field == "cuda-graph-scope"


def test_the_cli_takes_the_scope_and_refuses_a_bad_one(cli):
    base = ["train", "--model", "qwen3-30b-a3b", "--gpu", "b200", "--gpus", "8", "--ep", "1", "--micro-batch", "1",
            "--global-batch", "64", "--seq-len", "4096", "--precision", "fp8", "--zero", "3"]
    eager = cli(*base, "--json")
    graphed = cli(*base, "--cuda-graph-scope", "attn,moe_router,moe_preprocess", "--json")
    assert eager.returncode == 0 and graphed.returncode == 0
    assert json.loads(graphed.stdout)["step_time_s"] < json.loads(eager.stdout)["step_time_s"]
    bad = cli(*base, "--cuda-graph-scope", "everything")
    assert bad.returncode == 2 and "cuda-graph-scope" in bad.stderr and "Traceback" not in bad.stderr


def test_scope_set_reads_a_comma_list():
    assert scope_set(None) == frozenset()
    assert scope_set(" attn , moe_router ") == frozenset(("attn", "moe_router"))


@settings(max_examples=200, deadline=None)
@given(fwd=st.floats(0, 1), bwd=st.floats(0, 1), gf=st.floats(0, 1), gb=st.floats(0, 1), more=st.floats(0, 1),
       sync=st.booleans())
def test_exposure_is_non_negative_bounded_and_shrinks_as_the_gpu_work_grows(fwd, bwd, gf, gb, more, sync):
    host = HostWork(fwd, bwd, sync)
    ef, eb = exposed_s(host, gf, gb)
    ef2, eb2 = exposed_s(host, gf + more, gb + more)
    assert ef >= 0 and eb >= 0
    assert eb <= bwd and ef2 <= ef and eb2 <= eb
    if not sync:
        assert ef <= fwd
    else:  # the sync always costs something: the queue is empty after it
        assert ef > 0
