"""The GPUStack Performance Lab dense-model vLLM file (docs/serving.md, "New public sources, 2026-12-07 (V)"):
each row as its page prints it, each row's setup as its page states it, and each row runs.

Every case's source repeats the serve command and the whole `vllm bench serve` printout. These tests derive the
case back from that text (request count, token totals, duration, GPU, engine release) and check that the printout
is self-consistent (Little's law for a burst, percentiles inside the run); the model shapes are checked against the
parameter counts Qwen publishes, and the simulator only against conservation laws, never against its own numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from tests.conftest import check_burst_printout, check_fixed_length_row, check_printed_totals

FILE = Path(__file__).resolve().parents[1] / "validation" / "gpustack-vllm-dense.yaml"
CASES = load_cases(FILE)
#: the file's inclusion rule (its header): blocks that generated less than this share of requests x output
#: length (early EOS: the client sets no --ignore-eos) are left out
MIN_GENERATED_SHARE = 0.97
#: the page's "Hardware" line -> the catalog part
HARDWARE = {"A single NVIDIA H100 SXM GPU": "h100-sxm", "A single NVIDIA A100 SXM 80GB GPU": "a100-sxm-80gb"}
#: Qwen's model cards (https://huggingface.co/Qwen/Qwen3-14B, https://huggingface.co/Qwen/Qwen3-32B, "Model
#: Overview"): number of parameters, total and non-embedding, in billions
PUBLISHED_PARAMS_B = {"qwen3-14b": (14.8, 13.2), "qwen3-32b": (32.8, 31.2)}



def test_file_holds_the_rows_its_header_describes():
    """Ten rows (Qwen3-14B on H100: four blocks; Qwen3-32B on H100 and on A100: three each, their 32,000-token
    blocks left out), unique ids, all vLLM 0.11.0 on one GPU."""
    assert len(CASES) == 10
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum("qwen3-14b-h100" in c.id for c in CASES) == 4
    assert sum("qwen3-32b-h100" in c.id for c in CASES) == 3
    assert sum("qwen3-32b-a100" in c.id for c in CASES) == 3
    assert all(c.software == "vllm 0.11.0" for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rows_match_the_printed_totals(case):
    check_printed_totals(case, MIN_GENERATED_SHARE)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_printout_obeys_littles_law(case):
    """A burst of N requests sent at t = 0 and finished by the end of the run, duration T: the printed request
    rate is N / T (to its two decimals); each request's E2E is its TTFT plus (output - 1) of its own mean gaps,
    so the mean E2E is mean TTFT + (output - 1) x mean TPOT (exact when every request generated its full
    output), and Little's law puts the time-averaged number of requests in the system, N x mean E2E / T, at no
    more than N (mean E2E <= T); no request's TTFT exceeds the run (P99 TTFT <= T); the median and mean lie
    below the P99. The rate check allows for both printed figures' rounding to 0.01."""
    check_burst_printout(case)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_is_the_serve_command_and_the_stated_setup(case):
    """One GPU and TP 1 (the serve command has no -tp / --tensor-parallel-size); the accelerator is the page's
    "Hardware" line; the client sent every request at once (no --request-rate, no --max-concurrency), so
    arrival is a burst; BF16 weights (the Qwen/Qwen3-* checkpoints, no quantization flag); the release is the
    page's "vLLM: v..." line."""
    src = case.source
    serve = re.search(r'"Baseline serving script": (.*?); "', src).group(1)
    assert serve.startswith("vllm serve Qwen/Qwen3-") and not re.search(r"-tp|--tensor-parallel-size|--quant", serve)
    assert case.plan["tp"] == 1 and case.cluster.gpus == 1
    hardware = re.search(r'"Experimental Setup": (.*?), vLLM:', src).group(1)
    assert case.cluster.accelerator.id == HARDWARE[hardware]
    assert case.workload["arrival"] == "burst"
    assert not re.search(r"--request-rate|--max-concurrency", src)
    assert case.plan["weights"] == "bf16"
    assert re.search(r"vLLM: v" + re.escape(case.software.split()[1]) + ";", src)


@pytest.mark.parametrize("model", sorted(PUBLISHED_PARAMS_B))
def test_model_shapes_give_the_published_parameter_counts(model):
    """Hand count from the case's shapes (no biases, untied embeddings, QK-norm and RMSNorm weights ignored:
    under 0.01 %): attention q and o are hidden x heads x head_dim each, k and v hidden x kv_heads x head_dim
    each; the SwiGLU MLP is 3 x hidden x ffn; embedding and LM head vocab x hidden each. It matches Qwen's
    published totals to their one decimal."""
    m = next(c for c in CASES if model in c.id).model
    attn = 2 * m.hidden * m.heads * m.head_dim + 2 * m.hidden * m.kv_heads * m.head_dim
    non_embedding = m.layers * (attn + 3 * m.hidden * m.ffn_hidden)
    total = non_embedding + 2 * m.vocab * m.hidden
    published_total_b, published_non_embedding_b = PUBLISHED_PARAMS_B[model]
    assert total / 1e9 == pytest.approx(published_total_b, abs=0.05)
    assert non_embedding / 1e9 == pytest.approx(published_non_embedding_b, abs=0.05)
    shape = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn_hidden", "vocab", "tied_embeddings")
    assert all([getattr(c.model, f) for f in shape] == [getattr(m, f) for f in shape] for c in CASES if model in c.id)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rows_run_and_conserve_tokens(case):
    """Every row predicts, and its tokens add up (conftest.check_fixed_length_row)."""
    check_fixed_length_row(case)
