"""`parasim serve --sweep-rate LO:HI:N`: the rates are the documented linear grid, each point is the
run `parasim serve --rate R` gives, served throughput never exceeds what was offered, the knee
follows the documented rule, the worker count changes nothing, and bad input is one line, exit 2."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli
from parasim.cli.limits import MAX_SWEEP_POINTS, sweep_rate
from parasim.errors import InputError
from parasim.search.sweep import knee, sweep_rates

REQUESTS, PROMPT, OUTPUT = 120, 256, 32
BASE = ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--requests", str(REQUESTS),
        "--prompt-tokens", str(PROMPT), "--output-tokens", str(OUTPUT)]
SLO = ["--slo-ttft", "0.2", "--slo-tpot", "0.05"]
SWEEP = ["--sweep-rate", "10:130:5"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The same SLO sweep on one worker and on two: (JSON text -j 1, JSON text -j 2)."""
    d = tmp_path_factory.mktemp("sweep")
    texts = []
    for j in ("1", "2"):
        r = run_cli(*BASE, *SLO, *SWEEP, "-j", j, "--json-out", str(d / f"j{j}.json"))
        assert r.returncode == 0, r.stderr
        texts.append((d / f"j{j}.json").read_text())
    return texts


def test_worker_count_changes_nothing(swept):
    assert swept[0] == swept[1]


def test_rates_are_the_linear_grid_and_ascending(swept):
    out = json.loads(swept[0])
    rates = [p["rate_requests_per_s"] for p in out["points"]]
    assert out["command"] == "serve-sweep" and len(rates) == 5
    assert rates == pytest.approx([10, 40, 70, 100, 130])  # (130 - 10) / 4 = 30 apart
    assert all(a < b for a, b in zip(rates, rates[1:]))


def test_served_never_exceeds_offered(swept):
    """Every request arrives within the arrival span and the makespan covers it, so a run completes
    at most requests / span per second, and at most that times the output length in tokens."""
    for p in json.loads(swept[0])["points"]:
        s = p["summary"]
        cap = REQUESTS / p["arrival_span_s"]
        assert s["requests_per_s"] <= cap
        assert s["output_tokens_per_s"] <= cap * OUTPUT * (1 + 1e-12)
        assert s["completed"] * OUTPUT == s["output_tokens"]


def test_knee_is_a_point_and_every_point_up_to_it_meets_the_slos(swept):
    out = json.loads(swept[0])
    k, pts = out["knee"], out["points"]
    assert k["index"] is not None, "the lowest rate should pass on this plan"
    assert pts[k["index"]]["rate_requests_per_s"] == k["rate_requests_per_s"]
    for p in pts[: k["index"] + 1]:  # checked from the summary, not the point's verdict
        s = p["summary"]
        assert s["slo_attainment"] >= 0.9 and s["completed"] == s["requests"]
        assert p["rate_requests_per_s"] <= k["saturated_requests_per_s"]
    if k["index"] + 1 < len(pts):
        nxt = pts[k["index"] + 1]
        assert nxt["fails"] and nxt["rate_requests_per_s"] == k["next_rate_requests_per_s"]


