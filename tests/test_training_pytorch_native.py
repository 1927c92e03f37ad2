"""PyTorch-native distributed work against hand formulas: FSDP2's copy-out and chunk-cat
(cost/fsdp_copies.py), torchtitan's SAC re-gathers, PyTorch ring attention's fp32 bookkeeping
(cost/ring_merge.py)."""

import pytest
from hypothesis import given, settings, strategies as st

from parasim.cli.train_cmd import build
from parasim.errors import InputError
from parasim.specs.catalog import get_model
from parasim.training import TrainingPlan, simulate

MODEL = get_model("llama-3-8b")


CLUSTERS = {n: build({"model": "llama-3-8b", "gpu": "h100-sxm", "gpus": n})[1] for n in (1, 2, 4, 8)}


def _run(**kw):
    base = dict(tp=1, pp=1, dp=8, micro_batch=1, global_batch=8, seq_len=4096, zero=3)
    plan = TrainingPlan(**{**base, **kw})
    return simulate(MODEL, CLUSTERS[plan.dp], plan)


def test_copies_by_hand():
    """Per layer: forward copy-out reads and writes the 16-bit weights (4 B/param); the backward
    re-gathers (4 B/param) and chunk-cats bf16 gradients into an fp32 reduce buffer (2 + 4 B/param),
    and has no main-gradient accumulation epilogue."""
    flat, fsdp2 = _run(), _run(fsdp_layout="per_param")
    acc = CLUSTERS[8].accelerator
    bw, ko = acc.hbm_bw_bytes_per_s * acc.efficiency.memory, acc.efficiency.kernel_overhead_s
    h, kv, ffn = 4096, 8 * 128, 14336  # Llama 3 8B: q/o 4096 x 4096, k/v 4096 x 1024, gated MLP 3 x 4096 x 14336
    params = h * (2 * h + 2 * kv) + 3 * h * ffn
    fwd = params * 4 / bw + ko
    bwd = fwd + params * (2 + 4) / bw + ko
    assert fsdp2.details["layer_fwd_fsdp_copy"] == pytest.approx(fwd, rel=1e-9)
    assert fsdp2.details["layer_fwd_fsdp_copy_bwd"] == pytest.approx(bwd, rel=1e-9)
    assert fsdp2.details["layer_fwd_wgrad_accum"] == 0.0
    assert fsdp2.details["layer_fwd_s"] - flat.details["layer_fwd_s"] == pytest.approx(fwd, rel=1e-9)
    removed = flat.details["layer_fwd_wgrad_accum"]
    assert (fsdp2.details["layer_bwd_s"] - flat.details["layer_bwd_s"]) == pytest.approx(bwd - removed, rel=1e-9)
    assert "layer_fwd_fsdp_copy" not in flat.details


def test_bf16_reduce_writes_two_bytes():
    a, b = _run(fsdp_layout="per_param"), _run(fsdp_layout="per_param", grad_dtype="bf16")
    acc = CLUSTERS[8].accelerator
    params = MODEL.attn_params + MODEL.dense_mlp_params
    gap = a.details["layer_fwd_fsdp_copy_bwd"] - b.details["layer_fwd_fsdp_copy_bwd"]
    assert gap == pytest.approx(params * 2 / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory), rel=1e-9)


def test_unsharded_pays_nothing():
    a, b = (_run(dp=1, global_batch=1, fsdp_layout=lay) for lay in ("flat", "per_param"))
    assert a.step_time_s == b.step_time_s


@pytest.mark.parametrize("zero", [0, 1, 2])
def test_needs_zero3(zero):
    with pytest.raises(InputError) as e:
        TrainingPlan(tp=1, pp=1, dp=8, zero=zero, fsdp_layout="per_param").check(MODEL, 8)
    assert e.value.field == "fsdp-layout"


