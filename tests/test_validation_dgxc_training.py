"""validation/dgxc-benchmarking-training.yaml: NVIDIA's DGX Cloud Benchmarking recipes (release v24.11.1),
H100 step times of six NeMo recipes in weak-scaling series from 8 to 2,304 GPUs.

Each row's `source` quotes the three figures the README table prints: the step time (the case's
measurement), the throughput and the MFU. The tests derive the last two back from the case (the batch,
the sequence length and a hand FLOP count), so a mistyped row, a wrong batch or a wrong model shows up
here; and they check the simulator on these rows against what weak scaling conserves, not against its
own numbers.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from parasim.validation.training import predict_case

FILE = Path(__file__).resolve().parents[1] / "validation" / "dgxc-benchmarking-training.yaml"
CASES = load_cases(FILE)
IDS = [c.id for c in CASES]

#: H100 SXM dense peaks the README's MFU divides by ("989 TFLOPS" BF16, "1979 TFLOPS" FP8)
README_PEAK_FLOPS = {"bf16": 989e12, "fp8": 1979e12}


def _printed(label: str, text: str) -> float:
    m = re.search(re.escape(label) + r" ([\d.% ]+?)(?:,| \(|%)", text)
    assert m, f"{label!r} not in the source"
    return float(m.group(1).replace(" ", "").rstrip("%"))


def _series(case) -> tuple[str, int]:
    """A weak-scaling series: one table (model, precision) at one model depth."""
    return re.sub(r"-\d+gpu$", "", case.id), case.model.layers


def test_the_file_has_the_six_recipes_in_both_precisions():
    assert len(CASES) == 70
    assert {re.sub(r"-(bf16|fp8)-\d+gpu$", "", c.id) for c in CASES} == {
        f"dgxc-2411-h100-{m}" for m in ("gpt3-175b", "llama3.1-8b", "llama3.1-70b", "llama3.1-405b",
                                        "nemotron4-15b", "nemotron4-340b")}
    assert max(c.cluster.gpus for c in CASES) == 2304


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rows_quote_their_step_time_and_fill_the_gpus(case):
    assert case.measured["step_time_s"] == _printed("Training step time (seconds per step)", case.source)
    p = case.plan
    assert p["tp"] * p["pp"] * p["cp"] * p["dp"] == case.cluster.gpus
    assert p["global_batch"] % (p["dp"] * p["micro_batch"]) == 0
    assert f"GBS={p['global_batch']}" in case.source or f"GBS {p['global_batch']}" in case.source


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_printed_throughput_is_the_global_batch_over_the_step(case):
    """The README's own formula, seq x GBS / step: the printed throughput follows from the case's batch,
    sequence length and step time (to the printed rounding of the step). One column's throughput and MFU
    repeat its neighbour's per-GPU figures (Llama 3.1 70B BF16, 2,048 GPUs: / 14.92 s, the 1,024-GPU step);
    its source says so, and it is checked against that step."""
    step = case.measured["step_time_s"]
    m = re.search(r"seq x GBS / ([\d.]+) s, not", case.source)
    if m:
        assert case.id == "dgxc-2411-h100-llama3.1-70b-bf16-2048gpu"
        step = float(m.group(1))
    tokens = case.plan["seq_len"] * case.plan["global_batch"] / step
    assert _printed("Throughput in tokens per second", case.source) == pytest.approx(tokens, rel=3e-3)


def test_gpt3_mfu_follows_from_a_hand_flop_count():
    """GPT-3 175B: the README's model FLOPs per sequence, 2048 x (24 L h^2 + 12 L h s + 48 L h^2 + 6 V h)
    (its note: 2.20E+15), over the step, the GPUs and the precision's dense peak, is the printed MFU."""
    gpt3 = [c for c in CASES if "gpt3" in c.id]
    assert len(gpt3) == 10
    for c in gpt3:
        m, s = c.model, c.plan["seq_len"]
        flops = s * (24 * m.layers * m.hidden**2 + 12 * m.layers * m.hidden * s + 48 * m.layers * m.hidden**2
                     + 6 * m.vocab * m.hidden)
        assert flops == pytest.approx(2.20e15, rel=5e-3)
        mfu = c.plan["global_batch"] * flops / c.measured["step_time_s"] / c.cluster.gpus
        mfu /= README_PEAK_FLOPS[c.plan["precision"]]
        assert 100 * mfu == pytest.approx(_printed("Model flops utilization", c.source), abs=0.15)


def test_printed_mfu_is_proportional_to_tokens_per_gpu_within_a_series():
    """At a fixed model and sequence length the MFU is throughput per GPU times a constant: each table's
    printed MFU / (printed tokens/s / GPUs) is one number (the truncated 405B depths excluded)."""
    ratios = defaultdict(list)
    for c in CASES:
        per_gpu = _printed("Throughput in tokens per second", c.source) / c.cluster.gpus
        ratios[_series(c)].append(_printed("Model flops utilization", c.source) / per_gpu)
    for key, r in ratios.items():
        if len(r) > 1:
            assert max(r) == pytest.approx(min(r), rel=0.01), key


def test_weak_scaling_never_predicts_a_faster_step_with_more_gpus():
    """Weak scaling keeps each GPU's work (micro-batches, layers, sequence) fixed as the data-parallel
    degree grows; only more ranks join the collectives and the slowest-GPU wait. The predicted step
    time cannot fall as GPUs are added within one series."""
    steps = defaultdict(list)
    for c in CASES:
        res = predict_case(c)
        assert res.predicted["step_time_s"] > 0, c.id
        steps[_series(c)].append((c.cluster.gpus, res.predicted["step_time_s"]))
    for key, pts in steps.items():
        times = [t for _, t in sorted(pts)]
        assert times == sorted(times), key


def test_every_row_is_scored_and_fits():
    """All 70 rows ran: each gets a predicted step time and fits in 80 GB. The Nemotron-4 340B rows at
    DP 2 fit only with the recipe's bf16 optimizer state (optim.dtype bf16: `param_state: bf16_optimizer`);
    with Megatron's fp32 master and moments they would not (the memory check below, by hand)."""
    for c in CASES:
        res = predict_case(c)
        assert "step_time_s" in res.predicted
        assert res.status == "ok", (c.id, res.reason)


def test_the_340b_rows_state_the_recipe_optimizer_and_need_it_at_dp_2():
    """Per GPU at TP 8 x PP 8 the 340B model holds about 340e9 / 64 parameters; Megatron's fp32 optimizer
    state sharded over DP 2 (12 / 2 B) would add 6 B/param where the bf16 state adds 3: about 16 GB."""
    rows = [c for c in CASES if "nemotron4-340b" in c.id]
    assert rows and all(c.plan["param_state"] == "bf16_optimizer" and c.plan["tp_comm_overlap"] is False for c in rows)
    dp2 = [c for c in rows if c.plan["dp"] == 2]
    assert len(dp2) == 2
    for c in dp2:
        fp32_state = load_cases(FILE)[CASES.index(c)]
        fp32_state.plan["param_state"] = "megatron"
        assert predict_case(fp32_state).status == "false_oom"
