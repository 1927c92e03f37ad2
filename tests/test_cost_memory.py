"""Memory: Korthikanti et al. activation formulas, Megatron's bytes-per-parameter rule, KV cache."""

from __future__ import annotations

import pytest

from conftest import make_model
from parasim.cost.memory import (activation_bytes_per_layer, kv_cache_bytes_per_token,
                                 kv_cache_bytes_per_token_per_gpu, training_state_bytes, weight_params_per_gpu)
from parasim.specs.catalog import get_model

GPT3 = dict(name="gpt3-175b", family="gpt", layers=96, hidden=12288, heads=96, kv_heads=96, head_dim=128,
            ffn_hidden=4 * 12288, vocab=51200, gated_mlp=False, biases=True, dropout=True)


@pytest.mark.parametrize("tp", [1, 2, 8])
@pytest.mark.parametrize("seq,b", [(2048, 1), (4096, 2)])
def test_korthikanti_tensor_parallel(tp, seq, b):
    m = make_model(**GPT3)
    s, h, a = seq, m.hidden, m.heads
    expected = s * b * h * (10 + 24 / tp + 5 * a * s / (h * tp))
    got = activation_bytes_per_layer(m, seq=s, micro_batch=b, tp=tp, flash=False)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("tp", [1, 4, 8])
def test_korthikanti_sequence_parallel_and_selective(tp):
    m = make_model(**GPT3)
    s, b, h, a = 2048, 1, m.hidden, m.heads
    sp = activation_bytes_per_layer(m, seq=s, micro_batch=b, tp=tp, sp=True, flash=False)
    assert sp == pytest.approx(s * b * h / tp * (34 + 5 * a * s / h), rel=1e-12)
    sel = activation_bytes_per_layer(m, seq=s, micro_batch=b, tp=tp, sp=True, recompute="selective")
    assert sel == pytest.approx(s * b * h / tp * 34, rel=1e-12)


def test_full_recompute_keeps_only_layer_input():
    m = make_model(**GPT3)
    assert activation_bytes_per_layer(m, seq=2048, micro_batch=1, tp=8, recompute="full") == 2 * 2048 * 12288
    assert activation_bytes_per_layer(m, seq=2048, micro_batch=1, tp=8, sp=True, recompute="full") == 2 * 2048 * 12288 / 8


def test_megatron_selective_formula_for_gelu_mlp():
    """Megatron's theoretical memory uses sbh(18 + 4*ffn/h) per layer for GELU MLPs with SP."""
    m = make_model(**GPT3)
    got = activation_bytes_per_layer(m, seq=2048, micro_batch=1, tp=8, sp=True, recompute="selective")
    assert got == pytest.approx(2048 * 12288 * (18 + 4 * m.ffn_hidden / m.hidden) / 8, rel=0.05)


def test_activation_scales_with_cp():
    m = get_model("llama-3-8b")
    full = activation_bytes_per_layer(m, seq=8192, micro_batch=1)
    half = activation_bytes_per_layer(m, seq=8192, micro_batch=1, cp=2)
    assert half == pytest.approx(full / 2)


@pytest.mark.parametrize("dp", [1, 8, 64])
def test_megatron_bytes_per_parameter(dp):
    p = 1e9
    assert training_state_bytes(p, dp=dp, zero=0).total == pytest.approx(18 * p)
    assert training_state_bytes(p, dp=dp, zero=1).total == pytest.approx((6 + 12 / dp) * p)
    assert training_state_bytes(p, dp=dp, zero=3).total == pytest.approx(18 * p / dp)


def test_kv_cache_llama3_70b_exact():
    m = get_model("llama-3-70b")
    per_token = m.layers * 2 * m.kv_heads * m.head_dim * 2
    assert per_token == 327_680
    assert kv_cache_bytes_per_token(m, 2.0) == per_token
    assert kv_cache_bytes_per_token(m, 1.0) == per_token / 2


def test_kv_cache_sharding():
    m = get_model("llama-3-70b")
    assert kv_cache_bytes_per_token_per_gpu(m, tp=8, pp=1) == 327_680 / 8
    assert kv_cache_bytes_per_token_per_gpu(m, tp=16, pp=1) == 327_680 / 8  # KV heads replicated past 8
    assert kv_cache_bytes_per_token_per_gpu(m, tp=1, pp=4) == 327_680 / 4


def test_mla_caches_latent_only():
    m = get_model("deepseek-v3")
    assert kv_cache_bytes_per_token(m, 2.0) == 61 * (512 + 64) * 2


def test_weights_per_gpu_conserve_parameters():
    m = get_model("llama-3-70b")
    one = weight_params_per_gpu(m)
    assert one == m.params_total
    stages = [weight_params_per_gpu(m, pp=4, stage=i) for i in range(4)]
    norms = m.layers * m.norm_params_per_layer + m.final_norm_params
    assert sum(stages) == pytest.approx(m.params_total, rel=1e-9)
    tp8 = weight_params_per_gpu(m, tp=8)
    assert tp8 * 8 == pytest.approx(m.params_total + 7 * norms, rel=1e-9)  # norms are replicated


