"""`parasim serve --timeline FILE`: the trace-event file, the recorded `series` / `distributions`,
and the options' edges.

Checked against what the run implies, not against the writer: iterations on one engine never
overlap and number the summary's iterations; their tokens add up to the workload's (every prompt
token prefilled once, every output token but the first decoded once, when nothing is preempted);
each traced request is one begin/end pair from its arrival in the workload to its finish; counters
stay within the KV capacity and the batch limit; the KV series' time-weighted mean is the
summary's utilisation.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter, defaultdict

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from conftest import run_cli
from parasim.report.serve_trace import DEFAULT_REQUESTS, trace_events
from parasim.report.trace import complete, complete_lines, counter, counter_lines, dumps_trace
from parasim.serving import ServingPlan, generate, simulate
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

MODEL = get_model("llama-3-8b")
H100 = get_accelerator("h100-sxm")
SMALL = ["serve", "-m", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "40", "--requests", "60",
         "--prompt-tokens", "256", "--output-tokens", "32"]
PHASES = {"X", "C", "b", "n", "e", "M"}


def run(plan: ServingPlan, *, gpus: int = 1, requests: int = 40, rate: float = 30.0, prompt: int = 256,
        output: int = 24, cap: int = DEFAULT_REQUESTS, seed: int = 0):
    wl = generate(requests=requests, rate=rate, seed=seed, prompt_tokens=prompt, output_tokens=output)
    res = simulate(MODEL, ClusterSpec(accelerator=H100, gpus=gpus), plan, wl, record=True)
    return wl, res, written(trace_events(res.recording, res.requests, cap))


def written(events) -> list[dict]:
    """The events as the file holds them (read back)."""
    return json.loads(dumps_trace(events))["traceEvents"]


def check_format(events: list[dict]) -> None:
    """What Perfetto and chrome://tracing need of each phase."""
    for e in events:
        assert e["ph"] in PHASES and isinstance(e["pid"], int) and isinstance(e["name"], str)
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "process_sort_index", "thread_name")
            continue
        assert np.isfinite(e["ts"]) and e["ts"] >= 0
        if e["ph"] == "X":
            assert e["dur"] >= 0 and isinstance(e["tid"], int) and e["cat"] == "iteration"
        if e["ph"] == "C":
            assert e["args"] and all(np.isfinite(v) for v in e["args"].values())
        if e["ph"] in "bne":
            assert e["cat"] == "request" and isinstance(e["id"], int)


def iterations_by_track(events):
    tracks = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            tracks[(e["pid"], e["tid"])].append(e)
    return tracks


def assert_no_overlap(events) -> None:
    for evs in iterations_by_track(events).values():
        ts = np.array([e["ts"] for e in evs])
        ends = ts + np.array([e["dur"] for e in evs])
        assert (np.diff(ts) >= 0).all()
        assert (ts[1:] >= ends[:-1] - 1e-6).all()  # µs, rounded to the nanosecond


def test_iterations_add_up_to_the_workload_and_never_overlap():
    wl, res, events = run(ServingPlan(scheduler="sarathi"))
    check_format(events)
    s = res.summary
    assert s["preemptions"] == 0 and s["completed"] == len(wl)
    xs = [e for e in events if e["ph"] == "X"]
    assert len(xs) == s["iterations"]
    assert sum(e["args"]["prefill_tokens"] for e in xs) == int(wl.prompt_tokens.sum())
    # the prefill emits each request's first token; decode steps emit the rest
    assert sum(e["args"]["decode_requests"] for e in xs) == int(wl.output_tokens.sum()) - len(wl)
    assert all(e["name"] in ("prefill", "decode", "mixed") for e in xs)
    assert_no_overlap(events)
    # the iterations' time adds up to the engine's busy time: the last ends at the makespan
    last = max(e["ts"] + e["dur"] for e in xs)
    assert last == pytest.approx((wl.arrival_s[0] + s["makespan_s"]) * 1e6, abs=1e-3)


def test_request_spans_run_from_arrival_to_finish():
    wl, res, events = run(ServingPlan(scheduler="vllm"), cap=15)
    spans = defaultdict(list)
    for e in events:
        if e["ph"] in "bne":
            spans[e["id"]].append(e)
    assert sorted(spans) == list(range(15))  # the first 15 by arrival (generated in arrival order)
    for rid, evs in spans.items():
        assert [e["ph"] for e in evs] == ["b", "n", "e"]
        b, n, end = evs
        assert b["ts"] == pytest.approx(wl.arrival_s[rid] * 1e6, abs=1e-3)
        assert b["ts"] <= n["ts"] <= end["ts"]
        assert b["args"]["prompt_tokens"] == wl.prompt_tokens[rid]
        assert end["args"]["e2e_s"] * 1e6 == pytest.approx(end["ts"] - b["ts"], abs=1e-2)


