"""A sort-based top-k / top-p sampler's per-row cost (`sampler`, cost.sampler).

vLLM V1's PyTorch-native sampler sorts every sampled row's whole vocabulary. Checked by hand
arithmetic (bytes per vocabulary entry read off the passes, at the H100's catalog bandwidth), as an
exact per-logit-row addition to the iteration (LM head part, so the compiled loop, which takes the
LM head per logit-row count from the cost model, stays byte-identical to the Python engine), and
at the edge (a bad value is InputError / exit 2; the default leaves plans' mappings as they were)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.cost.sampler import SAMPLERS
from parasim.errors import InputError
from parasim.serving import ServingPlan, generate
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

from tests.conftest import check_serve_key_slows_decode

H100 = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=1)


def _hand_row_s(bytes_per_entry: int, vocab: int) -> float:
    # the H100 SXM's 3.35 TB/s (NVIDIA datasheet) at the catalog's sustained 0.91 (STREAM-like copy)
    return bytes_per_entry * vocab / (3.35e12 * 0.91)


def test_bytes_per_entry_by_hand():
    """Sort (PyTorch's full-sort path, < 128 rows): fill 8, four cub onesweep passes of fp32 key +
    int2 value read and written 4 x 24, key histogram 4, segment-id pass 24, post-process 24 = 156.
    Top-p adds softmax 8, cumsum 8, compare 5, masked_fill 9 = 30; top-k compare 5 + masked_fill 9 =
    14; back to vocabulary order (in-place scatter) 16; random sampling 8 + 8 + 4 + 12 = 32."""
    from parasim.cost import sampler
    assert sampler.SORT_BYTES == 156
    assert sampler.SAMPLER_BYTES["sort_top_p"] == 156 + 30 + 16 + 32
    assert sampler.SAMPLER_BYTES["sort_top_k_top_p"] == 156 + 14 + 30 + 16 + 32
    assert sampler.SAMPLER_BYTES["none"] == 0


@pytest.mark.parametrize("model, sampler, entries", [("qwen3-14b", "sort_top_k_top_p", 248),
                                                     ("llama-3.1-8b", "sort_top_p", 234)])
def test_decode_step_grows_by_the_rows_sort(model, sampler, entries):
    """Every decoding sequence adds its row's bytes; a prefill chunk that samples nothing adds none."""
    m = get_model(model)
    base = IterationCost.for_plan(m, H100, ServingPlan(tp=1))
    with_s = IterationCost.for_plan(m, H100, ServingPlan(tp=1, sampler=sampler))
    row = _hand_row_s(entries, m.vocab)
    for n in (1, 26, 86, 128):
        ctx = 700.0 * n
        assert with_s.time_s(n, 0.0, 0.0, n, ctx, n) - base.time_s(n, 0.0, 0.0, n, ctx, n) == pytest.approx(
            n * row, rel=1e-9)
        assert with_s.decode_step_s(n)(ctx) == pytest.approx(with_s.time_s(n, 0.0, 0.0, n, ctx, n), rel=1e-12)
    # a 512-token prefill chunk that does not finish its prompt samples no row
    assert with_s.time_s(512, 512 * 513 / 2.0, 0.0, 0, 0.0, 0) == base.time_s(512, 512 * 513 / 2.0, 0.0, 0, 0.0, 0)
    # Qwen3-14B (151,936 entries): 12.4 us a row on one H100; Llama-3.1-8B (128,256): 9.8 us
    assert row == pytest.approx({"qwen3-14b": 12.36e-6, "llama-3.1-8b": 9.84e-6}[model], rel=1e-3)


def test_plan_field_is_checked_and_left_out_by_default():
    with pytest.raises(InputError) as e:
        ServingPlan(sampler="flashinfer")
    assert e.value.field == "sampler"
    assert "sampler" not in ServingPlan().to_mapping()
    assert ServingPlan(sampler="sort_top_p").to_mapping()["sampler"] == "sort_top_p"


@settings(max_examples=60, deadline=None)
@given(value=hst.one_of(hst.text(max_size=20), hst.integers(), hst.none(), hst.floats(allow_nan=True),
                        hst.booleans(), hst.lists(hst.integers(), max_size=2)))
def test_hostile_values_are_input_errors(value):
    if value in SAMPLERS:
        ServingPlan(sampler=value)
        return
    with pytest.raises(InputError) as e:
        ServingPlan(sampler=value)
    assert e.value.field == "sampler"


def test_cli_config_key(tmp_path):
    """The config key reaches the plan and slows decode; a bad value is one line, exit 2."""
    check_serve_key_slows_decode(tmp_path, "model: qwen3-14b\ngpu: h100-sxm\nrequests: 64\nburst: true\n"
                                 "prompt_tokens: 128\noutput_tokens: 256\n", "sampler", "sort_top_k_top_p", "quicksort")


@pytest.mark.parametrize("sched", ["vllm", "sarathi", "sglang"])
def test_compiled_loop_equals_python_engine(sched):
    """The LM-head table the compiled loop reads carries the sampler: both engines agree byte for byte."""
    from tests.test_serving_fastloop import both, same
    model = get_model("qwen3-14b")
    wl = generate(requests=200, rate=20.0, prompt_tokens=300, output_tokens=120, seed=3)
    slow, fast, ran = both(ServingPlan(scheduler=sched, sampler="sort_top_k_top_p"), wl, model=model)
    assert ran
    same(slow, fast)