def test_unknown_layout():
    with pytest.raises(InputError) as e:
        TrainingPlan(tp=1, pp=1, dp=8, zero=3, fsdp_layout="fsdp3").check(MODEL, 8)
    assert e.value.field == "fsdp-layout" and "flat" in e.value.message


@settings(max_examples=25, deadline=None)
@given(dp=st.sampled_from([2, 4, 8]), mb=st.integers(1, 4), seq=st.sampled_from([512, 2048, 8192]),
       grad=st.sampled_from(["fp32", "bf16"]), rec=st.sampled_from(["none", "full", "selective_op"]))
def test_per_param_never_faster(dp, mb, seq, grad, rec):
    """The copies move more bytes than the accumulation epilogue they replace (4 + 4 + 2 + g
    against 2g per parameter), so FSDP2 is never faster than flat ZeRO-3 on the same plan."""
    kw = dict(dp=dp, micro_batch=mb, global_batch=dp * mb, seq_len=seq, grad_dtype=grad, recompute=rec)
    assert _run(fsdp_layout="per_param", **kw).step_time_s >= _run(**kw).step_time_s


def test_adapter_reads_fsdp2_software():
    from parasim.specs.validation_case import load_cases
    from parasim.validation.training import plan_for_case

    layouts = {c.software: plan_for_case(c)[0].fsdp_layout
               for f in ("validation/torchtitan-training.yaml", "validation/llmfoundry-mpt-training.yaml")
               for c in load_cases(f)}
    assert {v for k, v in layouts.items() if "torchtitan" in k} == {"per_param"}
    assert {v for k, v in layouts.items() if "llm-foundry" in k} == {"flat"}


def _layer(**kw):
    from parasim.training.step import plan_costs

    base = dict(tp=8, pp=1, dp=1, micro_batch=2, global_batch=2, seq_len=4096, sequence_parallel=True,
                tp_comm_overlap=False)
    plan = TrainingPlan(**{**base, **kw})
    return plan_costs(MODEL, CLUSTERS[8], plan, plan.micro_batch * plan.seq_len * (plan.seq_len + 1) / 2).lt


def test_sac_regathers_with_sequence_parallel():
    """torchtitan's op-level SAC saves reduce-scatter outputs, not all-gather ones: the backward
    gathers the attention and MLP inputs again (two all-gathers of the layer input), exposed
    when TP is not overlapped; Megatron's selective and no recomputation do not."""
    from parasim.cost.comm import Group, collective_time_s

    c = CLUSTERS[8]
    size = 2 * 4096 * MODEL.hidden * 2  # tokens x hidden x bf16: the gathered layer input
    ag = collective_time_s("all_gather", size, Group.strided(8, 1, c), c)
    rs = collective_time_s("reduce_scatter", size, Group.strided(8, 1, c), c)
    none, sel = _layer(), _layer(recompute="selective_op")
    assert none.fwd_comm == pytest.approx(2 * (ag + rs), rel=1e-9)
    assert sel.bwd_comm - none.bwd_comm == pytest.approx(2 * ag, rel=1e-9)
    assert _layer(recompute="selective").bwd_comm == pytest.approx(none.bwd_comm, rel=1e-12)
    no_sp = (_layer(sequence_parallel=False, recompute=r) for r in ("none", "selective_op"))
    assert next(no_sp).bwd_comm == pytest.approx(next(no_sp).bwd_comm, rel=1e-12)


def test_sac_regather_hides_under_tp_overlap():
    plain, overlapped = (_layer(recompute="selective_op", tp_comm_overlap=o) for o in (False, True))
    base = _layer(tp_comm_overlap=True)
    assert 0 < overlapped.bwd_comm - base.bwd_comm < plain.bwd_comm - _layer().bwd_comm


