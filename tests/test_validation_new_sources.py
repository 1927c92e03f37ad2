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
    model at the row's sequence length: the row and the model are the ones the page measured."""
    tokens = _printed(r"Tokens/sec/GPU (\d+)", case.source)
    tflops = _printed(r"Model TFLOP/sec/GPU (\d+)", case.source)
    assert case.measured["tokens_per_s_per_gpu"] == tokens
    per_token = _model_flops_per_token(case.model, case.plan["seq_len"])
    assert tflops * 1e12 / tokens == pytest.approx(per_token, rel=0.01)


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
    """Every case is scored; the one false OOM is the documented GB200 405B row (embedding and loss
    pipeline slots the format cannot state)."""
    res = predict_training(case)
    assert res.status in ("ok", "false_oom"), res.reason
    assert (res.status == "false_oom") == (case.id == "mbridge-2602-gb200-llama31-405b-256gpu-fp8")
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
