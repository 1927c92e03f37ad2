"""SLOs mean what the papers mean: per-request TTFT/TPOT/E2E at an attainment share (DistServe,
vLLM's goodput), ITL as a percentile of all inter-token gaps (Sarathi-Serve's P99 TBT), and a
millisecond figure typed as seconds is refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.errors import InputError
from parasim.serving.metrics import SLO, missed_slos, slo_summary
from tests.conftest import run_cli

SERVE = ["serve", "--model", "mistral-7b", "--gpu", "a100-sxm-80gb", "--requests", "40", "--rate", "2",
         "--prompt-tokens", "256", "--output-tokens", "32"]


def _cols(ttft, tpot, e2e, completed) -> dict[str, np.ndarray]:
    return {"ttft_s": np.asarray(ttft, float), "tpot_s": np.asarray(tpot, float), "e2e_s": np.asarray(e2e, float),
            "completed": np.asarray(completed, bool)}


def test_itl_slo_is_judged_on_its_percentile_of_all_gaps():
    # 98 gaps of 10 ms and 2 of 500 ms: the 99th percentile of the 100 gaps is 500 ms, the 98th 10 ms
    cols = _cols([0.1], [0.02], [1.0], [True])
    itl = (np.array([0.01, 0.5]), np.array([98, 2]))
    p99 = slo_summary(SLO(itl_s=0.1), cols, itl, makespan_s=1.0)
    assert p99["slo_itl_observed_s"] == 0.5 and p99["slo_ratio_itl"] == pytest.approx(5.0)
    assert p99["slo_met"] is False and p99["slo_binding"] == "itl" and missed_slos(p99) == ["itl"]
    p98 = slo_summary(SLO(itl_s=0.1, itl_percentile=98), cols, itl, makespan_s=1.0)
    assert p98["slo_itl_observed_s"] == 0.01 and p98["slo_met"] is True
    # the ITL SLO is not a per-request one: no attainment, no goodput of its own
    assert p98["slo_attainment"] is None and p98["goodput_requests_per_s"] is None


def test_binding_slo_is_the_one_furthest_over_its_target():
    # 4 requests; attainment 0.75 judges the 3rd smallest value: TTFT 3rd = 2.0 s vs 1 s; TPOT 3rd = 0.02 vs 0.1
    cols = _cols([0.5, 1.0, 2.0, 4.0], [0.01, 0.01, 0.02, 0.2], [5, 5, 5, 5], [True] * 4)
    s = slo_summary(SLO(ttft_s=1.0, tpot_s=0.1, attainment=0.75), cols, None, makespan_s=10.0)
    assert s["slo_ratio_ttft"] == pytest.approx(2.0) and s["slo_ratio_tpot"] == pytest.approx(0.2)
    assert s["slo_binding"] == "ttft" and missed_slos(s) == ["ttft"]
    assert s["slo_attainment"] == 0.5 and s["goodput_requests_per_s"] == pytest.approx(0.2)  # 2 good in 10 s


finite = st.floats(0.001, 10.0)
maybe = st.one_of(st.none(), st.floats(0.01, 5.0))


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(finite, st.one_of(st.just(math.nan), st.floats(0.001, 1.0)), finite, st.booleans()),
                     min_size=1, max_size=40),
       ttft=maybe, tpot=maybe, e2e=maybe, attainment=st.floats(0.05, 1.0))
def test_per_request_attainment_counts_requests_as_vllm_goodput_does(rows, ttft, tpot, e2e, attainment):
    """A request is good when it completed within every per-request SLO (a one-token output's
    undefined TPOT counts as 0); each SLO's ratio is <= 1 exactly when that SLO alone is attained."""
    if ttft is None and tpot is None and e2e is None:
        tpot = 0.5
    cols = _cols(*zip(*rows))
    slo = SLO(ttft_s=ttft, tpot_s=tpot, e2e_s=e2e, attainment=attainment)
    s = slo_summary(slo, cols, None, makespan_s=2.0)
    limits = {"ttft": ttft, "tpot": tpot, "e2e": e2e}

    def ok(row, name) -> bool:
        t, p, e, done = row
        v = {"ttft": t, "tpot": 0.0 if math.isnan(p) else p, "e2e": e}[name]
        return done and (limits[name] is None or v <= limits[name])

    good = sum(all(ok(r, n) for n in limits) for r in rows)
    assert s["slo_attainment"] == good / len(rows)
    assert s["goodput_requests_per_s"] == pytest.approx(good / 2.0)
    assert s["slo_met"] == (good / len(rows) >= attainment)
    for name, lim in limits.items():
        if lim is None:
            assert s[f"slo_ratio_{name}"] is None
        else:
            alone = sum(ok(r, name) for r in rows) / len(rows)
            assert (s[f"slo_ratio_{name}"] <= 1.0) == (alone >= attainment), (name, alone)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["ttft", "tpot", "itl", "e2e"]),
       v=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6), st.booleans(), st.text(max_size=4)))
