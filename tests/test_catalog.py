"""The shipped catalogs: coverage of the validation ids, dense peaks, sources, derived counts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parasim.specs import catalog

REPO = Path(__file__).resolve().parents[1]
VALIDATION_README = REPO.parent / "shared" / "validation" / "README.md"

# Used only when the validation README is not next to the repository.
FALLBACK_IDS = [
    "v100-sxm-32gb", "a100-sxm-40gb", "a100-sxm-80gb", "a100-pcie-80gb", "l4", "l40s", "h100-sxm",
    "h100-pcie", "h100-nvl", "h800", "h20", "h200-sxm", "gh200", "b200", "gb200", "mi250x", "mi300x",
    "mi325x", "mi355x", "gaudi2", "gaudi3", "tpu-v5e", "tpu-v5p",
]

REQUIRED_MODELS = [
    "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3-70b", "llama-3.1-8b", "llama-3.1-70b",
    "llama-3.1-405b", "mistral-7b", "mixtral-8x7b", "mixtral-8x22b", "qwen2.5-7b", "qwen2.5-72b", "qwen3-8b",
    "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v3", "gpt-3-175b", "gpt-j-6b", "falcon-180b", "opt-175b",
]


def validation_accelerator_ids() -> list[str]:
    """The ids of the README's 'Accelerator ids:' paragraph (up to the next blank line)."""
    if not VALIDATION_README.is_file():
        return FALLBACK_IDS
    text = VALIDATION_README.read_text()
    start = text.index("Accelerator ids:")
    paragraph = text[start:].split("\n\n", 1)[0]
    paragraph = paragraph.split("Published specs", 1)[0]
    ids = re.findall(r"`([a-z0-9][a-z0-9.\-]*)`", paragraph)
    assert len(ids) >= 20, ids
    return ids


# --- accelerators ---------------------------------------------------------------------------------

@pytest.mark.parametrize("acc_id", validation_accelerator_ids())
def test_every_validation_accelerator_is_in_the_catalog(acc_id):
    assert acc_id in catalog.accelerators()


def test_h100_sxm_bf16_is_the_dense_datasheet_value():
    h100 = catalog.get_accelerator("h100-sxm")
    assert h100.peak_flops_per_s["bf16"] == 989.4e12
    assert h100.link_bw_bytes_per_s == 450e9  # one way, not the 900 GB/s bidirectional sum


@pytest.mark.parametrize("acc", catalog.accelerators().values(), ids=lambda a: a.id)
def test_peaks_are_dense(acc):
    """Sparse (2:4) figures are 2x dense: an fp8 well above 2x bf16 (or fp4 > 4x) betrays one.

    The bound is 2.03x, not 2.01x: the L40S datasheet prints BF16 362.05 but FP8 733 dense (2.025x).
    A sparse figure would be ~4x, so the check still catches it."""
    p = acc.peak_flops_per_s
    base = p.get("bf16") or p.get("fp16")
    assert base and base > 0
    for dtype, factor in (("fp8", 2.03), ("int8", 2.03), ("fp4", 4.06), ("tf32", 0.51)):
        if p.get(dtype):
            assert p[dtype] <= factor * base, (dtype, p[dtype], base)
    if p.get("fp16") and p.get("bf16"):
        assert p["fp16"] == p["bf16"]


@pytest.mark.parametrize("acc", catalog.accelerators().values(), ids=lambda a: a.id)
def test_accelerator_fields_are_physical_and_sourced(acc):
    assert acc.hbm_bytes > 1e9 and acc.hbm_bw_bytes_per_s > 1e11 and acc.link_bw_bytes_per_s >= 16e9
    assert 0 < acc.idle_w < acc.tdp_w
    assert acc.price_usd_per_hour > 0
    e = acc.efficiency
    for frac in (e.gemm, e.attention, e.memory, e.nvlink_busbw, e.network_busbw):
        assert 0.1 <= frac <= 1.0
    assert e.attention <= e.gemm + 1e-9 or acc.id.startswith(("h", "gh"))  # FA3 on Hopper equals cuBLAS
    assert e.gemm_fp8 is None or 0.1 <= e.gemm_fp8 <= 1.0
    assert e.gemm_fp4 is None or (0.1 <= e.gemm_fp4 <= 1.0 and acc.sources.get("efficiency.gemm_fp4"))
    assert acc.sources, acc.id
    for key in ("peaks", "hbm", "link", "tdp", "idle_w", "price", "efficiency.gemm", "efficiency.memory",
                "efficiency.nvlink_busbw"):
        assert acc.sources.get(key, "").strip(), (acc.id, key)
    assert "assumption" in acc.sources["idle_w"] and "assumption" in acc.sources["price"]


