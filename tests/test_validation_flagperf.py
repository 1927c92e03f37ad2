"""validation/flagperf-training.yaml: BAAI FlagPerf's NVIDIA training rows (DeepSpeed ZeRO-3 and Megatron-Core,
one 8-GPU Hopper node). Each case is derived back from the cells its `source` quotes: the measured value is
the row's token/p/s, the layout multiplies to 8 GPUs, the global batch is what the configs give (DeepSpeed:
micro-batch 1 x GAS 1 x DP 8; Megatron: the script's 512), and the printed MFU is FlagPerf's own formula
(token/p/s x 6 x its nominal parameter count / 989 TFLOP/s, run_pretraining.py), which ties each row's two
printed numbers together."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from parasim.validation.training import plan_for_case, predict_case

CASES = load_cases(Path(__file__).resolve().parents[1] / "validation" / "flagperf-training.yaml")
#: FlagPerf's MFU numerators (run_pretraining.py of each benchmark): 7e9, 6e9, 8e9 parameters
NOMINAL = {"llama2-7b": 7e9, "chatglm3-6b": 6e9, "llama3-8b": 8e9}


def _row(case) -> list[str]:
    m = re.search(r'"([^"]*\| [\d.]+%[^"]*)"', case.source)
    assert m, case.id
    return [c.strip() for c in m.group(1).split("|")]


def test_ids():
    assert [c.id for c in CASES] == ["flagperf-llama2-7b-deepspeed-zero3-h800-1x8",
                                     "flagperf-chatglm3-6b-deepspeed-zero3-h100-1x8",
                                     "flagperf-llama3-8b-megatron-h100-1x8-bf16",
                                     "flagperf-llama3-8b-megatron-h100-1x8-fp8"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_row_cells(case):
    cells = _row(case)
    tps = case.measured["tokens_per_s_per_gpu"]
    assert str(tps) in cells
    p = case.plan
    assert p["tp"] * p["pp"] * p["dp"] == case.cluster.gpus == 8
    model = next(k for k in NOMINAL if k.replace("-", "") in case.id.replace("-", ""))
    # an FP8 row prints a range whose lower end is against the 1,979 TFLOP/s FP8 peak (README note)
    peak, mfu = (1979e12, cells[-1].split("-")[0]) if "-" in cells[-1] else (989e12, cells[-1])
    assert tps * 6 * NOMINAL[model] / peak == pytest.approx(float(mfu.rstrip("%")) / 100, abs=0.0006)
    if "deepspeed" in case.id:
        assert p["zero"] == 3 and p["global_batch"] == p["micro_batch"] * p["dp"] == 8 and p["seq_len"] == 4096
    else:
        layout = next(c for c in cells if c.startswith("PP"))
        assert layout == f"PP{p['pp']}DP{p['dp']}TP{p['tp']}" and p["global_batch"] == 512 and p["seq_len"] == 8192


def test_chatglm3_shape():
    m = CASES[1].model
    assert (m.layers, m.hidden, m.heads, m.kv_heads, m.ffn_hidden, m.vocab) == (28, 4096, 32, 2, 13696, 65024)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_predicts_with_the_stated_kernels(case):
    plan, _ = plan_for_case(case)
    assert plan.attention == "flash2"
    assert plan.kernels == ("eager" if "deepspeed" in case.id else "fused")
    assert predict_case(case).status == "ok"
