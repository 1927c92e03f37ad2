"""validation/mlperf-inference-llm.yaml (docs/serving.md, "MLPerf Inference (v4.1, v5.1)") and the two
TensorRT-LLM settings its sources state that the flows before it did not read: the executor's capacity
policy (`batch_scheduler_policy max_util` / `no_evict`), chunked context on or off, and a TensorRT-engine
run on a release whose benchmark tool defaults to the PyTorch backend.

The file's numbers are checked against the figures each case's source quotes (typed in the source
from the MLPerf logs), not against the code's constants.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.engines.trtllm import TrtllmSetup, _stated_policy, tensorrt_engine, trtllm_setup
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.validation_case import load_cases
from parasim.validation.serving import case_plan

SHIPPED = Path(__file__).resolve().parents[1] / "validation"
CASES = load_cases(SHIPPED / "mlperf-inference-llm.yaml")


def _num(rx: str, text: str) -> float:
    m = re.search(rx, text)
    assert m, (rx, text[:200])
    return float(m.group(1))


def test_file_size_and_ids():
    assert len(CASES) == 21
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum("offline" in c.id for c in CASES) == 9
    assert sum("interactive" in c.id for c in CASES) == 3


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_follows_its_log(case):
    """Offline: a burst of the log's sample count, output length = tokens / samples of the log, the
    measured rate the log's tokens per second. Server: Poisson at the scheduled rate the log states."""
    src, wl = case.source, case.workload
    if "Offline" in src:
        tok = _num(r"Tokens per second ([0-9.]+)", src)
        smp = _num(r"Samples per second ([0-9.]+)", src)
        assert wl["arrival"] == "burst"
        assert case.measured == {"output_tokens_per_s": tok}
    else:
        tok = _num(r"Completed tokens per second ([0-9.]+)", src)
        smp = _num(r"Completed samples per second ([0-9.]+)", src)
        assert wl["arrival"]["poisson_rate"] == _num(r"Scheduled samples per second ([0-9.]+)", src)
        assert case.measured["ttft_mean_s"] == pytest.approx(_num(r"first token mean (\d+) ns", src) * 1e-9)
        assert case.measured["tpot_p99_s"] == pytest.approx(_num(r"time to output token mean \d+ ns, p99 (\d+) ns", src) * 1e-9)
        assert wl["requests"] == _num(r"result_query_count (\d+)", src)
    assert wl["output_tokens"] == round(tok / smp)
    # the dataset means: OpenOrca 222.33 input tokens (Llama 2), CNN/DailyMail 870.73 (Llama 3.1 8B),
    # the Llama 3.1 405B set 9,428.64
    model = re.match(r"mlperf\d+-(.+?)-(?:offline|server|interactive)-", case.id).group(1)
    assert wl["prompt_tokens"] == {"llama3.1-8b": 871, "llama3.1-405b": 9429, "llama2-70b": 222}[model]
    # Hopper runs FP8 (v4.1), Blackwell FP4 (v5.1); both with an FP8 KV cache
    blackwell = case.cluster.accelerator.id in ("b200", "gb200")
    assert case.plan["weights"] == ("fp4" if blackwell else "fp8") and case.plan["kv_cache"] == "fp8"
    assert ("v5.1" in src) == blackwell


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_honours_the_harness_settings(case):
    """MAX_UTILIZATION (KV booked per step), chunking off in v4.1 and on in v5.1, the stated
    max_num_tokens and batch size, and the C++ executor (no PyTorch overlap scheduler) in both."""
    plan, _, engine = case_plan(case)
    assert engine == "tensorrt-llm"
    assert plan.kv_reservation == "incremental"
    v51 = "v5.1" in case.source
    assert plan.scheduler == ("sarathi" if v51 else "continuous")
    # the runtime max_num_tokens and the layout, as the source states them
    assert plan.token_budget == _num(r"--max_num_tokens (\d+)", case.source)
    tp = _num(r"(?:TP|tensor_parallelism )(\d)", case.source)
    pp = _num(r"pipeline_parallelism (\d)", case.source) if "pipeline_parallelism" in case.source else 1
    assert (plan.tp, plan.pp, plan.replicas) == (tp, pp, case.cluster.gpus // (tp * pp))
    assert plan.max_batch == case.plan["max_batch"]
    assert not plan.schedule_ahead


def _setup(**kw) -> TrtllmSetup:
    base = dict(max_num_tokens=2048, max_batch=256, kv_fraction=0.9, chunked=True, flow="f", kv_reservation="full")
    base.update(kw)
    return TrtllmSetup(**base)


@pytest.mark.parametrize("text, reservation, chunked", [
    ("'batch_scheduler_policy': 'max_util'", "incremental", True),
    ("--trtllm_batch_sched_policy max_util", "incremental", True),
    ("--scheduler_policy max_utilization --enable_chunked_context", "incremental", True),
    ("--scheduler_policy guaranteed_no_evict, enable_chunked_context: false", "full", False),
    ("batch_scheduler_policy: no_evict, 'enable_chunked_context': True", "full", True),
    ("chunked context, in-flight batching", "full", True),
])
def test_stated_policy(text, reservation, chunked):
    got = _stated_policy(text, _setup())
    assert (got.kv_reservation, got.chunked) == (reservation, chunked)
    assert (got.max_num_tokens, got.max_batch, got.kv_fraction) == (2048, 256, 0.9)


@settings(max_examples=200, deadline=None)
@given(hst.text(alphabet=hst.characters(blacklist_categories=("Cs",)), max_size=200))
def test_stated_policy_leaves_other_text_alone(text):
    """Text naming neither setting changes nothing; any text is read without raising."""
    got = _stated_policy(text, _setup())
    if not re.search(r"polic|chunked", text, re.IGNORECASE):
        assert got == _setup()
    assert got.kv_reservation in ("full", "incremental") and isinstance(got.chunked, bool)


@pytest.mark.parametrize("software, engine", [
    ("tensorrt-llm 1.0 (mlpinf branch; TensorRT engine built by trtllm-build, C++ executor)", True),
    ("tensorrt-llm 1.0 (pytorch backend)", False),
    ("tensorrt-llm 1.0", False),
    ("tensorrt-llm 0.17", True),
    ("tensorrt-llm 0.18 (pytorch backend)", False),
])
def test_engine_flow_named_in_the_software(software, engine):
    assert tensorrt_engine(software) is engine
    setup = trtllm_setup(software, get_model("llama-2-70b"), get_accelerator("b200"), tp=1, pp=1, isl=222.0,
                         max_isl=222, osl=273.0, weights="fp4", kv_dtype="fp8")
    assert setup.cpp_runtime is engine and setup.chunked is engine
