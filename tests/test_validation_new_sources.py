"""The case files added from new public sources on 2026-12-07 (docs/training.md and docs/serving.md,
"New public sources, 2026-12-07"): each row as its source prints it, and each row runs.

The sources print more than the measured value a case keeps. These tests derive the extra printed
figures back from the case (a hand FLOP count, the command's batch and lengths), so a mistyped row
or a wrong catalog model shows up here, and they check the simulator's answer on these cases against
conservation laws rather than against its own numbers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from parasim.validation.serving import predict_case as predict_serving
from parasim.validation.training import plan_for_case, predict_case as predict_training
from tests.conftest import run_cli

SHIPPED = Path(__file__).resolve().parents[1] / "validation"
MBRIDGE = load_cases(SHIPPED / "mbridge-dense-training.yaml")
AMD = load_cases(SHIPPED / "amd-primus-training.yaml")
GAUDI = load_cases(SHIPPED / "gaudi-optimum-habana-fp8.yaml")
MOE = load_cases(SHIPPED / "moe-training-published.yaml")
MOE_NEW = [c for c in MOE if c.id.startswith(("mbridge-260401-", "mbridge-2606-"))]


def _printed(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in the source"
    return float(m.group(1).replace(",", ""))


def _model_flops_per_token(m, seq_len: int) -> float:
    """Megatron's model FLOPs per token, by hand: 6 x (every matmul weight: q/o h x h, k/v h x kv,
    SwiGLU 3 x h x ffn, the output layer h x vocab) plus causal attention, 12 x layers x seq x h / 2."""
    kv = m.kv_heads * (m.hidden // m.heads)
    per_layer = 2 * m.hidden * m.hidden + 2 * m.hidden * kv + 3 * m.hidden * m.ffn_hidden
    return 6 * (m.layers * per_layer + m.hidden * m.vocab) + 6 * m.layers * seq_len * m.hidden


@pytest.mark.parametrize("case", MBRIDGE, ids=[c.id for c in MBRIDGE])
def test_mbridge_rows_give_the_printed_model_tflops(case):
    """Model TFLOP/sec/GPU / Tokens/sec/GPU, both printed, is the FLOPs of one token of the catalog
    model at the row's sequence length: the row and the model are the ones the page measured.
    The 26.04.01 table's two columns disagree with each other by up to 2.2 % (its Tokens/sec/GPU
    values are rounded to 8 significant bits), so its rows get that much room."""
    tokens = _printed(r"Tokens/sec/GPU (\d+)", case.source)
    tflops = _printed(r"Model TFLOP/sec/GPU (\d+)", case.source)
    assert case.measured["tokens_per_s_per_gpu"] == tokens
    per_token = _model_flops_per_token(case.model, case.plan["seq_len"])
    rel = 0.025 if "26.04.01 NeMo Container" in case.source else 0.01
    assert tflops * 1e12 / tokens == pytest.approx(per_token, rel=rel)


@pytest.mark.parametrize("case", MBRIDGE + AMD, ids=[c.id for c in MBRIDGE + AMD])
def test_training_layouts_fill_the_printed_gpus(case):
    p = case.plan
    assert p["tp"] * p["pp"] * p["cp"] * p["dp"] == case.cluster.gpus
    assert p["global_batch"] % (p["dp"] * p["micro_batch"]) == 0


def test_amd_rows_quote_the_table():
    """Each row's micro-batch and throughput are the blog table's "Batch" and "Measured 8-Node"."""
    for case in AMD:
        assert case.plan["micro_batch"] == _printed(r"Batch (\d+)", case.source)
        assert case.measured["tokens_per_s_per_gpu"] == _printed(r"Measured 8-Node \(tok/s/GPU\) ([\d,]+)", case.source)
        assert case.cluster.gpus == 64 and case.cluster.accelerator.id == "mi325x"


def test_amd_fsdp_rows_run_as_fsdp2():
    plans = {c.id: plan_for_case(c)[0] for c in AMD}
    assert {i: p.zero for i, p in plans.items()} == {c.id: 3 if "fsdp" in c.id else 1 for c in AMD}
    assert all(p.fsdp_layout == "per_param" for p in plans.values() if p.zero == 3)


@pytest.mark.parametrize("case", MBRIDGE + AMD, ids=[c.id for c in MBRIDGE + AMD])
def test_training_cases_run(case):
    """Every case is scored and every run fits: the GB200 405B TP 4 / PP 16 rows (26.02, 26.04.01,
    26.06), false OOMs while FP8 activations and weights were counted at 16 bits, fit with
    Transformer Engine's one-byte saved inputs and FP8 parameters (docs/training.md)."""
    res = predict_training(case)
    assert res.status == "ok", res.reason
    assert res.predicted["tokens_per_s_per_gpu"] > 0


