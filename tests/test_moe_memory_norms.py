"""MoE training memory against Megatron-Core's saved tensors, counted by hand.

The per-token figures below are element counts of the tensors Megatron-Core (core_v0.15.0; commit
0d8e0714, Megatron-Bridge v0.2.0's pin) keeps for the backward of one gpt-oss-120b layer under the
Transformer Engine layer spec, typed from the model card (hidden 2880, 64 query heads and 8 KV heads
of 64, top-4 of 128 experts of width 2880), not from parasim's constants:

* attention: the fused norm+QKV linear keeps its input and its normed output; flash attention keeps
  Q, K, V and its output (the output projection's input);
* MoE layer: the pre-MLP norm keeps its input, the router reads its normed output; the grouped GEMM
  keeps the permuted tokens (k copies), the activation keeps the first GEMM's output (k x 2f,
  gated) and the second GEMM keeps the activation's output (k x f); the router probabilities are
  fp32 over the experts.
`layernorm` recomputation drops only the pre-MLP norm's output (the input norm is fused into QKV),
`moe_act` the activation's output.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.memory import activation_bytes_per_layer
from parasim.cost.moe_memory import moe_buffer_bytes_per_token, recompute_freed_units, recomputed_norms
from parasim.search.plan_train import cluster_for, peak_memory_bytes
from parasim.specs.catalog import get_model
from parasim.errors import InputError
from parasim.training import TrainingPlan, simulate

OSS = get_model("gpt-oss-120b")
QWEN30 = get_model("qwen3-30b-a3b")
DSV3 = get_model("deepseek-v3")
LLAMA = get_model("llama-3.1-8b")

# gpt-oss-120b, elements per token of one MoE layer (model card figures)
H, Q, KV, K, F, E = 2880, 64 * 64, 2 * 8 * 64, 4, 2880, 128
ATTN = H + H + Q + KV + Q  # fused norm input and output, Q, K and V, attention output
MOE = H + H + K * H + K * 2 * F + K * F  # pre-MLP norm in/out, permuted tokens, fc1 out, act out
PROBS = E * 4  # fp32 router probabilities, bytes


def _layer_bytes(modules: frozenset[str] | None, recompute: str = "none") -> float:
    buf = moe_buffer_bytes_per_token(OSS, tp=1, etp=1, sp=False)
    return activation_bytes_per_layer(OSS, seq=4096, micro_batch=1, recompute=recompute, modules=modules,
                                      moe_buffers=buf)


def test_gpt_oss_layer_keeps_what_megatron_core_saves():
    assert _layer_bytes(None) == pytest.approx(4096 * (2 * (ATTN + MOE) + PROBS))


def test_layernorm_recompute_drops_only_the_unfused_pre_mlp_norm():
    """Megatron-Bridge's H100 preset (layernorm, moe_act): the fused input norm's output stays."""
    kept = _layer_bytes(frozenset({"layernorm", "moe_act"}), "selective")
    assert kept == pytest.approx(4096 * (2 * (ATTN + MOE - H - K * F) + PROBS))


def test_the_published_h100_layout_fits_at_its_preset_micro_batch_only():
    """25.11 GPT-OSS 120B on 64 H100 (TP 1, PP 4, EP 8, GBS 512): the preset's MBS 1 fits in 80 GiB;
    the row's MBS 4 (a copy error, see the case's source) holds 4 micro-batches of 9 layers x 16384
    tokens on the first stage, more than the 80 GiB alone with the model state."""
    cluster = cluster_for("h100-sxm", 64)
    plan = TrainingPlan(tp=1, pp=4, dp=16, ep=8, micro_batch=1, global_batch=512, seq_len=4096,
                        recompute="selective", recompute_modules="layernorm,moe_act", zero=1, grad_dtype="bf16")
    assert simulate(OSS, cluster, plan).fits
    per_mb_layer = 4 * 4096 * (2 * (ATTN + MOE - H - K * F) + PROBS)  # MBS 4, bytes per layer
    assert 4 * 9 * per_mb_layer > 48 * 2**30  # activations alone leave < 32 GiB of the 80 for the state
    big = simulate(OSS, cluster, plan.with_(micro_batch=4))
    assert not big.fits


@pytest.mark.parametrize(("model", "moe_layer", "fused", "scopes", "expected"), [
    (OSS, True, True, "", 1.0),          # GQA: input norm fused into QKV; MoE pre-MLP norm separate
    (OSS, True, False, "", 2.0),         # no Transformer Engine fusion: both norms are modules
    (OSS, True, True, "moe_router", 0.0),  # a graphed router keeps its norm
    (LLAMA, False, True, "", 0.0),       # dense TE layer: both norms fused into their linears
    (LLAMA, False, False, "", 2.0),
    (DSV3, True, True, "", 2.0),         # MLA keeps its input norm separate
    (DSV3, False, True, "", 1.0),        # DeepSeek's dense first layers: pre-MLP norm fused
    (DSV3, True, True, "attn,moe_router", 0.0),
])
def test_recomputed_norms_follow_the_layer_spec(model, moe_layer, fused, scopes, expected):
    scope_set = frozenset(x for x in scopes.split(",") if x)
    got = recomputed_norms(model, frozenset({"layernorm"}), fused_norms=fused, graph_scopes=scope_set,
                           moe_layer=moe_layer)
    assert got == expected
    assert recomputed_norms(model, frozenset({"moe_act"}), fused_norms=fused, moe_layer=moe_layer) == 0.0


def test_model_average_counts_the_moe_layers_share():
    """DeepSeek-V3: 3 dense layers of 61 keep their fused pre-MLP norm."""
    got = recomputed_norms(DSV3, frozenset({"layernorm"}))
    assert got == pytest.approx(1.0 + 58 / 61)


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from([OSS, QWEN30, DSV3]), fused=st.booleans(),
       scopes=st.sets(st.sampled_from(["attn", "moe_router", "moe_preprocess"])),
       extra=st.sets(st.sampled_from(["core_attn", "moe_act"])), lin=st.sampled_from([0.5, 1.0]))
def test_layernorm_recompute_frees_whole_norm_outputs_and_never_adds(model, fused, scopes, extra, lin):
    """Adding `layernorm` to any module set frees whole hidden-wide norm outputs per layer (weighted
    by the layers that have them): the input norm and a dense pre-MLP norm as a linear layer's saved
    input (`lin`), an MoE layer's pre-MLP norm at 16 bits; never a negative amount."""
    base = frozenset(extra)
    with_ln = base | {"layernorm"}
    r0, s0 = recompute_freed_units(model, base, lin, fused_norms=fused, graph_scopes=frozenset(scopes))
    r1, s1 = recompute_freed_units(model, with_ln, lin, fused_norms=fused, graph_scopes=frozenset(scopes))
    assert s1 == s0
    freed = (r1 - r0) / 2.0  # in 16-bit hidden-wide tensors
    share = model.moe_layers / model.layers
    assert 0.0 <= freed <= 2.0 + 1e-12
    assert any(freed == pytest.approx(lin * (a + c * (1 - share)) + b * share)
               for a in (0, 1) for b in (0, 1) for c in (0, 1))