def test_slo_values_are_positive_finite_seconds_or_refused(name, v):
    cap = {"ttft": 600.0, "tpot": 10.0, "itl": 10.0, "e2e": 3600.0}[name]
    sane = (not isinstance(v, (bool, str)) and isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= cap)
    if sane:
        assert getattr(SLO(**{f"{name}_s": v}), f"{name}_s") == v
    else:
        with pytest.raises(InputError) as e:
            SLO(**{f"{name}_s": v})
        assert e.value.field == f"slo_{name}"


@pytest.mark.parametrize("flag, value, field", [("--slo-tpot", "50", "slo_tpot"), ("--slo-ttft", "2000", "slo_ttft"),
                                                ("--slo-itl", "200", "slo_itl")])
def test_an_slo_that_looks_like_milliseconds_is_refused_with_a_hint(flag, value, field):
    r = run_cli(*SERVE, flag, value)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert field in r.stderr and "milliseconds" in r.stderr and f"{float(value) / 1e3:g}" in r.stderr


@pytest.mark.parametrize("args, field", [
    (["--itl-percentile", "90"], "itl_percentile"),                      # applies to nothing without --slo-itl
    (["--slo-itl", "0.05", "--attainment", "0.9"], "attainment"),        # attainment is per request
    (["--slo-itl", "0.05", "--itl-percentile", "0"], "itl_percentile"),
    (["--slo-itl", "0.05", "--itl-percentile", "101"], "itl_percentile"),
    (["--capacity"], "capacity"),                                        # capacity needs an SLO
    (["--slo-e2e", "0"], "slo_e2e"),
    (["--slo-tpot", "0.1", "--max-queueing-p50", "-1"], "max_queueing_p50"),
])
def test_slo_flags_that_mean_nothing_are_refused(args, field):
    r = run_cli(*SERVE, *args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert field in r.stderr


def test_itl_slo_through_the_cli_reads_the_percentile_of_the_summary():
    """The observed ITL of the SLO is the summary's own ITL percentile (99 by default, 90 when asked)."""
    for pct, key in (([], "itl_p99_s"), (["--itl-percentile", "90"], "itl_p90_s")):
        r = run_cli(*SERVE, "--slo-itl", "0.05", *pct, "--json")
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)["summary"]
        assert s["slo_itl_observed_s"] == s[key]
        assert s["slo_met"] == (s[key] <= 0.05) and s["slo_binding"] == "itl"
        assert s["slo_attainment"] is None and s["goodput_requests_per_s"] is None


def test_e2e_slo_counts_requests_within_it(tmp_path):
    r = run_cli(*SERVE, "--slo-e2e", "1.5", "--slo-ttft", "0.5", "--json", "--requests-out", str(tmp_path / "r.jsonl"))
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)["summary"]
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    good = sum(1 for x in rows if x["completed"] and x["e2e_s"] <= 1.5 and x["ttft_s"] <= 0.5)
    assert s["slo_attainment"] == good / len(rows)


def test_config_file_takes_the_slo_keys_and_checks_them(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mistral-7b\ngpu: a100-sxm-80gb\nrate: 2\nrequests: 30\nslo_itl: 0.05\nitl_percentile: 95\n")
    r = run_cli("serve", "-c", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["inputs"]["slo"]["itl_s"] == 0.05 and d["inputs"]["slo"]["itl_percentile"] == 95
    cfg.write_text("model: mistral-7b\ngpu: a100-sxm-80gb\nrate: 2\nrequests: 30\nslo_itl: 50ms\n")
    bad = run_cli("serve", "-c", str(cfg))
    assert bad.returncode == 2 and "slo_itl" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
