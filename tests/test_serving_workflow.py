"""Compound LLM workflows (`serve --workflow FILE`): the expansion of a workflow file into calls
and dependencies, causality in the simulated run, and the gain of issuing independent calls in
parallel (LLMCompiler's direction)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.errors import InputError
from parasim.serving import ServingPlan, simulate
from parasim.serving.workflow import expand, read_workflows
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from tests.conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "workflows" / "map-reduce-and-agent.yaml"


def _file(tmp_path, doc) -> str:
    p = tmp_path / "wf.yaml"
    p.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return str(p)


def _mapreduce(count=20, rate=0.2, fanout=8):
    return {"workflows": [{"name": "mr", "count": count, "rate": rate, "calls": [
        {"id": "split", "prompt_tokens": 400, "output_tokens": 100},
        {"id": "map", "after": ["split"], "fanout": fanout, "prompt_tokens": 2000, "output_tokens": 150},
        {"id": "reduce", "after": ["map"], "prompt_tokens": 200, "output_tokens": 300, "context": "outputs"}]}]}


def test_expansion_counts_edges_and_contexts_by_hand(tmp_path):
    wl, deps = expand(read_workflows(EXAMPLE))
    assert len(wl) == 200 * (1 + 8 + 1) + 100 * 4
    kinds = dict(zip(deps.kinds, range(2)))
    mr = np.flatnonzero(deps.instance == np.flatnonzero(deps.instance_kind == kinds["map-reduce"])[0])
    assert deps.parents[mr].tolist() == [0] + [1] * 8 + [8]
    assert wl.prompt_tokens[mr].tolist() == [400] + [2000] * 8 + [200 + 8 * 150]  # reduce carries the summaries
    ag = np.flatnonzero(deps.instance == np.flatnonzero(deps.instance_kind == kinds["agent"])[0])
    # history: each step re-sends the previous step's prompt and answer, plus its own 300 tokens
    assert wl.prompt_tokens[ag].tolist() == [300, 300 + 300 + 200, 300 + 800 + 200, 300 + 1300 + 200]
    assert deps.tool_latency_s[ag].tolist() == [0.0, 1.5, 1.5, 1.5]
    _, seq = expand(read_workflows(EXAMPLE), mode="sequential")
    assert seq.parents[mr].tolist() == [0] + [1] * 9  # one chain, same calls


@settings(max_examples=20, deadline=None)
@given(count=hst.integers(1, 30), fanout=hst.integers(1, 12), repeat=hst.integers(1, 6))
def test_expansion_sizes_and_edges_add_up(tmp_path_factory, count, fanout, repeat):
    doc = {"workflows": [{"name": "w", "count": count, "rate": 1.0, "calls": [
        {"id": "a", "prompt_tokens": 10, "output_tokens": 5},
        {"id": "b", "after": ["a"], "fanout": fanout, "prompt_tokens": 10, "output_tokens": 5},
        {"id": "c", "after": ["b"], "repeat": repeat, "prompt_tokens": 10, "output_tokens": 5}]}]}
    wl, deps = expand(read_workflows(_file(tmp_path_factory.mktemp("w"), doc)))
    per = 1 + fanout + repeat
    assert len(wl) == count * per
    assert int(deps.parents.sum()) == deps.children.size == count * (fanout + fanout + (repeat - 1))
    assert deps.roots.size == count


def _run(doc_path, mode, rate_scale=1.0, **plan):
    model, cluster = get_model("llama-3-8b"), cluster_for(get_accelerator("h100-sxm"), 1)
    wl, deps = expand(read_workflows(doc_path), mode=mode, seed=3)
    return simulate(model, cluster, ServingPlan(scheduler="sarathi", **plan), wl, deps=deps), deps


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_a_call_is_sent_when_its_last_parent_answered_plus_the_tool_time(mode):
    res, deps = _run(EXAMPLE, mode, output_delay_s=0.01)
    r = res.requests
    assert r["completed"].all()
    sent = r["arrival_s"]
    children: dict[int, list[int]] = {}  # child -> its parents, from the CSR lists
    for p in range(len(sent)):
        for k in range(deps.child_start[p], deps.child_start[p + 1]):
            children.setdefault(int(deps.children[k]), []).append(p)
    for c, ps in children.items():
        ready = max(r["finish_s"][p] for p in ps)  # finish_s includes the output delay
        assert sent[c] == pytest.approx(ready + deps.tool_latency_s[c], abs=1e-9)
        assert r["first_token_s"][c] > sent[c]


def test_parallel_calls_cut_workflow_latency_most_at_low_load(tmp_path):
    """LLMCompiler (Kim et al., ICML 2024): issuing independent calls in parallel instead of one
    after another cuts a workflow's latency (up to 3.7x in their benchmarks); the gain shrinks
    when the engine is saturated, as the parallel calls then queue for the same GPU."""
    gains = []
    for rate in (0.05, 1.5):
        path = _file(tmp_path, _mapreduce(count=30, rate=rate))
        par = _run(path, "parallel")[0].summary["workflows"]["e2e_mean_s"]
        seq = _run(path, "sequential")[0].summary["workflows"]["e2e_mean_s"]
        gains.append(seq / par)
    assert 2.0 <= gains[0] <= 10 / 3 + 0.5  # at most the critical path's ratio (10 calls vs 3)
    assert gains[1] < gains[0]


def test_workflow_tokens_are_conserved_and_the_run_is_deterministic():
    a, _ = _run(EXAMPLE, "parallel")
    b, _ = _run(EXAMPLE, "parallel")
    assert a.summary["output_tokens"] == int(expand(read_workflows(EXAMPLE))[0].output_tokens.sum())
    assert json.dumps({k: v for k, v in a.summary.items() if k != "sim_wall_s"}, sort_keys=True, default=str) == \
        json.dumps({k: v for k, v in b.summary.items() if k != "sim_wall_s"}, sort_keys=True, default=str)


BAD = [
    ({"workflows": []}, "workflows"),
    ({"flows": []}, "flows"),
    ({"workflows": [{"name": "w", "count": 1, "rate": 1, "calls": [{"id": "a", "prompt_tokens": 1,
                                                                   "output_tokens": 1, "after": ["b"]}]}]}, "after"),
    ({"workflows": [{"name": "w", "count": 1, "rate": 1, "calls": [{"id": "a", "prompt_tokens": 1, "output_tokens": 1,
                                                                   "fanout": 2, "repeat": 2}]}]}, "repeat"),
    ({"workflows": [{"name": "w", "count": 1, "rate": -1, "calls": [{"id": "a", "prompt_tokens": 1,
                                                                    "output_tokens": 1}]}]}, "rate"),
    ({"workflows": [{"name": "w", "count": 1, "rate": 1, "calls": [{"id": "a", "prompt_tokens": 1, "output_tokens": 1,
                                                                   "tool_latency_s": float("nan")}]}]}, "tool_latency_s"),
    ({"workflows": [{"name": "w", "count": 1, "rate": 1, "calls": [{"id": "a", "prompt_tokens": 1, "output_tokens": 1,
                                                                   "context": "all"}]}]}, "context"),
    ({"workflows": [{"name": "w", "count": 10**9, "rate": 1, "calls": [{"id": "a", "prompt_tokens": 1,
                                                                       "output_tokens": 1}]}]}, "count"),
    ({"workflows": [{"name": "w", "count": 1, "rate": 1, "calls": [{"id": "a", "prompt_tokens": 1, "output_tokens": 1},
                                                                  {"id": "a", "prompt_tokens": 1, "output_tokens": 1}]}]}, "id"),
    ("workflows: [unclosed", "wf.yaml"),
]


@pytest.mark.parametrize("doc, field", BAD)
def test_bad_workflow_files_name_the_place(tmp_path, doc, field):
    with pytest.raises(InputError) as e:
        read_workflows(_file(tmp_path, doc))
    assert field in e.value.field


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=hst.one_of(hst.none(), hst.booleans(), hst.integers(-5, 10**12), hst.floats(allow_nan=True),
                        hst.text(max_size=5), hst.lists(hst.integers(), max_size=3)),
       key=hst.sampled_from(["count", "rate", "prompt_tokens", "output_tokens", "fanout", "repeat", "after",
                             "tool_latency_s", "context", "id", "name"]))
def test_any_value_anywhere_is_read_or_refused_with_an_input_error(tmp_path, value, key):
    doc = _mapreduce(count=2)
    target = doc["workflows"][0] if key in ("count", "rate", "name") else doc["workflows"][0]["calls"][1]
    target[key] = value
    try:
        expand(read_workflows(_file(tmp_path, doc)))
    except InputError:
        pass


def test_cli_workflow_runs_and_refuses_what_it_replaces():
    r = run_cli("serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--workflow", str(EXAMPLE), "--json")
    assert r.returncode == 0, r.stderr
    w = json.loads(r.stdout)["summary"]["workflows"]
    assert w["completed"] == w["instances"] == 300 and set(w["by_kind"]) == {"map-reduce", "agent"}
    for extra, field in ((("--rate", "2"), "rate"), (("--requests", "10"), "requests"),
                         (("--max-concurrency", "4"), "max_concurrency")):
        bad = run_cli("serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--workflow", str(EXAMPLE), *extra)
        assert bad.returncode == 2 and f"{field}:" in bad.stderr and "Traceback" not in bad.stderr
    lone = run_cli("serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "1", "--workflow-mode", "sequential")
    assert lone.returncode == 2 and "workflow_mode" in lone.stderr
