"""validation/mlperf-training-llm.yaml: MLPerf Training H100 submissions (GPT-3 175B, v3.0-v4.1;
Llama 3.1 405B, v5.0, and the same on H200), step times read from the MLLOG result logs.

Each row's `source` quotes the log's global_batch_size and gradient_accumulation_steps lines, the
config's mini batch (GBS / DP) and parallel sizes, and the step-time reading. The tests re-derive the
batch arithmetic the submitters' README states (DP = world / (TP x PP x CP), GBS = MINIBS x DP,
micro-batches = GBS / DP / micro-batch) from the case and check it against the quoted lines, so a
mistyped row shows up here. They assert nothing about the simulator's own constants.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parasim.specs.validation_case import load_cases
from parasim.validation.training import predict_case

FILE = Path(__file__).resolve().parents[1] / "validation" / "mlperf-training-llm.yaml"
CASES = load_cases(FILE)
IDS = [c.id for c in CASES]


def _quoted(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in the source"
    return m.group(1)


def test_the_file_covers_gpt3_over_rounds_and_405b():
    assert len(CASES) == 25
    assert len(set(IDS)) == len(IDS)
    gpt3 = [c for c in CASES if "gpt3" in c.id]
    assert {re.search(r"-v(\d\.\d)-", c.id).group(1) for c in gpt3} == {"3.0", "3.1", "4.0", "4.1"}
    assert min(c.cluster.gpus for c in gpt3) == 256 and max(c.cluster.gpus for c in gpt3) == 11616
    assert sum("405b" in c.id for c in CASES) == 7
    assert {c.cluster.accelerator.id for c in CASES} == {"h100-sxm", "h200-sxm"}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rows_follow_the_config_name_and_the_log(case):
    p = case.plan
    gpus = case.cluster.gpus
    # the log's submission_platform names the node count: "<nodes>x<system>"
    nodes = int(_quoted(r'submission_platform "(\d+)x', case.source))
    assert nodes * 8 == gpus == p["tp"] * p["pp"] * p["cp"] * p["dp"]
    assert int(_quoted(r"global_batch_size (\d+)", case.source)) == p["global_batch"]
    micro = p["global_batch"] // (p["dp"] * p["micro_batch"])
    assert micro * p["dp"] * p["micro_batch"] == p["global_batch"]
    assert float(_quoted(r"gradient_accumulation_steps ([\d.]+)", case.source)) == micro
    assert int(_quoted(r"TENSOR_MODEL_PARALLEL (\d+)", case.source)) == p["tp"]
    assert int(_quoted(r"PIPELINE_MODEL_PARALLEL (\d+)", case.source)) == p["pp"]
    assert int(_quoted(r"INTERLEAVED_PIPELINE (\d+)", case.source)) == p["virtual_stages"]
    assert int(_quoted(r"MICRO_BATCH_SIZE (\d+)", case.source)) == p["micro_batch"]
    # the config file's name: <nodes>x<GPUs per node>x<mini batch = GBS / DP>x...
    name = re.search(r"config_DGXH[12]00_(\d+)x8x(\d+)x", case.source)
    assert int(name.group(1)) == nodes
    minibs = p["global_batch"] // p["dp"]
    assert int(name.group(2)) == minibs or f"the run used MINIBS {minibs}" in case.source


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_step_time_is_the_one_the_source_derives(case):
    quoted = float(_quoted(r"= ([\d.]+) s; per file", case.source))
    assert case.measured["step_time_s"] == quoted
    # each file's own reading lies within 2 % of the pooled median
    per_file = [float(x) for x in re.findall(r"result_\d+\.txt ([\d.]+) s \(", case.source)]
    assert len(per_file) >= 3
    assert all(abs(x / quoted - 1) < 0.02 for x in per_file)


def test_the_block_reading_states_its_step_count():
    """v4.x rows: the block's epoch_count is tokens; steps = tokens / (GBS x sequence)."""
    for case in CASES:
        if "block_stop" not in case.source:
            continue
        tokens = int(_quoted(r"epoch_count is (\d+) tokens", case.source))
        steps = int(_quoted(r"tokens = (\d+) steps", case.source))
        assert steps * case.plan["global_batch"] * case.plan["seq_len"] == tokens


def test_every_row_is_predicted_and_fits():
    for case in CASES:
        res = predict_case(case)
        assert res.status == "ok", (case.id, res.reason)
