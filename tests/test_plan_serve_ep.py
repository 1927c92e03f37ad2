"""`plan serve` searches expert parallelism (attention-DP ranks, `serve --ep`) for MoE models.

What is checked, each from something other than the code under test:
- the EP degrees and layouts follow serve's own rules (ServingPlan refuses nothing the planner
  proposes; ep divides the routed experts and the replicas), Hypothesis over models and budgets;
- the memory screen splits the routed experts over the EP group: a hand count of DeepSeek-V3's
  FP8 weights per GPU against an H200 says which EP degrees can hold it;
- the published direction (SGLang v0.4 release: DP attention raises DeepSeek's throughput at
  load; sglang issue #2882: it costs latency at low load): EP 8 keeps up where TP 8 does not and
  loses on latency at 1 request/s;
- through the CLI: the winner equals `serve -c` on the emitted config, a dense model's answer is
  unchanged whatever `--ep` says that applies, and hostile `--ep` values are one line, exit 2.
"""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli
from parasim.cli import limits
from parasim.errors import InputError
from parasim.search.plan_serve import _pool_bounds
from parasim.search.prune import Pruned
from parasim.search.space import parse_serve_ep, serve_ep_layouts, serve_eps, serve_layouts
from parasim.serving.plan import ServingPlan
from parasim.specs.catalog import default_cluster, get_accelerator, get_model

DS = ["plan", "serve", "--model", "deepseek-v3", "--gpu", "h200-sxm", "--max-gpus", "8", "--prompt-tokens", "1000",
      "--output-tokens", "500", "--slo-ttft", "5", "--slo-tpot", "0.1", "--schedulers", "sarathi",
      "--token-budgets", "512", "--max-batches", "128", "--workers", "2", "--json"]
#: 8 requests/s, every stage on the same 300 requests (a shorter screen's burst ends in a tail that
#: no plan keeps up with)
LOADED = ("--rate", "8", "--requests", "300", "--screen-requests", "300")
DENSE = ["plan", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--max-gpus", "4", "--rate", "8",
         "--prompt-tokens", "512", "--output-tokens", "128", "--requests", "200", "--screen-requests", "100",
         "--slo-ttft", "1", "--slo-tpot", "0.05", "--schedulers", "sarathi", "--token-budgets", "512",
         "--max-batches", "128", "--workers", "2", "--json"]


