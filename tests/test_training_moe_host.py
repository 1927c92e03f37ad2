"""Host-bound MoE layers (cost/moe_host.py): the GPU waiting for the host to issue an MoE layer's
kernels. Checked by conservation (the breakdown still sums to the step), by the directions the
physics fixes (CUDA graphs never slow a step; more GPU work per layer hides more host work; a
dense model has no such term) and by invariants of the exposure rule on hostile inputs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.moe_host import HostWork, backward_edge_s, exposed_s, moe_layer_host, scope_set
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


# --- stream order: the expert GEMMs' issue is hidden only by GPU work queued before them ----------

def test_a_forward_whose_expert_stretch_is_host_bound_waits_even_when_the_layer_is_not():
    """By hand: 1.0 ms of host work, 0.8 of it up to the last expert GEMM; 1.5 ms of GPU work,
    0.2 of it (dispatch + experts) in that stretch. The GPU idles 0.8 - 0.2 = 0.6 ms waiting for
    the expert GEMMs to be issued; the remaining 0.2 ms of host work hides under its 1.3 ms.
    Taken as one stretch (host below GPU) only the sync and one launch would be charged."""
    from parasim.cost.moe_host import EAGER_KERNEL_DISPATCH_S, HOST_SYNC_S

    host = HostWork(1.0e-3, 0.0, True, 0.8e-3)
    split, _ = exposed_s(host, 1.5e-3, 0.0, 0.2e-3)
    whole, _ = exposed_s(host, 1.5e-3, 0.0)
    assert split == pytest.approx(HOST_SYNC_S + 0.6e-3, rel=1e-12)
    assert whole == pytest.approx(HOST_SYNC_S + EAGER_KERNEL_DISPATCH_S, rel=1e-12)


def test_gpu_work_ahead_of_the_experts_hides_host_work_after_them():
    """1.0 ms host (0.2 to the experts), 1.5 ms GPU (1.2 of it dispatch + experts): 1.0 ms of
    GPU work is still queued when the last expert GEMM is issued, more than the 0.8 ms the host
    issues after it against 0.3 ms of GPU work: nothing beyond the sync and one launch."""
    from parasim.cost.moe_host import EAGER_KERNEL_DISPATCH_S, HOST_SYNC_S

    ef, _ = exposed_s(HostWork(1.0e-3, 0.0, True, 0.2e-3), 1.5e-3, 0.0, 1.2e-3)
    assert ef == pytest.approx(HOST_SYNC_S + EAGER_KERNEL_DISPATCH_S, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(fwd=st.floats(0, 1), share=st.floats(0, 1), gf=st.floats(0, 1), gshare=st.floats(0, 1))
def test_splitting_the_forward_never_hides_more_than_one_stretch_and_never_exceeds_the_host(fwd, share, gf, gshare):
    from parasim.cost.moe_host import EAGER_KERNEL_DISPATCH_S, HOST_SYNC_S

    host = HostWork(fwd, 0.0, True, fwd * share)
    split, _ = exposed_s(host, gf, 0.0, gf * gshare)
    whole, _ = exposed_s(host, gf, 0.0)
    assert split >= whole - 1e-15
    assert split <= HOST_SYNC_S + max(EAGER_KERNEL_DISPATCH_S, fwd) + 1e-15


@settings(max_examples=200, deadline=None)
@given(bwd=st.floats(0, 1), share=st.floats(0, 1), gb=st.floats(0, 1), gshare=st.floats(0, 1))
def test_the_backward_edge_is_bounded_by_the_host_work_left_visible(bwd, share, gb, gshare):
    """From an empty queue the first layer's backward waits at most all its host work; the edge
    is what that adds to the steady state's max(0, host - GPU)."""
    host = HostWork(0.0, bwd, True, 0.0, bwd * share)
    edge = backward_edge_s(host, gb, gb * gshare)
    steady = max(0.0, bwd - gb)
    assert 0.0 <= edge <= bwd - steady + 1e-15
    assert backward_edge_s(HostWork(0.0, bwd, False, 0.0, bwd * share), gb, gb * gshare) == 0.0


def _pp_plan(**kw) -> TrainingPlan:
    """Two pipeline stages of 24 layers, 16 experts per GPU: the expert stretch is host-bound."""
    base = dict(dp=8, pp=2, ep=8, micro_batch=1, global_batch=64, seq_len=4096, precision="fp8")
    base.update(kw)
    return TrainingPlan(**base)