@settings(max_examples=20, deadline=None)
@given(mb=st.sampled_from([1, 2]), pp=st.sampled_from([1, 2, 4]), mods=st.sampled_from(
    ["layernorm", "layernorm,moe_act", "moe_act", "core_attn,layernorm"]),
    scope=st.sampled_from([None, "moe_router,moe_preprocess", "attn,moe_router,moe_preprocess"]))
def test_planner_screen_matches_the_simulator_and_a_fitting_plan_fits(mb, pp, mods, scope):
    """The planner's memory screen sees what `parasim.training` sees, byte for byte, for MoE plans
    with recompute modules and graph scopes; a plan the screen passes is within the part."""
    cluster = cluster_for("h100-sxm", 64)
    dp = 64 // pp
    d = {"tp": 1, "pp": pp, "cp": 1, "dp": dp, "ep": 8, "etp": 1, "micro_batch": mb, "global_batch": 512,
         "seq_len": 4096, "recompute": "selective", "recompute_modules": mods, "zero": 1, "precision": "bf16",
         "sequence_parallel": False, "virtual_stages": 1, "schedule": "1f1b", "kernels": "fused",
         "cuda_graph_scope": scope}
    res = simulate(OSS, cluster, TrainingPlan.from_mapping(d, gpus=64))
    screen = peak_memory_bytes(OSS, d, cluster.accelerator.generation)
    assert screen == pytest.approx(res.peak_memory_bytes, rel=1e-9)
    if screen <= cluster.accelerator.hbm_bytes:
        assert res.fits and res.peak_memory_bytes <= cluster.accelerator.hbm_bytes


# --- the loss's kept logits and FP8 permuted tokens ---------------------------------------------------
def test_te_cross_entropy_keeps_the_16bit_logits_megatron_keeps_fp32():
    """gpt-oss-120b's 201,088-entry vocabulary at MBS 4 x 4096 (one GPU, TP 1): Megatron-Core's
    vocab-parallel loss keeps 4 B per entry (fp32 exp-logits), Transformer Engine's in-place loss
    the 2 B bf16 logits; both also keep the final norm's 2880-wide 16-bit input."""
    from parasim.cost.memory import logits_activation_bytes

    tokens, vocab = 4 * 4096, 201088
    assert logits_activation_bytes(OSS, seq=4096, micro_batch=4) == pytest.approx(tokens * (2 * 2880 + 4 * vocab))
    assert logits_activation_bytes(OSS, seq=4096, micro_batch=4, cross_entropy="te") == pytest.approx(
        tokens * (2 * 2880 + 2 * vocab))


