"""How a stack stores parameter state (cost/param_state.py): bytes per parameter by hand, the
transient 16-bit copies, published fits/OOM verdicts, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.memory import stage_state_bytes
from parasim.errors import InputError
from parasim.specs.catalog import get_model
from parasim.specs.validation_case import load_cases
from parasim.training import TrainingPlan
from parasim.validation.training import plan_for_case, predict_case

MODEL = get_model("llama-3-8b")


def _state(**kw):
    base = dict(tp=1, pp=1, ep=1, dp_cp=1, zero=0, stage=0)
    return stage_state_bytes(MODEL, **{**base, **kw})


def test_unsharded_state_by_hand():
    """One GPU, no sharding. PyTorch: fp32 parameter (4) + fp32 gradient (4) + AdamW m, v (8) and,
    under autocast, a 16-bit cast of every weight (2); pure bf16: 2 + 2 + 2 x 2; Megatron: 2 + 4 + 12."""
    n = MODEL.params_total
    assert _state(param_state="fp32_params").total == pytest.approx((4 + 4 + 8 + 2) * n)
    assert _state(param_state="bf16_params").total == pytest.approx((2 + 2 + 4) * n)
    assert _state().total == pytest.approx((2 + 4 + 12) * n)


@given(dp=st.integers(2, 512), state=st.sampled_from(["fp32_params", "bf16_params"]))
@settings(max_examples=30, deadline=None)
def test_fsdp_shards_the_state_and_not_the_gathered_copies(dp, state):
    """Doubling the FSDP group halves the sharded state (16 or 8 B/param over the group) and leaves
    the gathered 16-bit copies (whole units, the same on every rank) where they were."""
    per_param = {"fp32_params": 16, "bf16_params": 8}[state]
    a, b = (_state(dp_cp=d, zero=3, param_state=state).total for d in (dp, 2 * dp))
    assert a - b == pytest.approx(per_param * MODEL.params_total * (1 / dp - 1 / (2 * dp)), rel=1e-9)


@given(dp=st.integers(1, 256), zero=st.sampled_from([0, 1, 2, 3]), tp=st.sampled_from([1, 2, 8]))
@settings(max_examples=30, deadline=None)
def test_bf16_state_never_exceeds_fp32_state(dp, zero, tp):
    """Every byte of pure bf16 is no larger than its PyTorch mixed-precision counterpart."""
    kw = dict(dp_cp=dp, zero=zero, tp=tp)
    assert _state(param_state="bf16_params", **kw).total <= _state(param_state="fp32_params", **kw).total


def test_the_default_is_megatron_and_unchanged():
    assert TrainingPlan().param_state == "megatron"
    assert _state(dp_cp=8, zero=3) == _state(dp_cp=8, zero=3, param_state="megatron")


def test_unknown_state_is_refused_by_name():
    with pytest.raises(InputError) as e:
        TrainingPlan(param_state="fp64").check(MODEL, 1)
    assert e.value.field == "param-state" and "fp32_params" in e.value.message


def test_kempnerforge_one_gpu_run_fits_as_published():
    """The report ran Llama 3 8B on one H200 (bf16 parameters, no fp32 copy): 18 B/param called it
    148.6 GiB, a false OOM; 8 B/param fits."""
    case = next(c for c in load_cases("validation/kempnerforge-h200-training.yaml") if "1gpu" in c.id)
    assert plan_for_case(case)[0].param_state == "bf16_params"
    assert predict_case(case).status == "ok"


def test_published_oom_stays_oom_and_published_fits_still_fit():
    """torchtitan's 64-A100 table: every run that fit still fits, and the footnoted OOM (70B, local
    batch 2, selective AC) is still called one, now under PyTorch's own state layout."""
    cases = [c for c in load_cases("validation/memory-published.yaml") if c.kind == "training"]
    for case in cases:
        assert plan_for_case(case)[0].param_state == "fp32_params"
        status = predict_case(case).status
        assert status == ("infeasible" if case.measured["fits"] is False else "ok"), case.id


def test_megatron_stacks_keep_megatron_state():
    case = next(c for c in load_cases("validation/torchtitan-training.yaml"))
    nemo = replace(case, software="NeMo 24.07 (Megatron-Core)")
    assert plan_for_case(nemo)[0].param_state == "megatron"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "parasim", *args], capture_output=True, text=True)


def test_cli_flag_and_config_agree(tmp_path):
    """Each state given as a flag and as a `-c` key gives the same memory; bf16 shrinks the optimizer."""
    base = ["train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--zero", "3", "--json"]
    optimizer = {}
    for state in ("megatron", "bf16_params"):
        (tmp_path / f"{state}.yaml").write_text(f"param_state: {state}\n")
        by_flag, by_file = (json.loads(_cli(*base, *extra).stdout)
                            for extra in (["--param-state", state], ["-c", str(tmp_path / f"{state}.yaml")]))
        assert by_flag["memory"] == by_file["memory"] and by_file["plan"]["param_state"] == state
        optimizer[state] = by_flag["memory"]["optimizer_gib"]
    assert optimizer["bf16_params"] < optimizer["megatron"]


def test_cli_refuses_an_unknown_state():
    r = _cli("train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--param-state", "fp8")
    assert r.returncode == 2 and "param-state" in r.stderr and "Traceback" not in r.stderr


