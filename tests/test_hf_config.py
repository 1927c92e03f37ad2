"""Offline loading of Hugging Face config.json files and parasim model files."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.errors import InputError
from parasim.specs import catalog
from parasim.specs.hf_config import load_model_file

# Configs as published (fields from /work/shared/data/models.md; irrelevant keys trimmed).
LLAMA3_8B = {
    "_name_or_path": "meta-llama/Meta-Llama-3-8B", "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192, "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0, "tie_word_embeddings": False, "attention_bias": False, "torch_dtype": "bfloat16",
}
MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000, "max_position_embeddings": 32768,
    "sliding_window": None, "tie_word_embeddings": False, "rope_theta": 1e6,
}
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 7168,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
    "num_attention_heads": 128, "num_key_value_heads": 128, "n_routed_experts": 256, "n_shared_experts": 1,
    "num_experts_per_tok": 8, "first_k_dense_replace": 3, "moe_layer_freq": 1, "q_lora_rank": 1536,
    "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "vocab_size": 129280, "max_position_embeddings": 163840, "tie_word_embeddings": False,
    "num_nextn_predict_layers": 1,
}
QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
    "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
    "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936, "max_position_embeddings": 40960,
    "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": None,
}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
    "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "vocab_size": 152064,
    "max_position_embeddings": 131072, "sliding_window": 131072, "use_sliding_window": False,
    "tie_word_embeddings": False,
}
GPT2_SMALL = {
    "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12,
    "n_ctx": 1024, "n_positions": 1024, "vocab_size": 50257, "activation_function": "gelu_new",
    "resid_pdrop": 0.1,
}
GPTJ_6B = {
    "_name_or_path": "EleutherAI/gpt-j-6B", "architectures": ["GPTJForCausalLM"], "model_type": "gptj",
    "n_embd": 4096, "n_layer": 28, "n_head": 16, "n_inner": None, "n_positions": 2048, "rotary_dim": 64,
    "activation_function": "gelu_new", "tie_word_embeddings": False, "vocab_size": 50400,
}
FALCON_180B = {
    "architectures": ["FalconForCausalLM"], "model_type": "falcon", "hidden_size": 14848,
    "num_attention_heads": 232, "num_hidden_layers": 80, "num_kv_heads": 8, "vocab_size": 65024,
    "new_decoder_architecture": True, "parallel_attn": True, "multi_query": True, "bias": False, "alibi": False,
}
FALCON_7B = {  # current transformers key names; multi-query attention, old decoder architecture
    "architectures": ["FalconForCausalLM"], "model_type": "falcon", "hidden_size": 4544,
    "num_attention_heads": 71, "num_hidden_layers": 32, "vocab_size": 65024, "multi_query": True,
    "new_decoder_architecture": False, "parallel_attn": True, "bias": False,
}
MISTRAL_SMALL_31 = {
    "architectures": ["Mistral3ForConditionalGeneration"], "model_type": "mistral3",
    "_name_or_path": "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
    "text_config": {"model_type": "mistral", "hidden_size": 5120, "intermediate_size": 32768,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                    "num_hidden_layers": 40, "vocab_size": 131072, "max_position_embeddings": 131072,
                    "sliding_window": None},
    "vision_config": {"model_type": "pixtral", "hidden_size": 1024},
}


def write(tmp_path, data, name="config.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_llama3_8b_matches_catalog(tmp_path):
    m = load_model_file(write(tmp_path, LLAMA3_8B))
    ref = catalog.get_model("llama-3-8b")
    assert m.name == "Meta-Llama-3-8B" and m.model_type == "llama" and m.family == "llama"
    assert (m.layers, m.hidden, m.heads, m.kv_heads, m.head_dim, m.ffn_hidden, m.vocab) == \
        (32, 4096, 32, 8, 128, 14336, 128256)
    assert m.max_seq_len == 8192 and not m.tied_embeddings and not m.biases
    assert m.params_total == ref.params_total
    assert m.params_total == pytest.approx(8.03e9, rel=0.01)


def test_mixtral(tmp_path):
    m = load_model_file(write(tmp_path, MIXTRAL_8X7B, "mixtral.json"))
    assert m.name == "mixtral" and m.family == "moe"
    assert (m.experts, m.experts_per_token, m.moe_ffn_hidden, m.shared_experts) == (8, 2, 14336, 0)
    assert m.sliding_window is None
    assert m.params_total == pytest.approx(46.7e9, rel=0.02)
    assert m.params_active == pytest.approx(12.9e9, rel=0.02)


def test_deepseek_v3(tmp_path):
    m = load_model_file(write(tmp_path, DEEPSEEK_V3))
    assert m.mla is not None
    assert (m.mla.q_lora_rank, m.mla.kv_lora_rank, m.mla.qk_nope_head_dim, m.mla.qk_rope_head_dim,
            m.mla.v_head_dim) == (1536, 512, 128, 64, 128)
    assert (m.experts, m.experts_per_token, m.shared_experts, m.moe_ffn_hidden, m.dense_layers) == \
        (256, 8, 1, 2048, 3)
    assert m.kv_values_per_token_per_layer == 512 + 64
    assert m.params_total == pytest.approx(671e9, rel=0.02)
    assert m.params_active == pytest.approx(37e9, rel=0.02)
    assert m.params_total == catalog.get_model("deepseek-v3").params_total


def test_qwen3_moe(tmp_path):
    m = load_model_file(write(tmp_path, QWEN3_30B_A3B))
    assert m.head_dim == 128 and m.q_dim == 4096 != m.hidden  # explicit head_dim, not hidden/heads
    assert (m.experts, m.experts_per_token, m.moe_ffn_hidden, m.dense_layers) == (128, 8, 768, 0)
    assert m.params_total == pytest.approx(30.5e9, rel=0.02)
    assert m.params_active == pytest.approx(3.3e9, rel=0.02)


def test_qwen3_moe_dense_layers(tmp_path):
    m = load_model_file(write(tmp_path, {**QWEN3_30B_A3B, "mlp_only_layers": [0, 1]}))
    assert m.dense_layers == 2 and m.moe_layers == 46


def test_qwen2_sliding_window_disabled(tmp_path):
    m = load_model_file(write(tmp_path, QWEN25_7B))
    assert m.sliding_window is None
    assert m.params_total == pytest.approx(7.616e9, rel=0.01)


def test_gpt2_small(tmp_path):
    m = load_model_file(write(tmp_path, GPT2_SMALL))
    assert m.family == "gpt" and not m.gated_mlp and m.biases and m.tied_embeddings and m.dropout
    assert m.ffn_hidden == 4 * 768 and m.max_seq_len == 1024
    # Published 124,439,808 includes the 1024x768 learned position table, which ModelSpec omits.
    assert m.params_total == pytest.approx(124_439_808, rel=0.01)


def test_gptj(tmp_path):
    m = load_model_file(write(tmp_path, GPTJ_6B))
    assert m.name == "gpt-j-6B" and m.parallel_attn and m.ffn_hidden == 16384 and m.head_dim == 256
    assert not m.tied_embeddings
    assert m.params_total == pytest.approx(6_053_381_344, rel=0.01)


def test_falcon_180b(tmp_path):
    m = load_model_file(write(tmp_path, FALCON_180B))
    ref = catalog.get_model("falcon-180b")
    assert (m.kv_heads, m.head_dim, m.ffn_hidden) == (8, 64, 4 * 14848)
    assert m.parallel_attn and not m.gated_mlp and not m.biases
    assert m.params_total == ref.params_total
    assert m.params_total == pytest.approx(180e9, rel=0.02)


def test_falcon_multi_query(tmp_path):
    m = load_model_file(write(tmp_path, FALCON_7B))
    assert m.kv_heads == 1 and m.head_dim == 64
    assert m.params_total == pytest.approx(7e9, rel=0.02)


def test_text_config_wrapper(tmp_path):
    m = load_model_file(write(tmp_path, MISTRAL_SMALL_31))
    assert m.name == "Mistral-Small-3.1-24B-Instruct-2503" and m.model_type == "mistral"
    assert (m.layers, m.hidden, m.head_dim, m.ffn_hidden) == (40, 5120, 128, 32768)
    assert m.params_total == catalog.get_model("mistral-small-3.1-24b").params_total


def test_architectures_without_model_type(tmp_path):
    cfg = {k: v for k, v in LLAMA3_8B.items() if k != "model_type"}
    assert load_model_file(write(tmp_path, cfg)).model_type == "llama"


def test_parasim_yaml_and_catalog_path(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("family: gpt\nlayers: 24\nhidden: 2304\nheads: 24\nvocab: 51200\n")
    m = load_model_file(path)
    assert m.name == "tiny" and m.ffn_hidden == 4 * 2304 and m.biases
    assert catalog.get_model(str(path)) == m
    wrapped = write(tmp_path, {"model": {"name": "w", "family": "llama", "layers": 2, "hidden": 64,
                                         "heads": 4, "ffn_hidden": 128, "vocab": 100}}, "w.json")
    assert load_model_file(wrapped).name == "w"


# --- malformed files ------------------------------------------------------------------------------

def test_not_json(tmp_path):
    with pytest.raises(InputError) as e:
        load_model_file(write(tmp_path, '{"model_type": "llama",'))
    assert "config.json" in e.value.field and "JSON" in e.value.message


def test_not_a_mapping(tmp_path):
    with pytest.raises(InputError):
        load_model_file(write(tmp_path, "[1, 2, 3]"))


def test_missing_file(tmp_path):
    with pytest.raises(InputError):
        load_model_file(tmp_path / "nope.json")


@pytest.mark.parametrize("cfg, key", [
    (LLAMA3_8B, "hidden_size"), (MIXTRAL_8X7B, "num_local_experts"), (DEEPSEEK_V3, "kv_lora_rank"),
    (GPT2_SMALL, "n_embd"), (FALCON_180B, "vocab_size"), (QWEN3_30B_A3B, "moe_intermediate_size"),
])
def test_missing_key_is_named(tmp_path, cfg, key):
    bad = {k: v for k, v in cfg.items() if k != key}
    with pytest.raises(InputError) as e:
        load_model_file(write(tmp_path, bad))
    assert key in e.value.field + e.value.message


def test_unknown_model_type(tmp_path):
    with pytest.raises(InputError) as e:
        load_model_file(write(tmp_path, {**LLAMA3_8B, "model_type": "bert"}))
    assert "model_type" in e.value.field and "bert" in e.value.message and "llama" in e.value.message


@pytest.mark.parametrize("value", [0, -4, 3.5, "32", True, [32]])
def test_non_positive_or_non_integer_dims(tmp_path, value):
    with pytest.raises(InputError) as e:
        load_model_file(write(tmp_path, {**LLAMA3_8B, "num_hidden_layers": value}))
    assert "num_hidden_layers" in e.value.field


def test_inconsistent_heads(tmp_path):
    with pytest.raises(InputError) as e:
        load_model_file(write(tmp_path, {**LLAMA3_8B, "num_key_value_heads": 5}))
    assert "kv_heads" in e.value.field


def test_bad_parasim_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("family: llama\nlayers: 2\nhidden: 64\nheads: 4\nffn_hidden: 128\nvocab: 100\nwidth: 3\n")
    with pytest.raises(InputError) as e:
        load_model_file(path)
    assert "width" in e.value.field
    path.write_text("family: llama\nlayers: [\n")
    with pytest.raises(InputError):
        load_model_file(path)


# --- property: a llama-shaped config round-trips into the exact parameter formula -----------------

@settings(max_examples=40, deadline=None)
@given(layers=st.integers(1, 64), kv=st.sampled_from([1, 2, 4, 8]), group=st.integers(1, 8),
       head_dim=st.sampled_from([32, 64, 128]), ffn=st.integers(1, 20000), vocab=st.integers(1, 200000),
       tied=st.booleans())
def test_llama_config_roundtrip(tmp_path_factory, layers, kv, group, head_dim, ffn, vocab, tied):
    heads = kv * group
    hidden = heads * head_dim
    cfg = {"model_type": "llama", "hidden_size": hidden, "intermediate_size": ffn, "num_attention_heads": heads,
           "num_key_value_heads": kv, "num_hidden_layers": layers, "vocab_size": vocab,
           "tie_word_embeddings": tied}
    m = load_model_file(write(tmp_path_factory.mktemp("cfg"), cfg))
    per_layer = hidden * (hidden + 2 * kv * head_dim) + hidden * hidden + 3 * hidden * ffn + 2 * hidden
    expected = layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden
    assert m.params_total == expected
    assert m.kv_values_per_token_per_layer == 2 * kv * head_dim


# --- OPT (facebook/opt-*): configs as published on the Hugging Face hub --------------------------

def _opt(**kw) -> dict:
    base = {"architectures": ["OPTForCausalLM"], "model_type": "opt", "activation_function": "relu",
            "do_layer_norm_before": True, "dropout": 0.1, "enable_bias": True, "max_position_embeddings": 2048,
            "vocab_size": 50272, "_remove_final_layer_norm": False}
    return {**base, **kw}


OPT_13B = _opt(_name_or_path="facebook/opt-13b", hidden_size=5120, ffn_dim=20480, num_attention_heads=40,
               num_hidden_layers=40, word_embed_proj_dim=5120)
OPT_66B = _opt(hidden_size=9216, ffn_dim=36864, num_attention_heads=72, num_hidden_layers=64, word_embed_proj_dim=9216)
OPT_6_7B = _opt(hidden_size=4096, ffn_dim=16384, num_attention_heads=32, num_hidden_layers=32, word_embed_proj_dim=4096)
OPT_350M = _opt(hidden_size=1024, ffn_dim=4096, num_attention_heads=16, num_hidden_layers=24, word_embed_proj_dim=512,
                do_layer_norm_before=False)


def _opt_params_by_hand(layers, d, ffn, vocab=50272, positions=2048, proj=None, final_norm=True):
    """OPT as transformers builds it: tied token embedding (vocab x proj), a learned position table
    of positions + 2 rows, per layer q/k/v/out with biases, fc1/fc2 with biases, two LayerNorms
    (weight + bias); a final LayerNorm (pre-LN); bias-free project_in/out when proj != d."""
    proj = proj or d
    per_layer = 4 * (d * d + d) + (d * ffn + ffn) + (ffn * d + d) + 2 * 2 * d
    edges = vocab * proj + (positions + 2) * d + (2 * proj * d if proj != d else 0)
    return layers * per_layer + edges + (2 * d if final_norm else 0)


@pytest.mark.parametrize("cfg, published, hand", [
    (OPT_13B, 12.85e9, _opt_params_by_hand(40, 5120, 20480)),
    (OPT_66B, 65.7e9, _opt_params_by_hand(64, 9216, 36864)),
    (OPT_6_7B, 6.66e9, _opt_params_by_hand(32, 4096, 16384)),
    (OPT_350M, 331e6, _opt_params_by_hand(24, 1024, 4096, proj=512, final_norm=False)),
])
def test_opt_parameter_counts(tmp_path, cfg, published, hand):
    m = load_model_file(write(tmp_path, cfg))
    assert m.model_type == "opt" and m.family == "gpt" and not m.gated_mlp and m.biases
    assert m.learned_positions and m.tied_embeddings and m.kv_heads == m.heads and m.dropout
    assert m.params_total == hand
    assert m.params_total == pytest.approx(published, rel=2e-3)


def test_opt_13b_exact_and_flops(tmp_path):
    m = load_model_file(write(tmp_path, OPT_13B))
    assert m.name == "opt-13b" and m.params_total == 12_853_473_280
    # 2N per token counts every matmul: 40 blocks plus the (tied) LM head, not the position table
    blocks = 40 * (4 * 5120 * 5120 + 4 * 5120 + 2 * 5120 * 20480 + 20480 + 5120)
    assert m.matmul_params_active == blocks + 50272 * 5120


def test_opt_350m_projections_feed_flops_and_memory(tmp_path):
    from parasim.cost.flops import layer_matmul_params_active
    from parasim.cost.memory import weight_params_per_gpu

    m = load_model_file(write(tmp_path, OPT_350M))
    assert m.embed_dim == 512 and not m.final_norm
    per_layer_matmul = 4 * 1024 * 1024 + 4 * 1024 + 2 * 1024 * 4096 + 4096 + 1024
    assert layer_matmul_params_active(m) == 24 * per_layer_matmul
    assert m.matmul_params_active == 24 * per_layer_matmul + 50272 * 512 + 2 * 512 * 1024
    assert weight_params_per_gpu(m) == m.params_total  # one GPU holds every parameter once


# --- --model DIR: a checkpoint folder as people have it ---------------------------------------------

def test_checkpoint_folder_is_named_after_name_or_path_else_the_folder(tmp_path):
    folder = tmp_path / "my-opt"
    folder.mkdir()
    write(folder, OPT_13B)
    assert catalog.get_model(str(folder)).name == "opt-13b"  # _name_or_path wins
    write(folder, {k: v for k, v in OPT_13B.items() if k != "_name_or_path"})
    assert catalog.get_model(str(folder)).name == "my-opt"  # not "config"
    assert catalog.get_model(str(folder / "config.json")).name == "my-opt"
    write(folder, {**OPT_13B, "_name_or_path": "./"})  # saved from a local path: the folder again
    assert catalog.get_model(str(folder)).name == "my-opt"
    snap = tmp_path / "models--facebook--opt-6.7b" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    write(snap, OPT_6_7B)
    assert catalog.get_model(str(snap)).name == "opt-6.7b"  # a Hugging Face cache snapshot


def test_folder_without_config_json(tmp_path):
    with pytest.raises(InputError) as e:
        catalog.get_model(str(tmp_path))
    assert e.value.field == "model" and "config.json" in e.value.message


def test_model_reference_is_absolute_for_paths_only(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    write(folder, LLAMA3_8B)
    monkeypatch.chdir(tmp_path)
    assert catalog.model_reference("ckpt") == str(folder.resolve())
    assert catalog.model_reference("llama-3-8b") == "llama-3-8b"
    assert catalog.model_reference("meta-llama/Llama-3.1-70B-Instruct") == "meta-llama/Llama-3.1-70B-Instruct"


# --- hostile configs: one error naming the key, never a traceback or a silent truncation -----------

@pytest.mark.parametrize("key, value", [
    ("num_attention_heads", 0), ("num_hidden_layers", 1.5), ("num_hidden_layers", 1e20),
    ("hidden_size", -4096), ("intermediate_size", "14336"), ("vocab_size", True), ("num_key_value_heads", 1e300),
])
def test_hostile_sizes_name_the_key(tmp_path, key, value):
    with pytest.raises(InputError) as e:
        load_model_file(write(tmp_path, {**LLAMA3_8B, key: value}))
    assert key in e.value.field


def test_nan_infinity_and_deep_nesting_are_refused(tmp_path):
    for text in ('{"model_type": "llama", "hidden_size": NaN}', '{"model_type": "llama", "hidden_size": Infinity}',
                 '{"model_type": "llama", "x": ' + "[" * 500 + "]" * 500 + "}"):
        with pytest.raises(InputError):
            load_model_file(write(tmp_path, text))


def test_binary_and_utf16_configs(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(json.dumps(LLAMA3_8B).encode("utf-16"))
    with pytest.raises(InputError, match="UTF-16"):
        load_model_file(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(InputError, match="not a text file"):
        load_model_file(path)


@pytest.mark.parametrize("line, key", [("layers: 1.5", "layers"), ("layers: 1e20", "layers"),
                                       ("heads: '4'", "heads"), ("hidden: -64", "hidden"),
                                       ("tied_embeddings: 1", "tied_embeddings")])
def test_parasim_yaml_sizes_are_checked(tmp_path, line, key):
    path = tmp_path / "m.yaml"
    base = {"family": "llama", "layers": "2", "hidden": "64", "heads": "4", "ffn_hidden": "128", "vocab": "100"}
    k = line.split(":")[0]
    body = "\n".join(f"{a}: {b}" for a, b in base.items() if a != k) + "\n" + line + "\n"
    path.write_text(body)
    with pytest.raises(InputError) as e:
        load_model_file(path)
    assert key in e.value.field


def test_cli_model_folder_and_hostile_config(tmp_path):
    from tests.conftest import run_cli

    folder = tmp_path / "opt-13b-local"
    folder.mkdir()
    write(folder, {k: v for k, v in OPT_13B.items() if k != "_name_or_path"})
    r = run_cli("inspect", "--model", str(folder), "--gpu", "h100-sxm", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "opt-13b-local" in json.dumps(out) and "12853473280" in json.dumps(out).replace("_", "")
    write(folder, {**OPT_13B, "num_hidden_layers": 1e20})
    r = run_cli("inspect", "--model", str(folder), "--gpu", "h100-sxm")
    assert r.returncode == 2 and "num_hidden_layers" in r.stderr and "Traceback" not in r.stderr
