"""`context_pass` separate (serving.context_pass): TurboMind v0.1.0a1 runs a pass's prompts, less each
one's last token, as a forward of their own, then one decode forward that takes those last tokens with
the running batch. Checked against the rule read from the source, invariants, and the input edge."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from conftest import run_cli
from parasim.errors import InputError
from parasim.serving import ServingPlan, simulate
from parasim.serving.context_pass import SeparateContextCost
from parasim.serving.itercost import IterationCost
from parasim.serving.workload import generate
from parasim.specs.catalog import cluster_for, get_accelerator, get_model

MODEL = get_model("llama-2-70b")
CLUSTER = cluster_for(get_accelerator("a100-sxm-80gb"), 4)
PLAN = ServingPlan(tp=4, weights="fp16", scheduler="continuous", context_pass="separate")
SEP = SeparateContextCost.for_plan(MODEL, CLUSTER, PLAN)
JOINT = IterationCost.for_plan(MODEL, CLUSTER, dataclasses.replace(PLAN, context_pass="joint"))


def _ttft_alone_s(plan: ServingPlan, prompt: int) -> float:
    wl = generate(requests=1, burst=True, prompt_tokens=prompt, output_tokens=4)
    return simulate(MODEL, CLUSTER, plan, wl, seed=0).summary["ttft_mean_s"]


def test_one_token_prompt_is_a_decode_step():
    """ContextDecode skips a prompt with nothing before its last token (`missing > 1`): the first token
    of a one-token prompt is the decode step of one sequence over that token."""
    assert _ttft_alone_s(PLAN, 1) == pytest.approx(JOINT.decode_step_s(1)(1.0), rel=1e-12)


def test_first_token_costs_the_context_forward_plus_a_decode_step():
    """A lone c-token prompt: the context forward of c - 1 tokens, then the decode forward of its last
    token over c cached ones, one loop pass (one host overhead)."""
    c = 2048
    pairs = (c - 1) * c / 2.0
    context = JOINT.time_s(c - 1, pairs, 0.0, 0, 0.0, 0)
    step = JOINT.decode_step_s(1)(float(c))
    assert _ttft_alone_s(PLAN, c) == pytest.approx(context + step - JOINT.overhead_s, rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(hst.integers(0, 64), hst.integers(0, 8), hst.integers(1, 4096), hst.floats(0, 4e5))
def test_invariants(decoders, prompts, prompt_len, ctx):
    """No prompt: the plain iteration, to the bit. With prompts: finite, and never shorter than its own
    decode forward (every running sequence plus each prompt's last token over its whole prompt), since
    the context forward comes on top. The breakdown adds up to the time. (Two forwards are not always
    dearer than one fused forward: the fused one may cross a GEMM tile boundary the split ones do not.)"""
    tokens = decoders + prompts * prompt_len
    if tokens == 0:
        return
    decode_ctx = ctx + decoders if decoders else 0.0
    pairs = prompts * prompt_len * (prompt_len + 1) / 2.0
    args = (tokens, pairs, 0.0, decoders, decode_ctx, decoders + prompts)
    sep = SEP.time_s(*args)
    if prompts == 0:
        assert sep == JOINT.time_s(*args)
    else:
        seqs = decoders + prompts
        decode_forward = JOINT.time_s(seqs, 0.0, 0.0, seqs, decode_ctx + prompts * prompt_len, seqs)
        assert 0 < sep < float("inf") and sep >= decode_forward * (1 - 1e-12)
    assert SEP.breakdown(*args)["total"] == pytest.approx(sep, rel=1e-9)


@pytest.mark.parametrize("bad, says", [("fused", "joint, separate"), ("SEPARATE", "joint, separate"),
                                       ("", "non-empty"), (2, "string")])
def test_unknown_mode_is_refused(bad, says):
    with pytest.raises(InputError) as e:
        ServingPlan(context_pass=bad)
    assert e.value.field == "context_pass" and says in e.value.message


@pytest.mark.parametrize("extra, says", [({"spec_method": "ngram", "num_speculative_tokens": 2, "spec_acceptance": 0.5}, "speculative"),
                                         ({"overlap": "nanoflow"}, "intra-device overlap")])
def test_combinations_not_modelled_are_refused_by_name(extra, says):
    with pytest.raises(InputError) as e:
        ServingPlan(context_pass="separate", **extra)
    assert e.value.field == "context_pass" and says in e.value.message


def test_compiled_loop_states_why_it_does_not_run_it(monkeypatch):
    monkeypatch.setenv("PARASIM_FASTPATH", "1")
    wl = generate(requests=4000, rate=50.0, seed=1, prompt_tokens=128, output_tokens=16)
    with pytest.raises(InputError) as e:
        simulate(MODEL, CLUSTER, PLAN, wl, seed=0)
    assert "separate context pass" in e.value.message


@pytest.mark.parametrize("value, says", [("bogus", "'bogus' is not one of joint, separate"), ("3", "text")])
def test_cli_config_key_bad_value_is_exit_2(tmp_path, value, says):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: llama-3-8b\ngpu: h100-sxm\nrequests: 20\nrate: 2\ncontext_pass: {value}\n")
    r = run_cli("serve", "-c", str(cfg), "--json")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "context_pass" in line and says in line


def test_cli_config_key_runs(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: llama-3-8b\ngpu: h100-sxm\nrequests: 20\nrate: 2\ncontext_pass: separate\n")
    r = run_cli("serve", "-c", str(cfg), "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    assert os.linesep not in r.stderr.strip() or not r.stderr.strip()