def test_counters_stay_within_capacity_and_batch_limit_under_preemption():
    # util 0.22 leaves 6,272 tokens of KV for llama-3-8b on one H100, 16 requests of 500 need 8,000:
    # requests get preempted
    plan = ServingPlan(scheduler="vllm", gpu_memory_utilization=0.22, max_batch=16)
    wl, res, events = run(plan, requests=60, rate=200.0, prompt=300, output=200)
    assert res.summary["preemptions"] > 0
    xs = [e for e in events if e["ph"] == "X"]
    assert sum(e["args"]["preemptions"] for e in xs) == res.summary["preemptions"]
    kv = [e["args"]["used_fraction"] for e in events if e["ph"] == "C" and e["name"] == "kv_cache"]
    q = [e["args"] for e in events if e["ph"] == "C" and e["name"] == "requests"]
    assert kv and max(kv) <= 1.0 and min(kv) >= 0.0 and max(kv) > 0.5
    assert max(a["running"] for a in q) <= 16 and min(a["waiting"] for a in q) >= 0
    assert max(a["waiting"] for a in q) > 0
    ser = res.to_dict()["series"]
    assert max(ser["kv_used"]) <= 1.0 + 1e-12 and max(ser["running"]) <= ser["max_running"] == 16
    assert_no_overlap(events)


@pytest.mark.parametrize("plan,gpus,names", [
    (ServingPlan(scheduler="sarathi", pp=2), 2, {"replica 0"}),
    (ServingPlan(scheduler="sarathi", replicas=2, router="least_outstanding_tokens"), 2, {"replica 0", "replica 1"}),
    (ServingPlan(scheduler="disagg", prefill_gpus=1, decode_gpus=1), 2, {"prefill replica 0", "decode replica 0"}),
])
def test_one_process_per_replica_and_role_one_track_per_engine(plan, gpus, names):
    wl, res, events = run(plan, gpus=gpus)
    procs = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs == names | {f"requests (first {len(wl)} by arrival)"}
    tracks = iterations_by_track(events)
    assert len(tracks) == len(res.recording.instances)  # a PP replica: one track per virtual engine
    assert sum(len(v) for v in tracks.values()) == res.summary["iterations"]
    assert_no_overlap(events)


def test_series_mean_is_the_summary_kv_utilization_and_distributions_match_the_summary():
    wl, res, _ = run(ServingPlan(scheduler="sarathi"), requests=80, rate=40.0)
    d = res.to_dict()
    ser, dist, s = d["series"], d["distributions"], d["summary"]
    assert len(ser["t_s"]) <= 500 and len(ser["t_s"]) == len(ser["kv_used"]) == len(ser["waiting"])
    assert ser["t_s"][0] == wl.arrival_s[0]
    # equal bins: the plain mean of bin means is the time-weighted mean over the makespan
    assert np.mean(ser["kv_used"]) == pytest.approx(s["kv_utilization_mean"], rel=1e-9)
    assert dist["percent"] == list(range(101))
    for name in ("ttft", "tpot", "e2e", "itl"):
        v = dist[f"{name}_s"]
        assert len(v) == 101 and all(a <= b for a, b in zip(v, v[1:]))
    for name in ("ttft", "tpot", "e2e"):
        assert dist[f"{name}_s"][50] == pytest.approx(s[f"{name}_p50_s"])
        assert dist[f"{name}_s"][99] == pytest.approx(s[f"{name}_p99_s"])
        assert dist[f"{name}_count"] == s["completed"]
    assert dist["itl_s"][99] == s["itl_p99_s"] and dist["itl_s"][0] > 0
    assert dist["itl_count"] == int(wl.output_tokens.sum()) - len(wl)  # every gap between two tokens


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rate=hst.floats(0.5, 400.0), cap=hst.integers(0, 50), requests=hst.integers(1, 40),
       sched=hst.sampled_from(["vllm", "sarathi", "static"]), seed=hst.integers(0, 3))
def test_spans_pair_up_and_number_min_of_cap_and_requests(rate, cap, requests, sched, seed):
    wl, res, events = run(ServingPlan(scheduler=sched, max_batch=8), requests=requests, rate=rate, prompt=64,
                          output=8, cap=cap, seed=seed)
    check_format(events)
    ph = Counter(e["ph"] for e in events)
    assert ph["b"] == ph["e"] == min(cap, requests)
    opened = set()
    for e in events:
        if e["ph"] == "b":
            assert e["id"] not in opened
            opened.add(e["id"])
        elif e["ph"] == "e":
            opened.remove(e["id"])
    assert not opened and ph["X"] == res.summary["iterations"]
    assert all(e["args"]["running"] <= 8 for e in events if e["ph"] == "C" and e["name"] == "requests")
    assert_no_overlap(events)


def test_infeasible_plan_writes_a_trace_of_dropped_requests():
    wl = generate(requests=5, rate=1.0, prompt_tokens=64, output_tokens=8)
    res = simulate(MODEL, ClusterSpec(accelerator=H100, gpus=1), ServingPlan(gpu_memory_utilization=0.15), wl,
                   record=True)
    assert not res.feasible
    events = written(trace_events(res.recording, res.requests))
    check_format(events)
    ends = [e for e in events if e["ph"] == "e"]
    assert len(ends) == 5 and all(e["args"]["dropped"] for e in ends)
    assert not any(e["ph"] == "X" for e in events)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 of an empty KV pool on the way
        out = res.to_dict()
    assert "series" not in out and "distributions" not in out  # no engine ran: nothing to chart