def test_volta_has_fp16_but_no_bf16_and_mi250x_is_one_gcd():
    v100 = catalog.get_accelerator("v100-sxm-32gb")
    assert v100.peak_flops_per_s["fp16"] == 125e12 and not v100.has_unit("bf16")
    mi250x = catalog.get_accelerator("mi250x")
    assert mi250x.peak("bf16") == 191.5e12 and mi250x.hbm_bytes == 64 * 2**30  # datasheet GB of HBM are binary


# --- node presets ---------------------------------------------------------------------------------

def test_presets_reference_catalog_accelerators():
    presets = catalog.node_presets()
    for required in ("dgx-a100", "dgx-h100", "hgx-h200", "hgx-b200", "gb200-nvl72", "mi300x-platform"):
        assert required in presets
    for p in presets.values():
        assert p.accelerator in catalog.accelerators(), p.id
        assert p.scale_up_domain >= p.gpus_per_node > 0 and p.nics_per_node > 0 and p.source
    assert presets["gb200-nvl72"].scale_up_domain == 72
    assert presets["dgx-h100"].nic_bw_bytes_per_s_per_gpu == 50e9  # 400 Gb/s NDR per GPU
    assert presets["dgx-a100"].nic_bw_bytes_per_s_per_gpu == 25e9  # 200 Gb/s HDR per GPU


# --- models ---------------------------------------------------------------------------------------

def test_model_catalog_has_the_required_entries_with_sources():
    models = catalog.models()
    assert len(models) >= 20
    assert set(REQUIRED_MODELS) <= set(models)
    for m in models.values():
        assert m.source.strip(), m.name


def test_llama3_70b_params_and_kv_cache():
    m = catalog.get_model("llama-3-70b")
    assert m.params_total == pytest.approx(70.55e9, rel=0.01)
    # KV cache: K and V, per layer, per KV head, head_dim values each; 2 bytes per value in bf16.
    kv_values = m.layers * 2 * m.kv_heads * m.head_dim
    assert m.layers * m.kv_values_per_token_per_layer == kv_values
    assert kv_values * 2 == 80 * 2 * 8 * 128 * 2  # the published shapes: 80 layers, 8 KV heads, 128 dims


@pytest.mark.parametrize("name, total, active, rel", [
    ("mixtral-8x7b", 46.7e9, 12.9e9, 0.02),
    ("mixtral-8x22b", 141e9, 39e9, 0.02),
    ("deepseek-v3", 671e9, 37e9, 0.02),
    ("qwen3-30b-a3b", 30.5e9, 3.3e9, 0.02),
    ("qwen3-235b-a22b", 235e9, 22e9, 0.02),
    ("qwen2.5-7b", 7.616e9, 7.616e9, 0.01),
    ("gpt-j-6b", 6_053_381_344, 6_053_381_344, 0.01),
    ("gpt-3-175b", 175e9, 175e9, 0.01),
])
def test_published_parameter_counts(name, total, active, rel):
    m = catalog.get_model(name)
    assert m.params_total == pytest.approx(total, rel=rel)
    assert m.params_active == pytest.approx(active, rel=rel)


def test_deepseek_v3_caches_the_mla_latent():
    m = catalog.get_model("deepseek-v3")
    assert m.mla is not None and m.dense_layers == 3 and m.moe_layers == 58
    assert m.kv_values_per_token_per_layer == m.mla.kv_lora_rank + m.mla.qk_rope_head_dim


def test_families_follow_the_validation_format():
    models = catalog.models()
    for name in ("gpt-3-175b", "opt-175b", "gpt-j-6b"):
        assert models[name].family == "gpt" and not models[name].gated_mlp
    assert models["gpt-3-175b"].biases and models["gpt-3-175b"].dropout
    assert models["falcon-180b"].parallel_attn and not models["falcon-180b"].gated_mlp
    for m in models.values():
        assert m.is_moe == (m.family == "moe"), m.name
        assert m.heads % m.kv_heads == 0