def test_pytorch_ring_bookkeeping_by_hand():
    """PyTorch's ring attention at cp 2, per element of the local output (torch.distributed
    context_parallel, _attention.py): forward = K/V send buffer (2 x read+write 16-bit) + the fp32
    merge of the second block (cast 2+4, three elementwise ops 12+8+12) + first-block cast and
    final cast (6+6); backward = zeroed fp32 dQ/dK/dV (12), final casts (6+12), one K/V send buffer
    (8), step 0 dK/dV adds (2 x (4+2+4)), step 1 half-block adds and fp32 re-concatenation
    (2 x (5+8)), dK/dV fp32 send buffers (2 steps x 16) and dQ adds (2 steps x 10)."""
    fwd_b = 2 * 4 + (2 + 4) + 12 + 8 + 12 + 6 + 6
    bwd_b = 12 + 6 + 12 + 8 + 2 * 10 + 2 * (5 + 8) + 2 * 16 + 2 * 10
    c = CLUSTERS[8]
    kw = dict(tp=1, pp=1, dp=4, cp=2, micro_batch=1, global_batch=4, seq_len=8192)
    te = TrainingPlan(**kw)
    pt = TrainingPlan(**kw, cp_ring="pytorch")
    from parasim.training.step import plan_costs

    pairs = 8192 * 8193 / 2
    a, b = (plan_costs(MODEL, c, p, pairs).lt for p in (te, pt))
    acc = c.accelerator
    bw, ko = acc.hbm_bw_bytes_per_s * acc.efficiency.memory, acc.efficiency.kernel_overhead_s
    elements = 8192 / 2 * 32 * 128  # local tokens x query heads x head dim
    assert b.parts["cp_ring_merge"] == pytest.approx(elements * fwd_b / bw + 8 * ko, rel=1e-9)
    assert b.parts["cp_ring_merge_bwd"] == pytest.approx(elements * bwd_b / bw + 20 * ko, rel=1e-9)
    assert b.fwd_compute - a.fwd_compute == pytest.approx(b.parts["cp_ring_merge"], rel=1e-9)
    assert "cp_ring_merge" not in a.parts


@pytest.mark.parametrize("cp", [2, 4, 8])
def test_pytorch_ring_grows_per_step(cp):
    """Each extra ring step adds the same work: forward 8 + 38, backward 8 + 26 + 26 bytes per element."""
    from parasim.cost.ring_merge import backward_bytes_per_element as bwd, forward_bytes_per_element as fwd

    assert fwd(cp * 2) - fwd(cp) == pytest.approx(cp * 46)
    assert bwd(cp * 2) - bwd(cp) == pytest.approx(cp * 60)
    assert fwd(1) == bwd(1) == 0


def test_pytorch_ring_needs_cp():
    with pytest.raises(InputError) as e:
        TrainingPlan(tp=1, pp=1, dp=8, cp_ring="pytorch").check(MODEL, 8)
    assert e.value.field == "cp-ring"


def _cli(*args, cwd=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "parasim", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_flags_and_config_agree(tmp_path):
    import json

    base = ["train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--zero", "3", "--json"]
    flag = json.loads(_cli(*base, "--fsdp-layout", "per_param").stdout)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("fsdp_layout: per_param\n")
    conf = json.loads(_cli(*base, "-c", str(cfg)).stdout)
    assert flag["step_time_s"] == conf["step_time_s"] and flag["plan"]["fsdp_layout"] == "per_param"
    assert flag["details"]["layer_fwd_fsdp_copy"] > 0


@pytest.mark.parametrize("args, field", [(["--fsdp-layout", "per_param"], "fsdp-layout"),
                                         (["--zero", "3", "--fsdp-layout", "fsdp9"], "fsdp-layout"),
                                         (["--cp-ring", "pytorch"], "cp-ring"),
                                         (["--cp", "2", "--cp-ring", "ring"], "cp-ring")])
def test_cli_refuses_what_cannot_apply(args, field):
    r = _cli("train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", *args)
    assert r.returncode == 2 and field in r.stderr and "Traceback" not in r.stderr
