"""CUDA-graph padding of decode batches (`ServingPlan.cuda_graph_batch_sizes`; TensorRT-LLM's
`cuda_graph_config: enable_padding: true`).

What the engine does (tensorrt_llm/_torch/pyexecutor/model_engine.py, v1.0): the captured sizes are
filtered to min(max_batch_size, max_num_tokens) (`_filter_cuda_graph_batch_sizes`, which captures
that bound instead of a larger listed size when padding is on), and a decode-only batch runs the
graph of the next captured size, its extra slots one dummy generation request of one cached token.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.engines.trtllm import TRTLLM_10_PERF_OVERVIEW_GRAPH_SIZES, cuda_graph_padding
from parasim.errors import InputError
from parasim.serving.itercost import IterationCost
from parasim.serving.plan import ServingPlan
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.specs.validation_case import load_cases
from parasim.validation.serving import _workload, case_plan

ROOT = Path(__file__).resolve().parents[1]
LLAMA = get_model("llama-3-8b")
H100 = get_accelerator("h100-sxm")
SIZES = (1, 2, 4, 8, 16, 32)


def cost(**kw) -> IterationCost:
    args = dict(tp=1, pp=1, weights="bf16", kv_dtype="bf16", act_dtype="bf16", overhead_s=2e-3) | kw
    return IterationCost(LLAMA, ClusterSpec(accelerator=H100, gpus=1), **args)


PADDED, PLAIN = cost(cuda_graph_batch_sizes=SIZES), cost()


@settings(max_examples=60, deadline=None)
@given(n=hst.integers(1, 40), ctx=hst.integers(1, 4000))
def test_decode_batch_costs_the_next_captured_size(n, ctx):
    """A decode-only batch of n costs what an unpadded batch of the next captured size p costs whose
    p - n extra sequences hold one cached token each; above the largest size it is not padded."""
    p = next((s for s in SIZES if s >= n), n)
    want = PLAIN.time_s(p, 0.0, 0.0, p, n * ctx + (p - n), p)
    assert PADDED.time_s(n, 0.0, 0.0, n, float(n * ctx), n) == pytest.approx(want, rel=1e-12)
    assert PADDED.decode_step_s(n)(float(n * ctx)) == PADDED.time_s(n, 0.0, 0.0, n, float(n * ctx), n)
    assert PADDED.breakdown(n, 0.0, 0.0, n, float(n * ctx), n)["total"] == pytest.approx(
        PADDED.time_s(n, 0.0, 0.0, n, float(n * ctx), n), rel=1e-12)


def test_mixed_iterations_are_not_padded():
    """Iterations with prefill work run eagerly at their own size."""
    args = (5 + 300, 300 * 301 / 2.0, 0.0, 5, 5 * 100.0, 6)
    assert PADDED.time_s(*args) == PLAIN.time_s(*args)


def test_host_floor_counts_real_sequences():
    """The executor's per-sequence host work is for the real requests, not the dummy slots."""
    per_seq = 5e-3  # 25 ms for the 5 real sequences, above the GPU step (40 ms if the 8 slots counted)
    c = cost(cuda_graph_batch_sizes=SIZES, host_s_per_sequence=per_seq)
    assert c.time_s(5, 0.0, 0.0, 5, 500.0, 5) == pytest.approx(5 * per_seq + 2e-3, rel=1e-12)


@pytest.mark.parametrize(("max_batch", "max_tokens", "tail"), [
    (4096, 8192, (2048, 4096)),  # 4096 is listed: kept, 8192 dropped
    (1792, 27648, (1024, 1792)),  # 2048 above the bound: 1792 captured instead
    (1792, 1500, (1024, 1500)),  # max_num_tokens binds first
    (100, 8192, (64, 100)),
])
def test_filter_follows_the_executor(max_batch, max_tokens, tail):
    text = "trtllm-bench, PyTorch backend, CUDA graphs with padding (v1.0 perf-overview)"
    got = cuda_graph_padding("tensorrt-llm 1.0", text, max_batch=max_batch, max_num_tokens=max_tokens)
    assert got[-2:] == tail and got == tuple(sorted(set(got)))
    assert set(got[:-1]) <= set(TRTLLM_10_PERF_OVERVIEW_GRAPH_SIZES)


