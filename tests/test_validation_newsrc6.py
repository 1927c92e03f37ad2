"""The GPUStack Performance Lab blocks added in session 31 (docs/serving.md, "New public sources, 2026-12-07 (VI)"):
SGLang 0.5.5.post1 Qwen3-14B-FP8 on one H100, GLM-4.6 under vLLM 0.11.0 (TP 8) and SGLang 0.5.3 (TP 4) on H200,
GLM-4.5-Air under vLLM 0.11.0 (TP 4) and SGLang 0.5.4.post2 (TP 4, EP 4) on A100 80GB, gpt-oss-20b 128/4 bursts
under vLLM 0.11.0 on one H100 and one A100.

Every case's source repeats the serve command and the whole `vllm bench serve` printout. These tests derive each
case back from that text (request count, token totals, duration, GPU count and part, engine release, precision),
check the printout's own consistency (request rate = N / duration, mean E2E inside the run, percentiles), and
check the model shapes against the parameter counts the model publishers state; the simulator is checked only
against conservation laws, never against its own numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from tests.conftest import check_burst_printout, check_fixed_length_row, check_printed_totals

FILE = Path(__file__).resolve().parents[1] / "validation" / "gpustack-more-serving.yaml"
CASES = load_cases(FILE)
#: the file's inclusion rule (its header, as in gpustack-vllm-dense.yaml): blocks that generated less than this
#: share of requests x output length (early EOS: the client sets no --ignore-eos) are left out
MIN_GENERATED_SHARE = 0.97
#: the pages' "Hardware" lines -> (the catalog part, the GPUs the line states)
HARDWARE = {"A single NVIDIA H100 SXM GPU": ("h100-sxm", 1), "A single NVIDIA A100 SXM 80GB GPU": ("a100-sxm-80gb", 1),
            "8 × NVIDIA H200 SXM GPUs on a single node": ("h200-sxm", 8),
            "4 × NVIDIA A100 SXM 80GB GPUs on a single node": ("a100-sxm-80gb", 4)}


def _serve(case) -> str:
    return re.search(r'serving script": (.*?); "', case.source).group(1)


def test_file_holds_the_rows_its_header_describes():
    """Twenty-three rows: Qwen3-14B-FP8 SGLang on H100 (four blocks), GLM-4.6 vLLM on H200 (three; 32,000/100 left
    out by the EOS rule), GLM-4.6-FP8 SGLang on H200 (four), GLM-4.5-Air vLLM and SGLang on A100 (four each),
    gpt-oss-20b 128/4 on H100 and A100, baseline and --async-scheduling (four); unique ids."""
    assert len(CASES) == 23
    assert len({c.id for c in CASES}) == len(CASES)
    groups = {"sglang-0.5.5.post1-qwen3-14b-fp8-h100": 4, "vllm-0.11.0-glm-4.6-h200": 3,
              "sglang-0.5.3-glm-4.6-fp8-h200": 4, "vllm-0.11.0-glm-4.5-air-a100-tp4": 4,
              "sglang-0.5.4.post2-glm-4.5-air-a100-tp4-ep4": 4, "gpt-oss-20b": 4}
    for key, n in groups.items():
        assert sum(key in c.id for c in CASES) == n, key
    assert all(c.id.endswith("-128-4") for c in CASES if "gpt-oss-20b" in c.id)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rows_match_the_printed_totals(case):
    check_printed_totals(case, MIN_GENERATED_SHARE)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_printout_obeys_littles_law(case):
    """A burst of N requests sent at t = 0, duration T: the printed request rate is N / T (both printed to 0.01);
    mean E2E = mean TTFT + (output - 1) x mean TPOT is at most T (Little's law: the time-averaged number in the
    system, N x mean E2E / T, is at most N); no TTFT exceeds the run; median and mean TTFT lie below its P99."""
    check_burst_printout(case)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_is_the_serve_command_and_the_stated_setup(case):
    """GPUs = TP = the serve command's -tp / --tp (none: one), within the node the "Hardware" line states; the
    part is that line's; the release is the page's "Engine Version" line for the engine the command starts;
    weights fp8 for a -FP8 checkpoint, fp4 for gpt-oss (MXFP4 release), else bf16; every request sent at once."""
    src, serve = case.source, _serve(case)
    m = re.search(r"(?:-tp|--tp|--tp-size|--tensor-parallel-size)[ =](\d+)", serve)
    ep = re.search(r"--ep-size[ =](\d+)", serve)
    assert ("-ep" + ep.group(1) in case.id) if ep else "-ep" not in case.id
    tp = int(m.group(1)) if m else 1
    assert case.plan["tp"] == tp and case.cluster.gpus == tp
    hardware = re.search(r'"Experimental Setup": (.*?), (?:vLLM|SGLang):', src).group(1)
    part, node_gpus = HARDWARE[hardware]
    assert case.cluster.accelerator.id == part and tp <= node_gpus
    engine = "SGLang" if "sglang.launch_server" in serve else "vLLM"
    assert serve.startswith("python3 -m sglang.launch_server" if engine == "SGLang" else "vllm serve ")
    release = re.search(engine + r": v([0-9][\w.]*);", src).group(1)
    assert case.software == f"{engine.lower()} {release}"
    checkpoint = re.search(r"(?:vllm serve|--model-path|--model) (\S+)", serve).group(1)
    expected = "fp8" if checkpoint.endswith("-FP8") else "fp4" if "gpt-oss" in checkpoint else "bf16"
    assert case.plan["weights"] == expected
    assert case.workload["arrival"] == "burst" and not re.search(r"--request-rate|--max-concurrency", src)
    assert ("--async-scheduling" in serve) == case.id.endswith("-async-128-4")


def _params(m) -> tuple[float, float]:
    """(total, active non-embedding) parameters by hand from the case's shapes: attention q and o hidden x heads
    x head_dim each, k and v hidden x kv_heads x head_dim each; a SwiGLU FFN 3 x hidden x width; the router
    hidden x experts; embedding and LM head vocab x hidden each. Biases, norms and MTP layers left out."""
    attn = 2 * m.hidden * m.heads * m.head_dim + 2 * m.hidden * m.kv_heads * m.head_dim
    expert = 3 * m.hidden * m.moe_ffn_hidden
    moe_layers = m.layers - m.dense_layers
    dense = m.dense_layers * 3 * m.hidden * m.ffn_hidden
    router = m.hidden * m.experts
    total = (m.layers * attn + dense + moe_layers * ((m.experts + m.shared_experts) * expert + router)
             + 2 * m.vocab * m.hidden)
    active = (m.layers * attn + dense
              + moe_layers * ((m.experts_per_token + m.shared_experts) * expert + router))
    return total, active


def test_glm46_shapes_give_the_published_parameter_counts():
    """GLM-4.5 / 4.6: "355 billion total parameters with 32 billion active" (huggingface/transformers
    docs/source/en/model_doc/glm4_moe.md). The hand count without the MTP layer is 352.8 B (the MTP layer, one
    more MoE layer, adds about 3.9 B) and 32.1 B active outside the embeddings."""
    m = next(c for c in CASES if "glm-4.6" in c.id).model
    total, active = _params(m)
    assert total / 1e9 == pytest.approx(355, rel=0.01)
    assert active / 1e9 == pytest.approx(32, rel=0.01)
    shape = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn_hidden", "vocab", "experts",
             "experts_per_token", "shared_experts", "moe_ffn_hidden", "dense_layers")
    assert all([getattr(c.model, f) for f in shape] == [getattr(m, f) for f in shape] for c in CASES if "glm-4.6" in c.id)


def test_glm45_air_shapes_give_the_published_parameter_counts():
    """GLM-4.5-Air: "106 billion total parameters and 12 billion active parameters" (the same transformers doc).
    Hand count without the MTP layer: 106.9 B total, 12.2 B active outside the embeddings."""
    m = next(c for c in CASES if "glm-4.5-air" in c.id).model
    total, active = _params(m)
    assert total / 1e9 == pytest.approx(106, rel=0.01)
    assert active / 1e9 == pytest.approx(12, rel=0.02)


def test_gpt_oss_20b_shapes_give_the_published_parameter_counts():
    """gpt-oss-20b: 21 B total, 3.6 B active (OpenAI's gpt-oss model card, "21B parameters with 3.6B active");
    active counts the LM head, not the input embedding: 3.03 B + 0.58 B."""
    m = next(c for c in CASES if "gpt-oss-20b" in c.id).model
    total, active = _params(m)
    assert total / 1e9 == pytest.approx(21, abs=0.15)
    assert (active + m.vocab * m.hidden) / 1e9 == pytest.approx(3.6, abs=0.05)


def test_qwen3_14b_shapes_give_the_published_parameter_counts():
    """Qwen3-14B: 14.8 B total, 13.2 B non-embedding (Qwen's model card, "Model Overview")."""
    m = next(c for c in CASES if "qwen3-14b" in c.id).model
    attn = 2 * m.hidden * m.heads * m.head_dim + 2 * m.hidden * m.kv_heads * m.head_dim
    non_embedding = m.layers * (attn + 3 * m.hidden * m.ffn_hidden)
    assert non_embedding / 1e9 == pytest.approx(13.2, abs=0.05)
    assert (non_embedding + 2 * m.vocab * m.hidden) / 1e9 == pytest.approx(14.8, abs=0.05)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rows_run_and_conserve_tokens(case):
    """Every row predicts, and its tokens add up (conftest.check_fixed_length_row)."""
    check_fixed_length_row(case)
