"""`train --timeline`: the step as a Chrome trace. Checked against the trace-event format and the
result it came from: the trace's span is the step time, each stage runs every (micro-batch, chunk)
forward and backward once, its compute thread never runs two things at once, and the idle time on
the critical stage (what no charged event covers before its pipeline ends) is the result's bubble."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_cluster, make_model, run_cli
from parasim.report import train_trace
from parasim.training import TrainingPlan, simulate

TINY = make_model(layers=10)  # uneven chunks for some pp x v
US = 1e6
EVENT_KEYS = {"name", "ph", "pid", "tid"}
README_TRAIN = ["train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "16", "--tp", "2", "--pp", "4",
                "--global-batch", "16", "--seq-len", "2048"]


@st.composite
def plans(draw):
    schedule = draw(st.sampled_from(["gpipe", "1f1b", "interleaved"]))
    if schedule == "interleaved":
        pp, v = draw(st.integers(2, 3)), draw(st.integers(2, 3))
        m = pp * draw(st.integers(1, 3))
    else:
        pp, v, m = draw(st.integers(1, 4)), 1, draw(st.integers(1, 6))
    dp = draw(st.sampled_from([1, 2]))
    return TrainingPlan(pp=pp, dp=dp, virtual_stages=v, schedule=schedule, micro_batch=1, global_batch=m * dp,
                        seq_len=256, zero=draw(st.sampled_from([0, 1, 3])),
                        overlap_p2p_comm=draw(st.booleans()), overlap_grad_reduce=draw(st.booleans()))


def _trace(plan: TrainingPlan, model=TINY) -> tuple[dict, dict]:
    res = simulate(model, make_cluster(plan.pp * plan.dp), plan, timeline=True)
    out = {"command": "train", **res.to_dict()}
    return out, json.loads(train_trace.dumps(out))


def _complete(trace: dict) -> list[dict]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def _union_s(intervals: list[tuple[float, float]]) -> float:
    """Length covered by a set of [start, end) intervals."""
    total, reach = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def test_trace_event_format():
    _, trace = _trace(TrainingPlan(pp=2, dp=2, micro_batch=1, global_batch=8, seq_len=256))
    assert set(trace) == {"traceEvents", "displayTimeUnit", "otherData"} and trace["displayTimeUnit"] == "ms"
    assert trace["otherData"]["model"] == TINY.name and trace["otherData"]["step_time_s"] > 0
    for e in trace["traceEvents"]:
        assert EVENT_KEYS <= set(e) and e["ph"] in ("X", "M")
        if e["ph"] == "X":
            assert e["ts"] >= 0 and e["dur"] >= 0 and isinstance(e["args"], dict)
    names = {(e["pid"], e["name"]): e["args"] for e in trace["traceEvents"] if e["ph"] == "M"}
    pids = {e["pid"] for e in _complete(trace)}
    assert pids == {1, 2} and all((p, "process_name") in names for p in pids)
    threads = {(e["pid"], e["tid"]) for e in _complete(trace)}
    named = {(e["pid"], e["tid"]) for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert threads == named  # every thread with events is named, and only those


def _assert_span(res: dict, trace: dict) -> None:
    ev = _complete(trace)
    span_us = max(e["ts"] + e["dur"] for e in ev) - min(e["ts"] for e in ev)
    assert abs(span_us - res["step_time_s"] * US) <= 1.0  # to the microsecond


def _assert_bubble(res: dict, trace: dict) -> None:
    """Critical stage, before its pipeline ends: idle = time no charged event covers (the gradient
    reduction in flight under the backward is not charged), and it is `breakdown.bubble`;
    the compute events add up to `breakdown.compute`."""
    pid = trace["otherData"]["critical_stage"] + 1
    end_us = res["details"]["pipeline_s"] * US
    mine = [e for e in _complete(trace) if e["pid"] == pid and "under backward" not in e["name"]]
    busy = [(e["ts"], min(e["ts"] + e["dur"], end_us)) for e in mine if e["ts"] < end_us]
    idle_s = (end_us - _union_s(busy)) / US
    # each event's ts and dur are rounded to the nanosecond
    assert idle_s == pytest.approx(res["breakdown"]["bubble"], abs=1e-9 * (2 * len(busy) + 1))
    compute_s = sum(e["dur"] for e in mine if e["name"] in ("F", "B")) / US
    assert compute_s == pytest.approx(res["breakdown"]["compute"], rel=1e-6)


@given(plan=plans())
@settings(max_examples=40, deadline=None)
def test_span_is_the_step_time_and_every_op_appears_once(plan):
    res, trace = _trace(plan)
    _assert_span(res, trace)
    ev = _complete(trace)
    m, v = plan.micro_batches, plan.virtual_stages
    for stage in range(plan.pp):
        mine = [e for e in ev if e["pid"] == stage + 1]
        for kind in ("F", "B"):
            ops = sorted((e["args"]["micro_batch"], e["args"]["chunk"]) for e in mine if e["name"] == kind)
            assert ops == sorted((j, c) for j in range(m) for c in range(v))
        compute = sorted((e["ts"], e["dur"]) for e in mine if e["tid"] == 1)
        assert all(a[0] + a[1] <= b[0] + 2e-3 for a, b in zip(compute, compute[1:]))  # never overlap (ns rounding)


@given(plan=plans())
@settings(max_examples=40, deadline=None)
def test_bubble_on_the_trace_is_the_reported_bubble(plan):
    _assert_bubble(*_trace(plan))


def _lengths(tmp_path) -> str:
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(str(n) for n in [300, 1800, 120, 900, 4000, 50] * 8))
    return str(path)


@pytest.mark.parametrize("model, gpus, fields", [
    ("llama-3-8b", 16, dict(tp=2, cp=2, pp=2, dp=2, sequence_parallel=True, tp_comm_overlap=True, precision="fp8",
                            recompute="full", global_batch=8, seq_len=4096)),
    ("mixtral-8x7b", 16, dict(tp=2, pp=2, dp=4, ep=4, global_batch=16, seq_len=2048)),
    ("llama-3-8b", 8, dict(pp=2, dp=4, zero=3, overlap_param_gather=False, global_batch=16, seq_len=2048)),
    ("llama-3-8b", 8, dict(pp=2, dp=4, zero=3, global_batch=16, seq_len=2048)),
    ("llama-3-8b", 8, dict(pp=2, dp=4, global_batch=16, seq_len=4096, seq_len_dist="LENGTHS")),
])
def test_span_and_bubble_hold_for_every_kind_of_term(tmp_path, model, gpus, fields):
    """CP ring, TP overlap, fp8, recomputation, EP all-to-alls, FSDP with and without prefetch,
    variable-length documents: each term lands somewhere and the sums still hold."""
    from parasim.specs.catalog import cluster_for, get_accelerator, get_model

    if fields.get("seq_len_dist") == "LENGTHS":
        fields = {**fields, "seq_len_dist": _lengths(tmp_path)}
    plan = TrainingPlan(micro_batch=1, **fields)
    res = simulate(get_model(model), cluster_for(get_accelerator("h100-sxm"), gpus), plan, timeline=True)
    out = {"command": "train", **res.to_dict()}
    trace = json.loads(train_trace.dumps(out))
    _assert_span(out, trace)
    _assert_bubble(out, trace)
    names = {e["name"] for e in _complete(trace)}
    if plan.zero == 3:
        assert "FSDP gather/reduce (F)" in names and "FSDP gather/reduce (B)" in names
    if plan.cp > 1 or plan.ep > 1:
        assert "TP/CP/EP comm (F)" in names


def test_a_forward_receives_when_the_previous_stage_has_sent():
    """GPipe's first micro-batch: the receive on stage k starts the p2p transfer time after stage
    k-1's forward (compute + exposed collectives) of the same micro-batch ended."""
    plan = TrainingPlan(pp=3, micro_batch=1, global_batch=4, seq_len=256, schedule="gpipe")
    res, trace = _trace(plan)
    ev = [e for e in _complete(trace) if e["args"].get("micro_batch") == 0 and e["args"].get("op") == "F"]
    transfer_us = res["timeline"]["p2p_transfer_s"] * US
    assert transfer_us > 0
    for k in (2, 3):
        sent = max(e["ts"] + e["dur"] for e in ev if e["pid"] == k - 1 and e["name"] in ("F", "TP/CP/EP comm (F)"))
        recv = next(e for e in ev if e["pid"] == k and e["name"] == "recv activations")
        assert recv["ts"] == pytest.approx(sent + transfer_us, abs=2e-3)
        assert recv["args"]["peer_stage"] == k - 2 and recv["args"]["bytes"] > 0