def test_te_cross_entropy_lowers_a_last_stage_peak_by_the_halved_logits():
    cluster = cluster_for("b200", 64)
    plan = TrainingPlan(tp=1, pp=1, dp=64, ep=8, micro_batch=4, global_batch=512, seq_len=4096, zero=1,
                        grad_dtype="bf16")
    fp32 = simulate(OSS, cluster, plan).peak_memory_bytes
    te = simulate(OSS, cluster, plan.with_(cross_entropy="te")).peak_memory_bytes
    assert fp32 - te == pytest.approx(4 * 4096 * 2 * 201088, rel=1e-9)  # PP 1: one micro-batch in flight


def test_fp8_experts_keep_their_permuted_input_in_fp8():
    """Transformer Engine's GroupedLinear saves the FP8 cast of the permuted tokens: k x hidden bytes
    per token instead of 2 k x hidden (Qwen3-30B-A3B: top-8 of hidden 2048)."""
    cluster = cluster_for("h100-sxm", 16)
    base = TrainingPlan(tp=1, pp=1, dp=16, ep=8, micro_batch=1, global_batch=64, seq_len=4096, zero=1)
    from parasim.training.memory import moe_buffers_per_token

    bf16 = moe_buffers_per_token(QWEN30, base)
    fp8 = moe_buffers_per_token(QWEN30, base.with_(precision="fp8"))
    assert bf16 - fp8 == pytest.approx(8 * 2048 * (2 - 1))  # every layer of Qwen3-30B-A3B is MoE
    eager = moe_buffers_per_token(QWEN30, base.with_(precision="fp8", kernels="eager"))
    assert eager == bf16  # torchao keeps the 16-bit input
    assert simulate(QWEN30, cluster, base.with_(precision="fp8")).fits


@settings(max_examples=25, deadline=None)
@given(value=st.text(min_size=1, max_size=12).filter(lambda v: v not in ("fp32", "te") and v.strip() == v
                                                     and not v.startswith("-") and "\x00" not in v))
def test_hostile_cross_entropy_values_exit_2(value):
    with pytest.raises(InputError) as e:
        TrainingPlan(tp=1, pp=1, dp=8, micro_batch=1, global_batch=8, seq_len=2048, cross_entropy=value).check(LLAMA, 8)
    assert e.value.field == "cross-entropy"


def test_cross_entropy_cli_rejects_bad_values_and_eager_te_in_one_line():
    from conftest import run_cli

    for args, needle in ((["--cross-entropy", "fp16"], "cross-entropy"),
                         (["--kernels", "eager", "--cross-entropy", "te"], "cross-entropy")):
        r = run_cli("train", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch", "16",
                    "--seq-len", "2048", *args)
        assert r.returncode == 2, r.stderr
        assert needle in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_planner_screen_matches_with_te_loss_and_fp8_experts(precision):
    cluster = cluster_for("h100-sxm", 16)
    d = {"tp": 1, "pp": 2, "cp": 1, "dp": 8, "ep": 8, "etp": 1, "micro_batch": 2, "global_batch": 512,
         "seq_len": 4096, "recompute": "none", "zero": 1, "precision": precision, "sequence_parallel": False,
         "virtual_stages": 1, "schedule": "1f1b", "kernels": "fused", "cross_entropy": "te", "grad_dtype": "bf16"}
    res = simulate(QWEN30, cluster, TrainingPlan.from_mapping(d, gpus=16))
    assert peak_memory_bytes(QWEN30, d, cluster.accelerator.generation) == pytest.approx(res.peak_memory_bytes,
                                                                                          rel=1e-9)


def test_gpt_oss_fp8_layer_keeps_te_fp8_copies_and_16bit_router_input():
    """Under Transformer Engine FP8 the linear layers keep 1-byte copies of their inputs (the fused
    norm+QKV's normed output, the output projection's input, the experts' permuted tokens and the
    activation's output), while the MoE layer's pre-MLP norm output, read by the router and the
    dispatcher, stays 16-bit. Bytes per token, from the model card's widths."""
    from parasim.training.memory import moe_buffers_per_token

    plan = TrainingPlan(tp=1, pp=1, dp=8, ep=8, micro_batch=1, global_batch=8, seq_len=4096, precision="fp8")
    got = activation_bytes_per_layer(OSS, seq=4096, micro_batch=1, moe_buffers=moe_buffers_per_token(OSS, plan),
                                     linear_input_bytes=1.0)
    attn = 2 * H + 1 * H + 2 * (Q + KV) + 2 * Q + 1 * Q
    moe = 2 * H + 2 * H + 1 * K * H + 2 * K * 2 * F + 1 * K * F + PROBS
    assert got == pytest.approx(4096 * (attn + moe))
