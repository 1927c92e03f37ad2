"""Speculative decoding (`serve --spec-method ...`): the expected tokens per verify step, the
direction of its effect with load, and the memory its drafter takes."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.cost.memory import weight_bytes_per_gpu
from parasim.errors import InputError
from parasim.serving import ServingPlan, simulate
from parasim.serving.simulate import plan_pools
from parasim.serving.speculative import spec_cost, tokens_per_step
from parasim.serving.workload import generate
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from tests.conftest import run_cli

EAGLE = dict(spec_method="eagle", num_speculative_tokens=4, spec_acceptance=0.7)
NGRAM = dict(spec_method="ngram", num_speculative_tokens=4, spec_acceptance=0.4)


def test_tokens_per_step_hand_values():
    assert tokens_per_step(0.5, 1) == pytest.approx(1.5)  # 1 + a
    assert tokens_per_step(0.5, 3) == pytest.approx(1 + 0.5 + 0.25 + 0.125)
    assert tokens_per_step(1.0, 4) == 5.0  # every draft accepted: K + 1


@given(a=hst.floats(0.01, 1.0), k=hst.integers(1, 16))
def test_tokens_per_step_is_between_one_and_k_plus_one_and_grows_with_both(a, k):
    e = tokens_per_step(a, k)
    assert 1.0 <= e <= k + 1 + 1e-9
    assert tokens_per_step(a, k + 1) >= e - 1e-12
    assert tokens_per_step(min(1.0, a + 0.01), k) >= e - 1e-12


def _run(model, gpus, tp, rate, n, out_tokens, **spec):
    cluster = cluster_for(get_accelerator("h100-sxm"), gpus)
    wl = generate(requests=n, rate=rate, prompt_tokens=512, output_tokens=out_tokens, seed=1)
    return simulate(get_model(model), cluster, ServingPlan(tp=tp, scheduler="sarathi", **spec), wl).summary


def test_gain_at_low_load_shrinks_and_turns_to_a_loss_at_high_load():
    """vLLM's measurements (blog.vllm.ai, 2024-10-17, "How Speculative Decoding Boosts vLLM
    Performance by up to 2.8x"; Llama 3 70B on 4 H100): 1.5-2.8x lower latency at low QPS, and a
    slowdown (about 1.4x) at high QPS, where the verify pass's extra tokens cost compute."""
    low = {name: _run("llama-3-70b", 4, 4, 0.5, 60, 256, **spec)["tpot_mean_s"]
           for name, spec in (("plain", {}), ("eagle", EAGLE))}
    speedup = low["plain"] / low["eagle"]
    assert 1.5 <= speedup <= tokens_per_step(0.7, 4), low
    high = {name: _run("llama-3-8b", 1, 1, 200, 600, 128, **spec)["output_tokens_per_s"]
            for name, spec in (("plain", {}), ("ngram", NGRAM))}
    assert high["ngram"] < high["plain"], high


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rate=hst.floats(0.5, 50), k=hst.integers(1, 8), a=hst.floats(0.05, 1.0), method=hst.sampled_from(["eagle", "ngram"]))
def test_every_output_token_is_emitted_with_speculation(rate, k, a, method):
    s = _run("llama-3-8b", 1, 1, rate, 40, 64, spec_method=method, num_speculative_tokens=k, spec_acceptance=a)
    assert s["completed"] == 40
    assert s["output_tokens"] == 40 * 64


@settings(max_examples=30, deadline=None)
@given(b=hst.integers(1, 256), ctx=hst.integers(16, 4096), a=hst.floats(0.05, 0.95))
def test_a_decode_step_never_slows_when_more_drafts_are_accepted(b, ctx, a):
    model, cluster = get_model("llama-3-8b"), cluster_for(get_accelerator("h100-sxm"), 1)

    def step(acc):
        plan = ServingPlan(**{**EAGLE, "spec_acceptance": acc}).resolved(model)
        return spec_cost(model, cluster, plan, tp=1).time_s(b, 0.0, 0.0, b, float(b * ctx), b)

    assert step(min(1.0, a + 0.05)) <= step(a) * (1 + 1e-12)