def test_expert_parallel_splits_experts():
    m = get_model("mixtral-8x7b")
    ep8 = weight_params_per_gpu(m, tp=1, ep=8)
    assert ep8 < m.params_total / 4


def test_quantised_weights_keep_embedding_and_lm_head_in_16_bit():
    """FP8 checkpoints quantise the blocks' Linear layers only (Model Optimizer disables *lm_head*;
    an embedding is a lookup table): Llama-3-8B in FP8 = block params x 1 B + (embedding + head) x 2 B."""
    from parasim.cost.memory import weight_bytes_per_gpu, weight_params_per_gpu
    from parasim.specs.catalog import get_model

    m = get_model("llama-3-8b")
    edges = 2 * 128256 * 4096
    total = weight_params_per_gpu(m)
    assert weight_bytes_per_gpu(m, weights="fp8") == pytest.approx((total - edges) * 1 + edges * 2)
    assert weight_bytes_per_gpu(m, weights="bf16") == pytest.approx(total * 2)
    # TP2 x PP2: the embedding sits on stage 0 and the head on stage 1, each split over TP
    s0 = weight_params_per_gpu(m, tp=2, pp=2, stage=0)
    s1 = weight_params_per_gpu(m, tp=2, pp=2, stage=1)
    half = 128256 * 4096 / 2
    q = 0.5 + (16 + 4) / 128 / 8  # INT4 + an FP16 scale and a 4-bit zero per group of 128 (AWQ)
    assert weight_bytes_per_gpu(m, tp=2, pp=2, weights="int4") == pytest.approx(
        max(s0 * q + half * (2 - q), s1 * q + half * (2 - q)))


def test_tied_embeddings_across_stages_keep_both_copies_16_bit():
    """A tied matrix split over PP is held twice (first stage: embedding, last stage: head); with
    quantised weights both copies stay 16-bit. Tiny tied model, PP 2, INT4 (0.5 B + an FP16 scale
    and a 4-bit zero per 128): each stage's bytes = its params x q + vocab x hidden x (2 - q)."""
    from parasim.cost.memory import weight_bytes_per_gpu, weight_params_per_gpu

    m = make_model(tied_embeddings=True)
    table = 32000 * 1024
    stages = [weight_params_per_gpu(m, pp=2, stage=i) for i in (0, 1)]
    assert stages[1] > table  # the last stage holds its own copy of the tied matrix
    q = 0.5 + 20 / 128 / 8
    assert weight_bytes_per_gpu(m, pp=2, weights="int4") == pytest.approx(max(p * q + table * (2 - q) for p in stages))


def test_transformer_engine_fp8_keeps_one_byte_linear_inputs():
    """Llama 3.1 405B layer, TP 4 + SP, FP8 under Transformer Engine, counted tensor by tensor
    (bytes per token per hidden element): two RMSNorm inputs 2 + 2 (bf16); the QKV and fc1 inputs
    1 + 1 (FP8 casts); Q 2, K and V 2 * 2048/16384, attention output 2 (flash attention's, bf16) + 1
    (the projection's FP8 copy); SwiGLU input 2 * 2 * 53248/16384, its output 53248/16384 (fc2's FP8
    input). 16-bit: 8 + 4.25 + 19.5 = 31.75; FP8: 6 + 5.25 + 16.25 = 27.5."""
    m = get_model("llama-3.1-405b")
    assert (m.hidden, m.q_dim, m.kv_heads * m.head_dim, m.ffn_hidden) == (16384, 16384, 1024, 53248)
    sbh_t = 8192 * 16384 / 4
    bf16 = activation_bytes_per_layer(m, seq=8192, micro_batch=1, tp=4, sp=True)
    fp8 = activation_bytes_per_layer(m, seq=8192, micro_batch=1, tp=4, sp=True, linear_input_bytes=1.0)
    assert bf16 == pytest.approx(sbh_t * 31.75, rel=1e-12)
    assert fp8 == pytest.approx(sbh_t * 27.5, rel=1e-12)