def test_checkpoint_holds_weights_and_optimizer_as_the_stack_stores_them():
    """Gradients are not saved: Megatron 2 + 12, PyTorch fp32 parameters 4 + 8, bf16 2 + 4 B/param."""
    from parasim.training.goodput import checkpoint_bytes

    n = MODEL.params_total
    for state, per_param in (("megatron", 14), ("fp32_params", 12), ("bf16_params", 6)):
        assert checkpoint_bytes(MODEL, state) == pytest.approx(per_param * n)


def test_a_bf16_adam_step_moves_half_the_bytes():
    """torch.optim.AdamW foreach on bf16 tensors: the same 24 accesses at 2 bytes instead of 4, so the
    step's optimizer time halves (it is memory-bound) and nothing else in the step moves."""
    from parasim.specs.catalog import get_accelerator
    from parasim.specs.cluster import ClusterSpec
    from parasim.training import simulate

    cluster = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=8)
    plan = TrainingPlan(dp=8, micro_batch=1, global_batch=8, seq_len=4096, zero=3, kernels="eager")
    fp32, bf16 = (simulate(MODEL, cluster, plan.with_(param_state=s)) for s in ("fp32_params", "bf16_params"))
    assert bf16.breakdown["optimizer"] == pytest.approx(fp32.breakdown["optimizer"] / 2, rel=0.02)
    assert bf16.breakdown["compute"] == fp32.breakdown["compute"]


def test_a_pipelined_fsdp_stage_stays_gathered_with_fp32_gradient_accumulation():
    """torchtitan with PP: no reshard after the forward (the stage's 16-bit copy, 2 B/param) and the
    unsharded gradients accumulated in the reduce dtype until the last micro-batch (4 B/param)."""
    from parasim.cost.memory import weight_params_per_gpu

    kw = dict(tp=1, pp=4, ep=1, dp_cp=8, zero=3, stage=1)
    mega, fsdp = (stage_state_bytes(MODEL, **kw, param_state=s) for s in ("megatron", "fp32_params"))
    params = weight_params_per_gpu(MODEL, tp=1, pp=4, stage=1)
    assert fsdp.weights == pytest.approx(4 * params / 8 + 2 * params)
    assert fsdp.gradients == pytest.approx(4 * params / 8 + 4 * params)
    assert fsdp.optimizer == pytest.approx(8 * params / 8) and mega.optimizer == pytest.approx(12 * params / 8)


def test_bf16_optimizer_state_by_hand():
    """Apex DistributedFusedAdam with dtype=bf16 (NeMo `optim.dtype: bf16`): Megatron's 16-bit weights
    (2) and main gradients (4, or 2 with bf16 gradient sync), and an optimizer state of a bf16 parameter
    shard plus bf16 m and v (3 x 2 = 6) in place of Megatron's fp32 master and moments (12)."""
    n = MODEL.params_total
    assert _state(param_state="bf16_optimizer").total == pytest.approx((2 + 4 + 6) * n)
    assert _state(param_state="bf16_optimizer", grad_bytes=2.0).total == pytest.approx((2 + 2 + 6) * n)


@given(dp=st.integers(1, 512), tp=st.sampled_from([1, 2, 8]))
@settings(max_examples=30, deadline=None)
def test_bf16_optimizer_shards_only_its_optimizer_state_with_the_distributed_optimizer(dp, tp):
    """ZeRO-1: weights and gradients stay whole on every replica, the 6 B of optimizer state divide by
    the replicas; so it saves exactly (12 - 6) / dp B per parameter against Megatron's layout."""
    mega, bf16 = (_state(dp_cp=dp, zero=1, tp=tp, param_state=s, grad_bytes=2.0) for s in ("megatron", "bf16_optimizer"))
    assert bf16.weights == mega.weights and bf16.gradients == mega.gradients
    assert mega.optimizer - bf16.optimizer == pytest.approx(mega.optimizer / 2, rel=1e-12)


def test_bf16_optimizer_keeps_the_fp8_weights_beside_its_16_bit_parameters():
    """Its 16-bit parameters are the model's own, as Megatron's: Transformer Engine's FP8 weight is
    charged on top in both, and neither holds a transient gathered copy."""
    mega, bf16 = (_state(dp_cp=4, zero=1, param_state=s, linear_weight_bytes=3.0) for s in ("megatron", "bf16_optimizer"))
    assert bf16.weights == mega.weights > _state(dp_cp=4, zero=1).weights
    assert bf16.gradients == mega.gradients


def test_a_bf16_optimizer_step_moves_half_the_bytes_of_megatrons():
    """Every tensor of the fused Adam step (parameter shard, m, v, gradient) is bf16: half the bytes of
    the fp32 step, and the step is memory-bound."""
    from parasim.cost.nongemm import adam_bytes_per_param

    mega, bf16 = adam_bytes_per_param("fused", "megatron"), adam_bytes_per_param("fused", "bf16_optimizer")
    assert bf16[0] == pytest.approx(mega[0] / 2) and bf16[1] == mega[1]


def test_cli_accepts_bf16_optimizer():
    r = _cli("train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--param-state", "bf16_optimizer",
             "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plan"]["param_state"] == "bf16_optimizer"