def test_source_states_padding_and_sizes():
    listed = "cuda_graph_config: enable_padding: true, batch_sizes: [8, 16, 64]"
    assert cuda_graph_padding("tensorrt-llm 1.2", listed, max_batch=256, max_num_tokens=8192) == (8, 16, 64)
    # sizes without padding run eagerly when they do not match: not this term
    assert cuda_graph_padding("tensorrt-llm 1.2", "cuda_graph_config batch_sizes [128]", max_batch=128,
                              max_num_tokens=1151) is None
    # padding stated but no list known for that release: nothing assumed
    assert cuda_graph_padding("tensorrt-llm 1.2", "CUDA graphs with padding", max_batch=256,
                              max_num_tokens=8192) is None


def test_the_v10_moe_rows_run_padded():
    cases = load_cases(ROOT / "validation" / "trtllm-1.0-moe-perf-overview.yaml")
    case = next(c for c in cases if c.id.endswith("b200-fp4-tp1-128-2048"))
    plan, choices, _ = case_plan(case, _workload(case))
    assert plan.cuda_graph_batch_sizes[-1] == min(plan.max_batch, plan.token_budget)
    assert any(ch.field == "cuda_graph_batch_sizes" for ch in choices if hasattr(ch, "field"))


def test_attention_dp_rows_say_padding_is_not_modelled():
    """The DeepSeek-R1 ADP rows keep their plans (ep > 1 has its own lockstep cost)."""
    for case in load_cases(ROOT / "validation" / "trtllm-deepseek-r1-adp.yaml"):
        plan, _, _ = case_plan(case, _workload(case))
        assert plan.cuda_graph_batch_sizes is None


@pytest.mark.parametrize(("value", "extra"), [
    ([], {}), ([0, 4], {}), ([4, 2], {}), ([2, 2], {}), ("1,2", {}), ([1.5], {}), ([True], {}),
    ([1, 2], {"spec_method": "ngram", "num_speculative_tokens": 2, "spec_acceptance": 0.5}),
    ([1, 2], {"overlap": "nanoflow"}),
])
def test_bad_sizes_name_the_field(value, extra):
    with pytest.raises(InputError) as e:
        ServingPlan(cuda_graph_batch_sizes=value, **extra)
    assert e.value.field == "cuda_graph_batch_sizes"


def test_config_key_and_exit_codes(tmp_path):
    """The config key takes a YAML list; a bad one is exit 2 naming it."""
    def run(sizes: str):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"model: llama-3-8b\ngpu: h100-sxm\nrequests: 40\nburst: true\nmax_batch: 24\n"
                       f"scheduler: continuous\ncuda_graph_batch_sizes: {sizes}\n")
        return subprocess.run([sys.executable, "-m", "parasim", "serve", "-c", str(cfg), "--json"],
                              capture_output=True, text=True, timeout=300)
    ok = run("[1, 2, 4, 8, 16, 32]")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["summary"]["completed"] == 40
    bad = run("[8, 4]")
    assert bad.returncode == 2 and "cuda_graph_batch_sizes" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_launch_writes_the_padding_back():
    """--emit tensorrt-llm carries the captured sizes; vLLM's launch says it pads its own way."""
    import yaml

    from parasim.engines.launch import launch_for
    from parasim.specs.catalog import cluster_for

    cluster = cluster_for(H100, 1)
    plan = ServingPlan(scheduler="continuous", cuda_graph_batch_sizes=[1, 2, 4, 8])
    t = launch_for("trtllm", LLAMA, cluster, plan)
    graphs = yaml.safe_load(t.files["extra.yml"])["cuda_graph_config"]
    assert graphs == {"enable_padding": True, "batch_sizes": [1, 2, 4, 8]}
    v = launch_for("vllm", LLAMA, cluster, ServingPlan(scheduler="sarathi", cuda_graph_batch_sizes=[1, 2, 4, 8]))
    assert any("CUDA-graph sizes" in n for n in v.notes)