def test_cluster_for_applies_the_preset_then_the_overrides():
    """One cluster builder for train, serve and validation cases: the part's preset, then the
    caller's node size and NIC rate; a smaller node stays inside a rack-scale NVLink domain."""
    gb200 = catalog.get_accelerator("gb200")
    c = catalog.cluster_for(gb200, 144)
    assert (c.gpus_per_node, c.scale_up_domain, c.nic_bw_bytes_per_s_per_gpu) == (4, 72, 400e9 / 8)
    c = catalog.cluster_for(gb200, 144, gpus_per_node=2)
    assert (c.gpus_per_node, c.scale_up_domain, c.nic_bw_bytes_per_s_per_gpu) == (2, 72, 400e9 / 8)
    h100 = catalog.get_accelerator("h100-sxm")
    c = catalog.cluster_for(h100, 32, gpus_per_node=16, nic_bw_bytes_per_s_per_gpu=25e9)
    assert (c.gpus_per_node, c.scale_up_domain, c.nic_bw_bytes_per_s_per_gpu) == (16, 0, 25e9)
    assert catalog.default_cluster("h100-sxm", 16) == catalog.cluster_for(h100, 16)


def test_fp4_gemms_use_the_measured_fp4_efficiency_on_blackwell():
    """Azure's GB200 run: cuBLASLt FP4 GEMM 7,627.6 of 10,000 TFLOP/s (0.76), FP8 2,906.9 of 5,000
    (0.58). FP4 work uses the FP4 figure; parts without one fall back to the FP8 figure."""
    gb = catalog.get_accelerator("gb200")
    assert gb.gemm_efficiency("fp4") == pytest.approx(7627.6 / 10000, abs=0.005)
    assert gb.gemm_efficiency("fp8") == pytest.approx(2906.9 / 5000, abs=0.005)
    assert catalog.get_accelerator("h100-sxm").efficiency.gemm_fp4 is None


@pytest.mark.parametrize("written, entry", [
    ("Llama-3.1-70B", "llama-3.1-70b"),
    ("meta-llama/Llama-3.1-70B-Instruct", "llama-3.1-70b"),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "llama-3-8b"),
    ("llama3-70b", "llama-3-70b"),
    ("meta-llama/Llama-2-70b-chat-hf", "llama-2-70b"),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
    ("mistralai/Mistral-7B-v0.1", "mistral-7b"),
    ("Qwen/Qwen3-8B", "qwen3-8b"),
    ("deepseek-ai/DeepSeek-V3-Base", "deepseek-v3"),
    ("deepseek-ai/DeepSeek-R1", "deepseek-v3"),  # the same architecture (aliases)
    ("deepseek-ai/DeepSeek-R1-0528", "deepseek-v3"),
    ("google/gemma-2-9b-it", "gemma-2-9b"),
])
def test_models_are_found_as_people_write_them(written, entry):
    """Case, the Hugging Face organisation and fine-tune tokens do not change the architecture."""
    assert catalog.get_model(written) is catalog.models()[entry]


@pytest.mark.parametrize("written", ["llama-3-71b", "mistralai/Mistral-7B-v0.3", "qwen3-9b", "llama-3.3-70b"])
def test_other_checkpoints_are_not_guessed(written):
    """A size or version the catalog lacks (Mistral-7B v0.3 has another vocabulary; Llama-3.3 has no
    sourced entry) stays an error with suggestions instead of silently taking a neighbour."""
    from parasim.errors import InputError

    with pytest.raises(InputError, match="did you mean"):
        catalog.get_model(written)


def test_every_alias_names_one_entry_and_accelerators_ignore_case():
    index = catalog._model_index()
    assert set(index.values()) == set(catalog.models())
    assert catalog.get_accelerator("H100-SXM") is catalog.accelerators()["h100-sxm"]
    assert catalog.get_accelerator("MI300X") is catalog.accelerators()["mi300x"]


@pytest.mark.parametrize("gpu", ["a100-sxm-40gb", "a100-sxm-80gb", "a100-pcie-80gb"])
def test_a100_attention_is_the_forward_of_azures_forward_plus_backward_figure(gpu):
    """Azure's A100 FlashAttention-2 figure, 179.5 TFLOP/s at hd64, batch 2, seq 8k, is the benchmark
    script's forward + backward column (its PyTorch row, 46.0, is the FA2 paper's Fig. 4a fwd + bwd
    bar). The catalog's `attention` is the forward; with the backward at 2.5x the FLOPs and the
    cost model's backward rate, forward + backward must give the figure back."""
    from parasim.cost.layer import ATTN_BWD_EFF_RATIO, ATTN_BWD_FLOPS_RATIO

    acc = catalog.get_accelerator(gpu)
    fwd_rate = acc.peak("bf16") / 1e12 * acc.efficiency.attention
    both = (1 + ATTN_BWD_FLOPS_RATIO) / (1 / fwd_rate + ATTN_BWD_FLOPS_RATIO / (ATTN_BWD_EFF_RATIO * fwd_rate))
    assert both == pytest.approx(179.5, rel=0.005)
