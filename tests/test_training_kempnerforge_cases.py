"""validation/kempnerforge-h200-training.yaml: the shapes, batches and settings the report states.

The report prints each model's parameter count and each row's step time; the case file states the
architecture and the batch instead. These tests derive the printed figures back from the case file
by hand, so a mistyped shape or batch shows up here, and check that the adapter runs each row as
the stack the report describes (PyTorch FSDP2, SDPA's FlashAttention-2, compiled or eager).
"""

from __future__ import annotations

import pytest

from parasim.specs.validation_case import load_cases
from parasim.validation.training import plan_for_case

FILE = "validation/kempnerforge-h200-training.yaml"
CASES = load_cases(FILE)


def _params(m) -> float:
    """Llama block by hand: q/o (h x h), k/v (h x kv_heads x head_dim), SwiGLU 3 x h x f, two norms;
    untied embedding and output, final norm."""
    hd = m.hidden // m.heads
    block = 2 * m.hidden * m.hidden + 2 * m.hidden * m.kv_heads * hd + 3 * m.hidden * m.ffn_hidden + 2 * m.hidden
    return m.layers * block + 2 * m.vocab * m.hidden + m.hidden


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_shapes_give_the_printed_parameter_counts(case):
    printed = 8.03e9 if "8b" in case.id else 14.84e9  # the report's "Parameters" column
    assert abs(_params(case.model) - printed) < 0.005e9


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_batch_and_throughput_give_the_printed_step_time(case):
    """global batch x seq_len / tok/s = the report's step time (to its two decimals)."""
    printed = {"1gpu": 3.13, "fsdp2": 3.50, "fsdp4": 3.36, "fsdp8": 14.81}
    key = next(k for k in printed if k in case.id)
    step = case.plan["global_batch"] * case.plan["seq_len"] / case.measured["tokens_per_s"]
    assert step == pytest.approx(printed[key], abs=0.006)


def test_adapter_runs_the_stated_stack():
    plans = {c.id: plan_for_case(c)[0] for c in CASES}
    assert {p.attention for p in plans.values()} == {"flash2"}  # SDPA's flash backend
    assert {i: p.kernels for i, p in plans.items() if "eager" in i} == {CASES[-1].id: "eager"}
    assert all(p.kernels == "compiled" for i, p in plans.items() if "compile" in i)
    assert all(p.fsdp_layout == "per_param" for p in plans.values() if p.zero == 3)