# --- through the CLI ------------------------------------------------------------------------------------
def test_cli_timeline_is_deterministic_and_adds_only_the_figure_keys(tmp_path):
    outs = []
    for k in range(2):
        r = run_cli(*SMALL, "--timeline", str(tmp_path / f"t{k}.json"), "--timeline-requests", "10", "--json")
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(r.stdout))
    a, b = (tmp_path / "t0.json").read_bytes(), (tmp_path / "t1.json").read_bytes()
    assert a == b
    trace = json.loads(a)
    assert trace["displayTimeUnit"] == "ms" and Counter(e["ph"] for e in trace["traceEvents"])["b"] == 10
    check_format(trace["traceEvents"])
    drop = lambda d: {k: v for k, v in d.items() if k != "sim_wall_s"}  # noqa: E731
    assert drop(outs[0]) == drop(outs[1])
    plain = run_cli(*SMALL, "--json")
    assert plain.returncode == 0
    p = json.loads(plain.stdout)
    assert "series" not in p and "distributions" not in p
    assert set(outs[0]) - set(p) == {"series", "distributions"}
    assert drop(p)["summary"] == drop(outs[0])["summary"]  # recording changes no answer


def test_config_file_timeline_works_as_the_flag(tmp_path):
    cfg = {"model": "llama-3-8b", "gpu": "h100-sxm", "rate": 40, "requests": 60, "prompt_tokens": 256,
           "output_tokens": 32, "timeline": "out/run.json", "timeline_requests": 7}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "out").mkdir()
    r = run_cli("serve", "-c", str(path))
    assert r.returncode == 0, r.stderr
    from_cfg = (tmp_path / "out" / "run.json").read_bytes()  # relative to the config file
    r = run_cli(*SMALL, "--timeline", str(tmp_path / "flag.json"), "--timeline-requests", "7")
    assert r.returncode == 0 and (tmp_path / "flag.json").read_bytes() == from_cfg


@pytest.mark.parametrize("extra,message", [
    (["--timeline-requests", "-1"], "timeline_requests"),
    (["--timeline-requests", "1e3"], "timeline-requests"),
    (["--timeline-requests", "99999999999"], "PARASIM_MAX_REQUESTS"),
    (["--timeline-requests", "5"], "timeline_requests: caps the requests traced in a --timeline file"),
    (["--timeline", "x.json", "--capacity", "--slo-ttft", "1"], "timeline: records one simulated run"),
])
def test_hostile_timeline_options_exit_2_in_one_line(extra, message, tmp_path):
    args = [a if a != "x.json" else str(tmp_path / a) for a in extra]
    base = SMALL if "--capacity" not in extra else [a for a in SMALL if a not in ("--rate", "40")]
    r = run_cli(*base, *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("parasim: error: ") and r.stderr.count("\n") == 1 and message in r.stderr


def test_unwritable_timeline_is_refused_before_the_run(tmp_path):
    r = run_cli(*SMALL, "--timeline", str(tmp_path))
    assert r.returncode == 1 and r.stderr == f"parasim: error: cannot write {tmp_path}: Is a directory\n"
    assert r.stdout == ""  # nothing ran


def test_zero_timeline_requests_traces_iterations_only(tmp_path):
    r = run_cli(*SMALL, "--timeline", str(tmp_path / "t.json"), "--timeline-requests", "0")
    assert r.returncode == 0, r.stderr
    ph = Counter(e["ph"] for e in json.loads((tmp_path / "t.json").read_text())["traceEvents"])
    assert ph["b"] == 0 and ph["X"] > 0


def test_encoded_lines_are_the_text_of_the_same_dicts():
    args = {"prefill_tokens": [512, 0], "iteration_s": [0.1234567891, 1e-7], "decode_requests": [0, 3]}
    names, start, end = ["prefill", "decode"], [0.5, 0.6234567891], [0.6234567891, 0.6234568891]
    dicts = [complete(3, 2, n, "iteration", a, b, {k: v[i] for k, v in args.items()})
             for i, (n, a, b) in enumerate(zip(names, start, end))]
    assert dumps_trace(complete_lines(3, 2, "iteration", names, start, end, args)) == dumps_trace(dicts)
    vals = {"running": [1, 2], "waiting": [0, 5]}
    assert (dumps_trace(counter_lines(1, "requests", [0.25, 1.5], vals))
            == dumps_trace([counter(1, "requests", t, {k: v[i] for k, v in vals.items()})
                            for i, t in enumerate([0.25, 1.5])]))
    with pytest.raises(ValueError, match="finite"):
        counter_lines(1, "kv", [0.0], {"used": [float("nan")]})


def test_dumps_trace_is_one_event_per_line():
    text = dumps_trace([{"ph": "M", "pid": 1, "tid": 0, "name": "process_name", "args": {"name": "a"}}] * 3)
    assert text.count("\n") == 5 and json.loads(text)["traceEvents"][2]["args"] == {"name": "a"}