def test_blocking_pipeline_exchanges_charge_one_backward_edge_per_chunk_and_micro_batch():
    """Megatron-Core's batch_isend_irecv path synchronizes the device after each exchange: each
    micro-batch's backward on a stage starts from an empty queue (the edge), once per chunk."""
    b200 = ClusterSpec(accelerator=get_accelerator("b200"), gpus=16)
    blocking = simulate(QWEN, b200, _pp_plan(overlap_p2p_comm=False))
    overlapped = simulate(QWEN, b200, _pp_plan(overlap_p2p_comm=True))
    lt = blocking.details
    per_layer = lt["layer_moe_host_fwd_s"] + lt["layer_moe_host_bwd_s"]
    micro_batches = 64 // 8
    edge = blocking.breakdown["moe_host"] / micro_batches - QWEN.layers // 2 * per_layer
    assert edge > 0
    assert overlapped.breakdown["moe_host"] == pytest.approx(micro_batches * QWEN.layers // 2 * per_layer, rel=1e-12)
    assert _sum(blocking.breakdown) == pytest.approx(blocking.step_time_s, rel=1e-12)


def test_every_chunk_but_the_last_stage_starts_its_backward_after_a_synced_exchange():
    """Megatron-Core's send_forward_recv_backward skips the last stage: its backward follows its
    own forward and loss. Interleaved by hand: with 4 ranks and 2 chunks the stages of rank 0 are
    0 and 4, of rank 3 are 3 and 7 (the last)."""
    from parasim.training.step import _synced_chunks

    two = _pp_plan(overlap_p2p_comm=False)
    assert [_synced_chunks(two, [24], r, "loop") for r in range(2)] == [1, 0]
    four = TrainingPlan(dp=2, pp=4, virtual_stages=2, micro_batch=1, global_batch=64, seq_len=4096,
                        overlap_p2p_comm=False)
    assert [_synced_chunks(four, [6, 6], r, "loop") for r in range(4)] == [2, 2, 2, 1]
    assert _synced_chunks(four, [0, 6], 0, "loop") == 1  # an empty chunk has no backward to start
    assert _synced_chunks(_pp_plan(overlap_p2p_comm=True), [24], 0, "loop") == 0


# --- the host CPU (catalog `host_cpu`, cost.moe_host.HOST_ISSUE_FACTOR) ---------------------------

#: NVIDIA/TransformerEngine issue #2053 (2025-08): host runtime of one eager torch.nn.Linear forward
#: (BF16, hidden 2,048, 8,192 tokens) on GB200's Grace and on an H100 DGX's Xeon Platinum 8480C, us
_GRACE_LINEAR_US, _XEON_LINEAR_US = 37.08, 13.48


def test_the_superchips_run_their_host_on_grace_and_hgx_boards_on_x86():
    assert {get_accelerator(g).host_cpu for g in ("gb200", "gh200")} == {"grace"}
    assert {get_accelerator(g).host_cpu for g in ("b200", "h100-sxm", "h200-sxm", "a100-sxm-80gb")} == {"x86"}


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 256), st.booleans(), st.sampled_from(["", "attn", "moe_router,moe_preprocess"]))
def test_a_grace_host_issues_every_kernel_at_the_measured_ratio(experts, fp8, scope):
    """Every host second of the layer scales by the published per-call ratio (the same Python,
    dispatcher and launch work on a slower core); whether the forward syncs does not change."""
    ratio = _GRACE_LINEAR_US / _XEON_LINEAR_US
    x86 = moe_layer_host(experts, fp8=fp8, scopes=scope_set(scope))
    grace = moe_layer_host(experts, fp8=fp8, scopes=scope_set(scope), host_cpu="grace")
    for a, b in zip(x86[:2] + x86[3:], grace[:2] + grace[3:]):
        assert b == pytest.approx(a * ratio, rel=1e-12)
    assert grace.sync == x86.sync
    assert moe_layer_host(experts, fp8=fp8, scopes=scope_set("full_iteration"), host_cpu="grace").fwd_s == 0.0


def test_a_slower_host_only_slows_a_step_whose_host_work_was_close_to_the_gpu_work():
    """Qwen3-30B-A3B on 8 GB200s at EP 8 and four 4,096-token sequences per micro-batch (the
    published Megatron-Bridge layout, in one NVL72 NVLink domain): 16 local experts; the same part with an x86 host is never
    slower, and at EP 64 over 64 GPUs (2 local experts) the host stays hidden either way."""
    gb200 = get_accelerator("gb200")
    x86 = gb200.with_(host_cpu="x86")
    plan = TrainingPlan(dp=8, ep=8, micro_batch=4, global_batch=512, seq_len=4096, precision="fp8",
                        cuda_graph_scope="moe_router,moe_preprocess")
    on_grace = simulate(QWEN, ClusterSpec(accelerator=gb200, gpus=8, gpus_per_node=4, scale_up_domain=72), plan)
    on_x86 = simulate(QWEN, ClusterSpec(accelerator=x86, gpus=8, gpus_per_node=4, scale_up_domain=72), plan)
    assert on_grace.step_time_s > on_x86.step_time_s
    assert on_grace.breakdown["compute"] == pytest.approx(on_x86.breakdown["compute"], rel=1e-12)
    wide = TrainingPlan(dp=64, ep=64, micro_batch=4, global_batch=512, seq_len=4096, precision="fp8")
    a = simulate(QWEN, ClusterSpec(accelerator=gb200, gpus=64, gpus_per_node=4, scale_up_domain=72), wide)
    b = simulate(QWEN, ClusterSpec(accelerator=x86, gpus=64, gpus_per_node=4, scale_up_domain=72), wide)
    assert a.breakdown["moe_host"] == pytest.approx(b.breakdown["moe_host"], rel=1e-12)


def test_an_unknown_host_cpu_in_an_accelerator_entry_names_the_field():
    from parasim.specs.catalog import accelerator_from_mapping
    from parasim.specs.shipped import load_shipped

    entry = dict(next(a for a in load_shipped("accelerators.yaml")["accelerators"] if a["id"] == "gb200"))
    entry["host_cpu"] = "power9"
    with pytest.raises(InputError) as e:
        accelerator_from_mapping(entry)
    assert e.value.field.endswith("host_cpu")
