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
    """Adding `layernorm` to any module set frees a whole number of hidden-wide 16-bit norm outputs
    per layer (weighted by the layers that have them), at most two, never a negative amount."""
    base = frozenset(extra)
    with_ln = base | {"layernorm"}
    r0, s0 = recompute_freed_units(model, base, lin, fused_norms=fused, graph_scopes=frozenset(scopes))
    r1, s1 = recompute_freed_units(model, with_ln, lin, fused_norms=fused, graph_scopes=frozenset(scopes))
    assert s1 == s0
    freed = (r1 - r0) / (2.0 * lin)  # in norm outputs
    assert 0.0 <= freed <= 2.0 + 1e-12
    share = model.moe_layers / model.layers
    assert any(freed == pytest.approx(a + b * share + c * (1 - share)) for a in (0, 1) for b in (0, 1) for c in (0, 1))


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