def test_draft_model_takes_its_weights_and_cache_from_the_kv_budget():
    """A draft model's weights and its KV per token (2 x layers x KV heads/TP x head_dim x 2 bytes)
    come out of the target's KV budget."""
    model, cluster = get_model("llama-3-70b"), cluster_for(get_accelerator("h100-sxm"), 4)
    plain = ServingPlan(tp=4).resolved(model)
    draft = ServingPlan(tp=4, spec_method="draft", draft_model="llama-3-8b", num_speculative_tokens=4,
                        spec_acceptance=0.7).resolved(model)
    (p,), _ = plan_pools(model, cluster, plain)
    (d,), _ = plan_pools(model, cluster, draft)
    d8 = get_model("llama-3-8b")
    assert d.kvb.weights - p.kvb.weights == pytest.approx(weight_bytes_per_gpu(d8, tp=4, weights="bf16"))
    assert d.kvb.kv_bytes_per_token - p.kvb.kv_bytes_per_token == 2 * 32 * (8 // 4) * 128 * 2
    assert d.blocks < p.blocks


@pytest.mark.parametrize("kw, field", [
    (dict(spec_method="eagle", num_speculative_tokens=4), "spec_acceptance"),
    (dict(spec_method="eagle", spec_acceptance=0.5), "num_speculative_tokens"),
    (dict(spec_method="draft", num_speculative_tokens=4, spec_acceptance=0.5), "draft_model"),
    (dict(spec_method="ngram", num_speculative_tokens=4, spec_acceptance=0.5, draft_model="llama-3-8b"), "draft_model"),
    (dict(spec_method="medusa", num_speculative_tokens=4, spec_acceptance=0.5), "spec_method"),
    (dict(num_speculative_tokens=4), "num_speculative_tokens"),
    (dict(spec_method="eagle", num_speculative_tokens=17, spec_acceptance=0.5), "num_speculative_tokens"),
    (dict(spec_method="eagle", num_speculative_tokens=2, spec_acceptance=math.nan), "spec_acceptance"),
    (dict(scheduler="disagg", spec_method="eagle", num_speculative_tokens=2, spec_acceptance=0.5), "spec_method"),
])
def test_incomplete_or_wrong_speculation_names_the_field(kw, field):
    with pytest.raises(InputError) as e:
        ServingPlan(**kw)
    assert e.value.field == field


def test_cli_reports_tokens_per_step_and_says_it_is_unvalidated():
    import json

    r = run_cli("serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "2", "--requests", "50",
                "--spec-method", "eagle", "--num-speculative-tokens", "3", "--spec-acceptance", "0.5", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["speculative"]["tokens_per_step"] == pytest.approx(1.875)
    assert out["speculative"]["vllm_acceptance_rate"] == pytest.approx(0.875 / 3)
    assert all(x["status"] == "unvalidated" for x in out["expected_error"]["by_metric"].values())
    bad = run_cli("serve", "--model", "llama-3-70b", "--gpu", "h100-sxm", "--tp", "4", "--rate", "2",
                  "--spec-method", "draft", "--draft-model", "llama-2-7b", "--num-speculative-tokens", "3",
                  "--spec-acceptance", "0.5")
    assert bad.returncode == 2 and "draft_model" in bad.stderr and "tokenizer" in bad.stderr


def test_a_bad_draft_model_file_is_named_as_the_draft_model(tmp_path):
    bad = tmp_path / "draft.yaml"
    bad.write_bytes(b"\x00\x01binary")
    r = run_cli("serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "2", "--spec-method", "draft",
                "--draft-model", str(bad), "--num-speculative-tokens", "2", "--spec-acceptance", "0.5")
    assert r.returncode == 2 and r.stderr.startswith("parasim: error: draft_model:") and "Traceback" not in r.stderr