def test_gelu_mlp_fp8_inputs_without_sequence_parallelism():
    """GPT-3 layer, TP 8, no SP, flash attention (no score matrix). Replicated over TP: norm inputs
    4, QKV and fc1 inputs 1 + 1 in FP8 (2 + 2 at 16 bits), two residual-dropout masks 2. Split over
    TP: Q, K, V 6, attention output 2 + the projection's FP8 copy 1, GELU input 8, GELU output 4 in
    FP8 (8 at 16 bits, the fc2 input)."""
    m = make_model(**GPT3)
    s, h, t = 2048, m.hidden, 8
    got = activation_bytes_per_layer(m, seq=s, micro_batch=1, tp=t, linear_input_bytes=1.0)
    bf16 = activation_bytes_per_layer(m, seq=s, micro_batch=1, tp=t)
    # 16-bit with flash attention: 10 replicated + (6 + 2 + 16) / t (Korthikanti without the score)
    assert bf16 == pytest.approx(s * h * (10 + 24 / t), rel=1e-12)
    # FP8: replicated 10 - 2 (two linear inputs halved); split 24 + 1 (projection copy) - 4 (GELU output halved)
    assert got == pytest.approx(s * h * (8 + 21 / t), rel=1e-12)


def test_fp8_saved_inputs_only_under_transformer_engine():
    from parasim.cost.memory import saved_linear_input_bytes

    assert saved_linear_input_bytes("fp8", "fused") == 1.0
    for kernels in ("eager", "compiled"):  # torchao Float8Linear saves the bf16 input
        assert saved_linear_input_bytes("fp8", kernels) is None
    assert saved_linear_input_bytes("bf16", "fused") is None


def test_zero_bubble_w_inputs_in_fp8():
    """The zero-bubble paper's M_W = 32 sbh for a GPT layer (Qi et al. 2024, Table 1): 16 values
    per token and hidden unit at 2 B. Of these the GEMM inputs X are the two norm outputs (2h), the
    projection's input (h) and the MLP-down input (4h), 7h kept in FP8 at 1 B under Transformer
    Engine; the 9h output gradients stay 16-bit: 7 + 18 = 25 sbh."""
    from parasim.cost.memory import weight_grad_input_bytes_per_layer

    m = make_model(**GPT3)
    s, h = 2048, m.hidden
    assert weight_grad_input_bytes_per_layer(m, seq=s, micro_batch=1) == pytest.approx(32 * s * h, rel=1e-12)
    assert weight_grad_input_bytes_per_layer(m, seq=s, micro_batch=1, linear_input_bytes=1.0) == pytest.approx(
        25 * s * h, rel=1e-12)


def test_transformer_engine_fp8_weight_bytes_by_generation_and_recipe():
    """Bytes per block linear parameter: the 16-bit parameter (2, absent with fp8_param_gather),
    one FP8 copy (1) and, where FP8 GEMMs take only the TN layout (Hopper), its transpose (1);
    MXFP8 keeps a row- and a column-scaled copy, each with one E8M0 byte per 32 elements."""
    from parasim.cost.memory import te_fp8_weight_bytes

    assert te_fp8_weight_bytes("fp8", "fused", "delayed", False, "hopper") == 4.0
    assert te_fp8_weight_bytes("fp8", "fused", "tensorwise", False, "blackwell") == 3.0
    assert te_fp8_weight_bytes("fp8", "fused", "delayed", True, "hopper") == 2.0
    assert te_fp8_weight_bytes("fp8", "fused", "tensorwise", True, "blackwell") == 1.0
    assert te_fp8_weight_bytes("fp8", "fused", "mxfp8", False, "blackwell") == pytest.approx(2 + 2 * (1 + 1 / 32))
    assert te_fp8_weight_bytes("fp8", "fused", "mxfp8", True, "blackwell") == pytest.approx(2 * (1 + 1 / 32))
    assert te_fp8_weight_bytes("bf16", "fused", "delayed", False, "hopper") is None
    assert te_fp8_weight_bytes("fp8", "compiled", "delayed", False, "hopper") is None


def test_fp8_parameters_of_a_middle_405b_rank():
    """Llama 3.1 405B at TP 4, PP 16, VP 4: rank 1 holds four 2-layer chunks, no embedding or head.
    Per layer: Q and O 16384^2 each, K and V 16384 x 1024 each, SwiGLU 3 x 16384 x 53248, over TP 4,
    plus two RMSNorm weights of 16384 (not split). In FP8 on Blackwell with the parameters kept in
    FP8: one byte per linear parameter, the norms 16-bit."""
    from parasim.cost.memory import stage_state_bytes

    m = get_model("llama-3.1-405b")
    linear = 8 * (2 * 16384**2 + 2 * 16384 * 1024 + 3 * 16384 * 53248) // 4
    norms = 8 * 2 * 16384
    st = stage_state_bytes(m, tp=4, pp=16, ep=1, dp_cp=4, zero=1, stage=1, virtual_stages=4, linear_weight_bytes=1.0)
    assert st.weights == pytest.approx(linear * 1.0 + norms * 2.0, rel=1e-12)
    bf16 = stage_state_bytes(m, tp=4, pp=16, ep=1, dp_cp=4, zero=1, stage=1, virtual_stages=4)
    assert bf16.weights == pytest.approx((linear + norms) * 2.0, rel=1e-12)
    assert st.optimizer == bf16.optimizer and st.gradients == bf16.gradients