def test_recording_does_not_change_the_answer():
    plan = TrainingPlan(pp=2, dp=2, micro_batch=1, global_batch=8, seq_len=256)
    plain = simulate(TINY, make_cluster(4), plan).to_dict()
    traced = simulate(TINY, make_cluster(4), plan, timeline=True).to_dict()
    assert "timeline" not in plain and traced.pop("timeline")["stages"]
    assert traced == plain


def test_cli_writes_a_trace_that_parses_and_is_deterministic(tmp_path):
    a, b = tmp_path / "a" / "step.json", tmp_path / "b.json"
    out = tmp_path / "r.json"
    r1 = run_cli(*README_TRAIN, "--timeline", str(a), "--json-out", str(out))
    r2 = run_cli(*README_TRAIN, "--timeline", str(b), "--json")
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    assert a.read_bytes() == b.read_bytes()
    trace, res = json.loads(a.read_text()), json.loads(out.read_text())
    assert res["timeline"]["stages"] and len({e["pid"] for e in _complete(trace)}) == 4
    ev = _complete(trace)
    assert abs(max(e["ts"] + e["dur"] for e in ev) - res["step_time_s"] * US) <= 1.0
    # the saved result redraws the same trace
    assert train_trace.dumps(res) == a.read_text()


def test_without_timeline_the_json_is_unchanged(tmp_path):
    r = run_cli(*README_TRAIN, "--json")
    assert r.returncode == 0 and "timeline" not in json.loads(r.stdout)


