"""The catalog commands through a subprocess, as a user runs them; bad input exits 2 in one line."""

from __future__ import annotations

import json

import pytest


def test_inspect_llama3_70b_contract(cli):
    r = cli("inspect", "--model", "llama-3-70b", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params_total"] == pytest.approx(70.55e9, rel=0.01)
    assert out["params_active"] == out["params_total"]
    assert out["kv_cache_bytes_per_token"] == 327_680
    fp8 = json.loads(cli("inspect", "--model", "llama-3-70b", "--json", "--kv-dtype", "fp8").stdout)
    assert fp8["kv_cache_bytes_per_token"] == 327_680 / 2


def test_inspect_sharded_weights(cli):
    out = json.loads(cli("inspect", "--model", "llama-3-70b", "--gpu", "h100-sxm", "--tp", "8", "--json").stdout)
    assert out["weight_memory_gib_per_gpu"] == pytest.approx(70.55e9 * 2 / 8 / 2**30, rel=0.02)
    assert out["weights_fit"] is True


def test_inspect_is_deterministic(cli):
    a = cli("inspect", "--model", "deepseek-v3", "--ep", "8", "--json").stdout
    assert a == cli("inspect", "--model", "deepseek-v3", "--ep", "8", "--json").stdout


def test_gpus_json_contract(cli):
    rows = json.loads(cli("gpus", "--json").stdout)
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        assert {"id", "bf16_tflops", "fp8_tflops", "hbm_gib", "hbm_tb_s", "tdp_w", "source"} <= set(r)
        assert r["source"]
    assert by_id["h100-sxm"]["bf16_tflops"] == 989.4
    assert by_id["a100-sxm-80gb"]["fp8_tflops"] is None


def test_models_json_lists_catalog(cli):
    rows = json.loads(cli("models", "--json").stdout)
    assert len(rows) >= 20


def test_human_tables_render(cli):
    for args in (("models",), ("gpus",), ("inspect", "--model", "mixtral-8x7b", "--gpu", "a100-sxm-80gb", "--tp", "2")):
        r = cli(*args)
        assert r.returncode == 0, r.stderr


def _one_line_error(r, *needles):
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0]


def test_unknown_model(cli):
    _one_line_error(cli("inspect", "--model", "llama-3-71b"), "model", "llama-3-70b")


def test_unknown_gpu(cli):
    _one_line_error(cli("inspect", "--model", "llama-3-8b", "--gpu", "h1000"), "gpu")


def test_tp_not_dividing_heads(cli):
    _one_line_error(cli("inspect", "--model", "llama-3-70b", "--tp", "3"), "tp", "64")


def test_unknown_kv_dtype(cli):
    _one_line_error(cli("inspect", "--model", "llama-3-70b", "--kv-dtype", "fp7"), "kv-dtype")


def test_malformed_config_json(cli, tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{ not json")
    _one_line_error(cli("inspect", "--model", str(bad)), "config.json")
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    _one_line_error(cli("inspect", "--model", str(missing)))


def test_hf_config_path_works(cli, tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
           "max_position_embeddings": 8192, "tie_word_embeddings": False}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    out = json.loads(cli("inspect", "--model", str(p), "--json").stdout)
    assert out["params_total"] == pytest.approx(8.03e9, rel=0.01)


def test_unknown_flag_is_one_line(cli):
    _one_line_error(cli("inspect", "--model", "llama-3-8b", "--tq", "2"), "--tq")


def test_inspect_weight_memory_is_serves(cli):
    """`inspect --weights W` and `serve --weights W` size the same weights: the 16-bit embedding and
    LM head and the block scales are in both. By hand for an 8- or 4-bit 70B at TP 8: the edges
    (embedding + LM head, 2 x 128256 x 8192 / 8 parameters) at 2 bytes instead of the format's b, so
    at least every-parameter-at-b plus edges x (2 - b)."""
    from parasim.cost.memory import weight_bytes_per_gpu, weight_params_per_gpu
    from parasim.specs.catalog import get_model

    model = get_model("llama-3-70b")
    edges = 2 * 128256 * 8192 / 8
    for weights, b in (("bf16", 2.0), ("fp8", 1.0), ("int4", 0.5), ("fp4", 0.5)):
        out = json.loads(cli("inspect", "--model", "llama-3-70b", "--tp", "8", "--weights", weights, "--json").stdout)
        got = out["weight_memory_bytes_per_gpu"]
        assert got == weight_bytes_per_gpu(model, tp=8, weights=weights)
        assert got >= weight_params_per_gpu(model, tp=8) * b + edges * (2.0 - b) * 0.999