def test_a_point_is_the_single_run_at_its_rate(swept):
    """The documented promise: the point at rate R is `parasim serve --rate R`."""
    p = json.loads(swept[0])["points"][1]
    r = run_cli(*BASE, *SLO, "--rate", repr(p["rate_requests_per_s"]), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"] == p["summary"]


def test_without_slos_the_knee_rests_on_queueing_and_saturation(tmp_path):
    r = run_cli(*BASE, "--sweep-rate", "20:400:3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    k = out["knee"]
    assert k["slos"] == [] and k["max_queueing_p50_s"] == 2.0  # Sarathi-Serve's bound, documented
    last = out["points"][-1]  # 400 req/s of 256+32-token requests is far past one H100
    assert last["rate_requests_per_s"] > k["saturated_requests_per_s"] and "saturated_throughput" in last["fails"]
    for p in out["points"][: (k["index"] or -1) + 1]:
        assert p["summary"]["queueing_p50_s"] <= 2.0 and p["summary"]["slo_attainment"] is None


def test_config_key_works_like_the_flag(tmp_path, swept):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text('sweep_rate: "10:130:5"\nslo_ttft: 0.2\nslo_tpot: 0.05\nworkers: 2\n')
    out = tmp_path / "cfg.json"
    r = run_cli(*BASE, "-c", str(cfg), "--json-out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_text() == swept[0]


def test_unquoted_yaml_value_is_refused_with_a_hint(tmp_path):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text("sweep_rate: 1:10:5\n")  # YAML 1.1 (PyYAML): the base-60 integer 1*3600 + 10*60 + 5
    r = run_cli(*BASE, "-c", str(cfg))
    assert r.returncode == 2 and "quote" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("extra,field", [
    (["--sweep-rate", "5:1:3"], "sweep_rate"), (["--sweep-rate", "1:5:1"], "sweep_rate N"),
    (["--sweep-rate", "nan:5:3"], "sweep_rate LO"), (["--sweep-rate", "-1:5:3"], "sweep_rate LO"),
    (["--sweep-rate", "1:5:2.5"], "sweep_rate"), (["--sweep-rate", "1:5"], "sweep_rate"),
    (["--sweep-rate", "1:inf:3"], "sweep_rate HI"), (["--sweep-rate", "1:5:3", "--rate", "2"], "rate"),
    (["--sweep-rate", "1:5:3", "--capacity", "--slo-ttft", "1"], "capacity"),
    (["--sweep-rate", "1:5:3", "--burst"], "burst"),
    (["--sweep-rate", "1:5:3", "--trace", "examples/traces/azure-conv-sample.csv"], "trace"),
    (["--sweep-rate", "1:5:3", "--bench-json", "b.json"], "bench_json"),
    (["--rate", "1", "-j", "2"], "workers"),
])
def test_conflicts_and_bad_grids_exit_2_in_one_line(extra, field):
    r = run_cli(*BASE, *extra)
    assert r.returncode == 2, (extra, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"parasim: error: {field}"), r.stderr


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.from_regex(r"-?[0-9.e]{0,6}:-?[0-9.e]{0,6}:-?[0-9.]{0,4}", fullmatch=True),
                 st.integers(), st.floats(), st.none(), st.lists(st.integers(), max_size=3)))
def test_sweep_rate_parser_accepts_only_valid_grids(value):
    try:
        lo, hi, n = sweep_rate("sweep_rate", value)
    except InputError as e:
        assert e.args and "sweep_rate" in str(e)
        return
    assert 0 < lo < hi <= 1e9 and 2 <= n <= MAX_SWEEP_POINTS


@settings(max_examples=200, deadline=None)
@given(lo=st.floats(1e-3, 1e6), span=st.floats(1e-3, 1e6), n=st.integers(2, MAX_SWEEP_POINTS))
def test_grid_is_linear_inclusive_and_strictly_increasing(lo, span, n):
    hi = lo + span
    if not lo < hi:
        return
    rates = sweep_rates(lo, hi, n)
    assert len(rates) == n and rates[0] == lo and rates[-1] == hi
    assert all(a < b for a, b in zip(rates, rates[1:]))
    step = (hi - lo) / (n - 1)
    assert all(b - a == pytest.approx(step, rel=1e-6, abs=1e-9 * hi) for a, b in zip(rates, rates[1:]))


@given(st.lists(st.booleans(), min_size=1, max_size=30))
def test_knee_is_the_end_of_the_leading_passing_run(passes):
    points = [{"fails": [] if ok else ["slo"]} for ok in passes]
    k = knee(points)
    lead = next((i for i, ok in enumerate(passes) if not ok), len(passes))
    assert k == (lead - 1 if lead > 0 else None)


def test_a_plan_that_cannot_run_exits_1_with_every_point_failing():
    """Llama-3-70B in bf16 (about 131 GiB of weights) leaves one 80 GB H100 no KV cache at all."""
    r = run_cli("serve", "--model", "llama-3-70b", "--gpu", "h100-sxm", "--sweep-rate", "1:2:2", "--requests", "20",
                "-j", "1", "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["feasible"] is False and out["knee"]["index"] is None
    assert all(p["fails"] == [out["reason"]] for p in out["points"])