def test_timeline_from_a_config_file_is_relative_to_it(tmp_path):
    cfg = tmp_path / "plan.yaml"
    cfg.write_text("model: llama-3-8b\ngpu: h100-sxm\ngpus: 8\npp: 2\nglobal_batch: 8\nseq_len: 1024\n"
                   "timeline: out/step.json\n")
    r = run_cli("train", "-c", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "step.json").read_text())["traceEvents"]


@pytest.mark.parametrize("value, code, words", [("", 1, "cannot write .: Is a directory"), ("DIR", 1, "Is a directory"),
                                                 ("BLOCK/step.json", 1, "Not a directory")])
def test_bad_timeline_path_is_one_clear_message(tmp_path, value, code, words):
    (tmp_path / "BLOCK").write_text("x")
    (tmp_path / "DIR").mkdir()
    target = str(tmp_path / value) if value else value
    r = run_cli(*README_TRAIN, "--timeline", target)
    assert r.returncode == code and words in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("value", ["[1, 2]", "{a: 1}", "\"a\\x01b\""])
def test_a_config_timeline_that_is_not_a_path_is_exit_2_naming_the_key(tmp_path, value):
    cfg = tmp_path / "plan.yaml"
    cfg.write_text(f"model: llama-3-8b\ngpu: h100-sxm\ngpus: 8\ntimeline: {value}\n")
    r = run_cli("train", "-c", str(cfg))
    assert r.returncode == 2 and "timeline" in r.stderr and "Traceback" not in r.stderr, r.stderr