def _answer(stdout: str) -> dict:
    """The JSON answer without its wall-clock times."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("search_wall_s", "sim_wall_s")}
        return [strip(v) for v in x] if isinstance(x, list) else x
    return strip(json.loads(stdout))


# --- the space --------------------------------------------------------------------------------------
def test_auto_searches_the_expert_divisors_for_moe_and_nothing_for_dense():
    ds = get_model("deepseek-v3")  # 256 routed experts
    eps, _ = serve_eps(ds, (), max_gpus=16, tps=(1, 2, 4, 8), pps=(1, 2), colocated=True)
    assert eps == (1, 2, 4, 8, 16)
    mixtral = get_model("mixtral-8x7b")  # 8 experts: EP stops at 8 however many GPUs
    assert serve_eps(mixtral, (), max_gpus=64, tps=(1,), pps=(1,), colocated=True)[0] == (1, 2, 4, 8)
    assert serve_eps(get_model("llama-3-8b"), (), max_gpus=8, tps=(1,), pps=(1,), colocated=True)[0] == (1,)
    # EP runs on one-GPU colocated ranks: a space without them searches none
    assert serve_eps(ds, (), max_gpus=8, tps=(2, 4), pps=(1,), colocated=True)[0] == (1,)
    assert serve_eps(ds, (), max_gpus=8, tps=(1,), pps=(1,), colocated=False)[0] == (1,)


@pytest.mark.parametrize("model, given, kw, words", [
    ("llama-3-8b", (1, 2), {}, "dense"),
    ("mixtral-8x7b", (3,), {}, "divide"),
    ("deepseek-v3", (16,), {}, "max-gpus"),
    ("deepseek-v3", (8,), {"tps": (8,)}, "--tp"),
    ("deepseek-v3", (8,), {"pps": (2,)}, "--pp"),
    ("deepseek-v3", (8,), {"colocated": False}, "disaggregated"),
])
def test_an_ep_that_cannot_run_is_an_input_error_naming_ep(model, given, kw, words):
    args = {"tps": (1, 8), "pps": (1,), "colocated": True} | kw
    with pytest.raises(InputError) as e:
        serve_eps(get_model(model), given, max_gpus=8, **args)
    assert e.value.field == "ep" and words in e.value.message


def test_a_list_without_1_searches_only_its_ep_layouts():
    """`--ep 8` tries EP 8 alone, as `--tp 8` tries TP 8 alone; `--ep 1,8` both kinds."""
    ds, cl = get_model("deepseek-v3"), default_cluster("h200-sxm", 16)
    kw = dict(max_gpus=16, tps=(1, 2, 4, 8), pps=(1, 2), precisions=(("fp8", "bf16"),), disagg=("disagg",))
    only = list(serve_layouts(ds, cl, pruned=Pruned(), eps=(8,), **kw))
    both = list(serve_layouts(ds, cl, pruned=Pruned(), eps=(1, 8), **kw))
    plain = list(serve_layouts(ds, cl, pruned=Pruned(), **kw))
    assert [(d["replicas"], d["ep"]) for d in only] == [(8, 8), (16, 8)]
    assert both == plain + only and all("ep" not in d for d in plain)


@settings(max_examples=60, deadline=None)
@given(experts=st.sampled_from([8, 16, 32, 60, 64, 128, 256]), max_gpus=st.integers(1, 48),
       one_group=st.booleans())
def test_every_ep_layout_is_a_plan_serve_accepts(experts, max_gpus, one_group):
    """Each layout passes ServingPlan's own ep rules, stays in the budget, and whole experts sit on
    each rank; with one group (--emit) there is exactly one layout per degree."""
    model = get_model("mixtral-8x7b").with_(experts=experts, experts_per_token=2)
    eps, _ = serve_eps(model, (), max_gpus=max_gpus, tps=(1,), pps=(1,), colocated=True)
    lays = list(serve_ep_layouts("h100-sxm", max_gpus=max_gpus, eps=eps, precisions=(("bf16", "bf16"),),
                                 one_group=one_group))
    for d in lays:
        ServingPlan(tp=d["tp"], pp=d["pp"], replicas=d["replicas"], ep=d["ep"])
        assert d["replicas"] <= max_gpus and experts % d["ep"] == 0 and d["replicas"] % d["ep"] == 0
        assert not one_group or d["replicas"] == d["ep"]
    assert {d["ep"] for d in lays} == {e for e in eps if e > 1}
    if one_group:
        assert len(lays) == len(eps) - 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=12), st.lists(st.integers(-5, 20_000), min_size=1, max_size=4).map(
    lambda xs: ",".join(map(str, xs)))))
def test_hostile_ep_text_is_parsed_or_refused_naming_ep(text):
    """Any text: a tuple of degrees within the cap, or an InputError on the `ep` field (never
    another exception), through the same rule and parser as the CLI."""
    try:
        value = limits.check(limits.PLAN_SERVE, {"ep": text})["ep"]
        eps = parse_serve_ep(value)
    except InputError as e:
        assert e.field == "ep"
        return
    assert all(1 <= e <= 10_000 for e in eps) and list(eps) == sorted(set(eps))


# --- the memory screen ------------------------------------------------------------------------------
def test_memory_screen_splits_the_routed_experts_over_the_ep_group():
    """DeepSeek-V3's FP8 routed experts, by hand: 58 MoE layers x 256 experts x 3 matrices of
    7168 x 2048 = 653 G parameters at one byte. Everything else (17.6 G parameters; embedding and
    LM head kept 16-bit) sits on every rank. An H200 engine may use 0.9 x 141 GiB: EP 4 leaves each
    GPU 152 GiB of experts (too much), EP 8 76 GiB plus the rest (fits)."""
    m = get_model("deepseek-v3")
    routed = 58 * 256 * 3 * 7168 * 2048
    rest = m.params_total - routed
    usable = 0.9 * get_accelerator("h200-sxm").device_memory_bytes

    def hand_bytes(ep: int) -> float:
        return routed / ep + rest + m.embedding_params + m.lm_head_params  # fp8, the edges twice

    assert hand_bytes(4) > usable and hand_bytes(8) < usable - 10e9
    kept = [ep for ep in (1, 2, 4, 8) if _pool_bounds(m, "h200-sxm", 1, 1, "fp8", "bf16", 1000.0, 500.0, 1500, ep)[0]
            is None]
    assert kept == [8]


# --- through the CLI --------------------------------------------------------------------------------
def test_winner_with_ep_equals_serve_on_the_emitted_config(tmp_path):
    """DeepSeek-V3 on 8 H200 at 8 requests/s: TP 8 (the baseline) cannot keep up (its burst serves
    fewer requests/s than arrive), the SGLang / TensorRT-LLM DeepSeek recipes' layout (attention
    DP + EP 8) can and wins, and `serve -c` on the emitted YAML reproduces its numbers exactly."""
    out_yaml = tmp_path / "best.yaml"
    r = run_cli(*DS, *LOADED, "--emit-yaml", str(out_yaml))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    best, base = out["best"], out["baseline"]
    assert (best["tp"], best["ep"], best["replicas"]) == (1, 8, 8) and best["fidelity"] == "full"
    assert (base["tp"], base["ep"]) == (8, 1) and base["fails"] == ["saturated_throughput"]
    assert base["saturated_requests_per_s"] < 8 < best["saturated_requests_per_s"]
    assert out["expert_parallel"]["searched"] == [1, 2, 4, 8]
    assert "ep" in out["explanation"]["vs_baseline"]["plan_differences"]
    cfg = yaml.safe_load(out_yaml.read_text())
    assert cfg["ep"] == 8 and cfg["tp"] == 1 and cfg["replicas"] == 8
    again = run_cli("serve", "-c", str(out_yaml), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["summary"] == best["metrics"]["summary"]


def test_at_low_load_the_latency_winner_is_not_ep():
    """At 1 request/s each DP rank reads the whole attention and its share of the touched experts
    for one or two sequences: TP (and PP) decode faster, so the latency objective does not pick EP."""
    r = run_cli(*DS, "--rate", "1", "--requests", "100", "--screen-requests", "100", "--objective", "latency")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["best"]["ep"] == 1
    ep_rows = [x for x in out["ranked"] if x["ep"] > 1]
    assert ep_rows and ep_rows[0]["objective_value"] > out["best"]["objective_value"]


def test_a_dense_answer_is_the_same_with_ep_auto_or_1():
    runs = [run_cli(*DENSE, *extra) for extra in ((), ("--ep", "auto"), ("--ep", "1"))]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    first = _answer(runs[0].stdout)
    assert "expert_parallel" not in first
    assert all(_answer(r.stdout) == first for r in runs[1:])


@pytest.mark.parametrize("extra, words", [
    (("--ep", "2"), "dense"),
    (("--ep", "auto,2"), "auto"),
    (("--ep", "0"), "positive"),
    (("--ep", ""), "ep"),
])
def test_bad_ep_on_the_cli_is_one_line_exit_2(extra, words):
    r = run_cli(*DENSE, *extra)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith("parasim: error: ep") and words in lines[0]


def test_ep_with_a_models_file_exits_2_naming_ep():
    r = run_cli("plan", "serve", "--models", "examples/multimodel/two-models.yaml", "--gpu", "h100-sxm",
                "--max-gpus", "8", "--ep", "1")
    assert r.returncode == 2 and "ep" in r.stderr and "models file" in r.stderr


def test_emit_keeps_one_ep_group_and_writes_the_engines_dp_attention_flags():
    """--emit sglang: every EP plan is one engine process (replicas = ep), and its command is the
    SGLang DeepSeek recipe's shape: --tp N --dp N --enable-dp-attention (attention TP = tp / dp = 1)."""
    r = run_cli(*DS, *LOADED, "--emit", "sglang")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["expert_parallel"]["one_group"] is True
    assert all(x["replicas"] == x["ep"] for x in out["ranked"] if x["ep"] > 1)
    assert out["best"]["ep"] == 8
    script = out["emit"]["script"]
    for flag in ("--tp-size 8", "--dp-size 8", "--enable-dp-attention", "--ep-size 8"):
        assert flag in script
