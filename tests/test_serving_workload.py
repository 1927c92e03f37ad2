"""Workloads: trace readers, seeded generators, distribution files."""

from __future__ import annotations

import numpy as np
import pytest

from parasim.errors import InputError
from parasim.serving import Request, Workload, generate, read_trace
from parasim.serving.plan import ServingPlan


def test_generator_is_seeded_and_owns_its_rng():
    a = generate(requests=100, rate=4.0, seed=7, prompt_tokens=10, output_tokens=5)
    np.random.seed(0)
    b = generate(requests=100, rate=4.0, seed=7, prompt_tokens=10, output_tokens=5)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    c = generate(requests=100, rate=4.0, seed=8, prompt_tokens=10, output_tokens=5)
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    assert a.arrival_s[0] == 0.0 and np.all(np.diff(a.arrival_s) >= 0)
    rate = 99 / a.arrival_s[-1]
    assert 2.5 < rate < 6.0


def test_gamma_burst_and_distribution_files(tmp_path):
    g = generate(requests=2000, rate=10.0, arrival="gamma", cv=3.0, seed=1)
    gaps = np.diff(g.arrival_s)
    assert gaps.std() / gaps.mean() > 2.0
    assert np.all(generate(requests=5, burst=True).arrival_s == 0)
    dist = tmp_path / "p.txt"
    dist.write_text("# length,weight\n100,1\n200,3\n")
    w = generate(requests=400, rate=1.0, prompt_dist=dist, output_tokens=7, seed=2)
    assert set(np.unique(w.prompt_tokens)) == {100, 200}
    assert (w.prompt_tokens == 200).mean() > 0.6
    bad = tmp_path / "bad.txt"
    bad.write_text("100\nabc\n")
    with pytest.raises(InputError, match="line 2"):
        generate(requests=4, rate=1.0, prompt_dist=bad)


def test_trace_readers(tmp_path):
    j = tmp_path / "t.jsonl"
    j.write_text('{"arrival_s": 1.0, "prompt_tokens": 5, "output_tokens": 3, "prefix_id": 2, "prefix_tokens": 4}\n'
                 '\n{"arrival_s": 0.5, "prompt_tokens": 6, "output_tokens": 2}\n')
    w = read_trace(j)
    assert len(w) == 2 and w.arrival_s[0] == 0.5 and w.prefix_id.tolist() == [-1, 2]
    c = tmp_path / "t.csv"
    c.write_text("arrival_s,prompt_tokens,output_tokens\n0,5,5\n0.25,7,1\n")
    assert read_trace(c).prompt_tokens.tolist() == [5, 7]
    assert len(read_trace(c, limit=1)) == 1
    for text, where in (('{"arrival_s": 0, "prompt_tokens": 5}\n', "line 1"),
                        ('{"arrival_s": 0, "prompt_tokens": 5, "output_tokens": 2}\n[1]\n', "line 2"),
                        ('{"arrival_s": -1, "prompt_tokens": 5, "output_tokens": 2}\n', "line 1")):
        j.write_text(text)
        with pytest.raises(InputError, match=where):
            read_trace(j)


def test_records_and_plan_round_trip():
    w = Workload.from_requests([Request(arrival_s=0.0, prompt_tokens=3, output_tokens=2),
                                {"arrival_s": 1.0, "prompt_tokens": 4, "output_tokens": 1}])
    assert len(w) == 2
    plan = ServingPlan(tp=2, scheduler="vllm", router="least_outstanding_tokens", prefix_cache=True)
    assert ServingPlan.from_mapping(plan.to_mapping()) == plan
    assert ServingPlan.from_mapping({"chunk-size": 256, "router": "least-outstanding-tokens"}).token_budget == 256
    with pytest.raises(InputError, match="unknown plan field"):
        ServingPlan.from_mapping({"tensor_parallel": 2})
    with pytest.raises(InputError, match="empty"):
        Workload.from_columns([], [], [])


def test_lognormal_lengths_have_the_given_means_and_fixed_arrivals():
    kw = dict(requests=20000, rate=4.0, seed=7, prompt_tokens=1000, output_tokens=250)
    a = generate(**kw, length_dist="lognormal")
    assert a.prompt_tokens.mean() == pytest.approx(1000, rel=0.02)
    assert a.output_tokens.mean() == pytest.approx(250, rel=0.02)
    # sigma 0.5 by default: the log-lengths spread by about 0.5
    assert np.log(a.prompt_tokens).std() == pytest.approx(0.5, abs=0.02)
    wide = generate(**kw, length_dist="lognormal", length_sigma=1.0)
    assert np.log(wide.prompt_tokens).std() > 0.9
    # the lengths have their own generator: arrivals are those of fixed lengths with the same seed
    assert np.array_equal(a.arrival_s, generate(**kw).arrival_s)
    again = generate(**kw, length_dist="lognormal")
    assert np.array_equal(a.prompt_tokens, again.prompt_tokens) and np.array_equal(a.output_tokens, again.output_tokens)
    capped = generate(**kw, length_dist="lognormal", length_sigma=2.0, max_total_tokens=2048)
    assert (capped.prompt_tokens + capped.output_tokens).max() <= 2048 and capped.output_tokens.min() >= 1


def test_lognormal_bad_inputs_name_the_field(tmp_path):
    with pytest.raises(InputError, match="length_dist"):
        generate(requests=5, rate=1, length_dist="normal")
    with pytest.raises(InputError, match="length_sigma"):
        generate(requests=5, rate=1, length_dist="lognormal", length_sigma=0)
    d = tmp_path / "p.txt"
    d.write_text("100\n")
    with pytest.raises(InputError, match="length_dist"):
        generate(requests=5, rate=1, length_dist="lognormal", prompt_dist=d)