@pytest.mark.parametrize("case", GAUDI, ids=[c.id for c in GAUDI])
def test_gaudi_rows_quote_the_command(case):
    """One static batch of `bs` prompts on `num_cards` devices, as the entry's command runs it."""
    bs = _printed(r"--batch_size (\d+)", case.source)
    assert case.workload["requests"] == case.plan["max_batch"] == bs == _printed(r"bs (\d+)", case.source)
    assert case.workload["prompt_tokens"] == _printed(r"--max_input_tokens (\d+)", case.source)
    assert case.workload["output_tokens"] == _printed(r"--max_new_tokens (\d+)", case.source)
    assert case.plan["tp"] == case.cluster.gpus == _printed(r"num_cards (\d+)", case.source)
    assert case.measured["output_tokens_per_s"] == _printed(r"ref_perf (\d+)", case.source)


def test_gaudi_static_batches_conserve_tokens():
    """A static batch ends together: output tokens/s = batch x output length / the batch's time,
    and no request starts after t = 0 (burst)."""
    for case in GAUDI:
        res = predict_serving(case)
        assert res.status == "ok", res.reason
        p = res.predicted
        n, out = case.workload["requests"], case.workload["output_tokens"]
        assert p["output_tokens_per_s"] == pytest.approx(n * out / p["e2e_p99_s"], rel=0.02)
        assert p["queueing_p99_s"] == pytest.approx(0.0, abs=1e-9)


def test_gaudi_prefill_heavy_rows_are_slower_in_source_and_prediction():
    """Same model and devices: 2,048 input tokens per request give fewer output tokens/s than 128
    (the published direction), and the prediction keeps it."""
    by = {(c.model.name, c.plan["tp"], c.workload["prompt_tokens"], c.workload["output_tokens"]): c for c in GAUDI}
    pairs = [(k, (k[0], k[1], 2048, 128)) for k in by if k[2:] == (128, 128) and (k[0], k[1], 2048, 128) in by]
    assert len(pairs) >= 5
    for short, long in pairs:
        a, b = by[short], by[long]
        assert a.measured["output_tokens_per_s"] > b.measured["output_tokens_per_s"]
        assert predict_serving(a).predicted["output_tokens_per_s"] > predict_serving(b).predicted["output_tokens_per_s"]


def test_validate_cli_scores_the_three_files_by_source():
    """Through the CLI, as `make validation` runs them: exit 0, every case of the three files in the
    JSON, and a per-file summary for each."""
    files = [SHIPPED / f for f in ("mbridge-dense-training.yaml", "amd-primus-training.yaml",
                                   "gaudi-optimum-habana-fp8.yaml")]
    r = run_cli("validate", str(files[0]), "--extra", str(files[1]), "--extra", str(files[2]), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["cases"]) == len(MBRIDGE) + len(AMD) + len(GAUDI)
    assert {Path(f).name for f in out["summary_by_file"]} == {f.name for f in files}


def _flops_per_token_printed(case) -> float:
    return _printed(r"Model TFLOP/sec/GPU (\d+)", case.source) * 1e12 / _printed(r"Tokens/sec/GPU (\d+)", case.source)


@pytest.mark.parametrize("case", MOE_NEW, ids=[c.id for c in MOE_NEW])
def test_new_moe_rows_quote_their_row_and_preset(case):
    """The 26.04.01 / 26.06 MoE rows: the measured value is the row's Tokens/sec/GPU; its printed
    FLOPs per token equal those of the 26.02 rows of the same model (the same model and sequence
    measured); the layout fills the printed GPUs; every stack fact the case states is quoted with
    its preset reason in `source`; and the case runs and fits (the run happened)."""
    assert case.measured["tokens_per_s_per_gpu"] == _printed(r"Tokens/sec/GPU (\d+)", case.source)
    older = [_flops_per_token_printed(c) for c in MOE
             if c.id.startswith("mbridge-2602-") and c.model.name == case.model.name]
    assert older and all(_flops_per_token_printed(case) == pytest.approx(f, rel=0.01) for f in older)
    p = case.plan
    assert p["tp"] * p["pp"] * p["cp"] * p["dp"] == case.cluster.gpus == _printed(r"#-GPUs (\d+)", case.source)
    assert p["ep"] == _printed(r"EP (\d+)", case.source)
    for key in ("recompute", "recompute_modules", "moe_a2a", "moe_a2a_overlap", "tp_comm_overlap", "etp"):
        if p.get(key) is not None:
            value = str(p[key]).lower() if isinstance(p[key], bool) else str(p[key])
            assert f"{key}: {value}" in case.source, key
    res = predict_training(case)
    assert res.status == "ok", res.reason
