"""validation/maxtext-llama2-h100-training.yaml and validation/paxml-gpt-training.yaml: JAX/XLA training stacks
(MaxText, Paxml) on H100 and A100, from Google's MaxText README and NVIDIA JAX-Toolbox's READMEs.

The tests derive each case back from the cells its `source` quotes: the plan multiplies to the GPU count and
the global batch is GPUs x BS / GPU (one micro-batch per step); the MaxText row's tokens/s per GPU is its
printed TFLOP/s over MaxText's own FLOPs per token (6 x all parameters + causal attention), written out here
by hand from the Llama 2 7B shape; the JAX-Toolbox MaxText row's step time and sequences/s agree.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from parasim.validation.training import predict_case

ROOT = Path(__file__).resolve().parents[1] / "validation"
MAXTEXT = load_cases(ROOT / "maxtext-llama2-h100-training.yaml")
PAXML = load_cases(ROOT / "paxml-gpt-training.yaml")


def _num(label: str, text: str) -> float:
    m = re.search(re.escape(label) + r" ([\d.,]+)", text)
    assert m, f"{label!r} not in the source"
    return float(m.group(1).replace(",", ""))


def test_files_hold_the_rows():
    assert [c.id for c in MAXTEXT] == [*(f"maxtext-a3-llama2-7b-{n}vm" for n in (1, 2, 4, 8, 16)),
                                       "jax-toolbox-maxtext-llama2-7b-8gpu"]
    assert len(PAXML) == 7 and len({c.id for c in PAXML}) == 7


def test_llama2_7b_parameter_count():
    # 32 layers of (4 h^2 attention + 3 h f SwiGLU + 2 h norm scales), embedding and untied output V h, final norm
    h, f, v, layers = 4096, 11008, 32000, 32
    assert layers * (4 * h * h + 3 * h * f + 2 * h) + 2 * v * h + h == 6_738_415_616
    m = MAXTEXT[0].model
    assert (m.layers, m.hidden, m.heads, m.kv_heads, m.ffn_hidden, m.vocab) == (layers, h, 32, 32, f, v)


@pytest.mark.parametrize("vms,tflops", [(1, 492), (2, 422), (4, 407), (8, 409), (16, 375)])
def test_maxtext_tokens_per_second_from_its_tflops(vms, tflops):
    case = next(c for c in MAXTEXT if c.id == f"maxtext-a3-llama2-7b-{vms}vm")
    assert _num("TFLOP/sec/chip", case.source) == tflops and f'"{vms}x A3 (h100-80gb-8)"' in case.source
    params, layers, heads, head_dim, seq = 6_738_415_616, 32, 32, 128, 4096
    per_token = 6 * params + 12 * heads * layers * head_dim * seq / 2  # maxtext_utils at efb6d9e4a
    assert per_token == 43_651_719_168
    assert case.measured["tokens_per_s_per_gpu"] == round(tflops * 1e12 / per_token)
    # {n}vm.sh: dcn_data_parallelism = n VMs x ici_fsdp_parallelism = 8, per_device_batch_size = 4
    assert f"dcn_data_parallelism={vms}" in case.source or vms == 1
    assert case.cluster.gpus == case.plan["dp"] == 8 * vms
    assert case.plan["micro_batch"] * case.plan["dp"] == case.plan["global_batch"] == 4 * 8 * vms
    assert case.plan.get("fsdp_shard", 8) == 8 and case.plan["seq_len"] == 4096


def test_jax_toolbox_maxtext_row_is_consistent():
    case = MAXTEXT[-1]
    step = _num("step time", case.source)
    assert step == case.measured["step_time_s"] == 0.721
    gbs = _num("GBS", case.source)
    assert gbs == case.plan["global_batch"] == 16 == _num("BS / GPU", case.source) * _num("#GPUs", case.source)
    assert "22.19 sequences/s" in case.source
    assert gbs / step == pytest.approx(22.19, abs=0.005)  # the printed sequences/s


@pytest.mark.parametrize("case", PAXML, ids=[c.id for c in PAXML])
def test_paxml_row_derives_its_plan(case):
    gpus, fsdp, bs = _num("#GPUs", case.source), _num("FSDP", case.source), _num("BS / GPU", case.source)
    assert gpus == fsdp == case.cluster.gpus == case.plan["dp"] == 256
    assert case.plan["micro_batch"] == bs and case.plan["global_batch"] == gpus * bs
    assert case.measured["samples_per_s"] == _num("Sequences/Sec", case.source)
    size = "175B" if "Size 175B" in case.source else "5B"
    assert case.plan["recompute"] == ("full" if size == "175B" else "dots")  # SAVE_NOTHING / SAVE_DOT_WITH_NO_BATCH_DIM
    assert case.plan["precision"] == ("fp8" if "TE FP8" in case.source else "bf16")
    # parameters: 5B = 24 layers x 12 h^2 (4096) ~ 4.8e9 + embeddings; 175B = 96 x 12 x 12288^2
    m = case.model
    assert 12 * m.layers * m.hidden**2 == (4_831_838_208 if size == "5B" else 173_946_175_488)


@pytest.mark.parametrize("case", MAXTEXT + PAXML, ids=[c.id for c in MAXTEXT + PAXML])
def test_every_case_predicts(case):
    res = predict_case(case)
    assert res.status == "ok"  # every run ran (and the MaxText rows state fits: true)
    assert set(res.predicted) >= {k for k in case.measured if k != "fits"}


@pytest.mark.parametrize("software,pre", [
    ("MaxText 2024-04 (JAX/XLA)", True), ("Paxml 2024-06 (JAX/XLA)", True), ("stack 2024-07", False),
    ("torchtitan 2024-12 (PyTorch FSDP2, eager mode)", False), ("KempnerForge 2026-04", False),
    ("NeMo 24.07", True), ("NeMo 24.09", False), ("Megatron-LM 2023", True), ("torchtitan 2025", False)])
def test_pre_fa3_reads_a_stated_month(software, pre):
    """FlashAttention-3 appeared in July 2024 (arXiv 2407.08608): a stack dated by month before that
    ran an earlier attention generation, as a year before 2024 and a NeMo release before 24.09 do."""
    from parasim.validation.training import _pre_fa3

    assert _pre_fa3(software) is pre


def test_jax_cases_run_the_pre_fa3_attention():
    from parasim.validation.training import plan_for_case

    for case in MAXTEXT + PAXML:
        plan, _ = plan_for_case(case)
        assert plan.attention == "flash2", case.id
