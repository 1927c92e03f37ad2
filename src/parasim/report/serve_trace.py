"""`parasim serve --timeline FILE`: a recorded serving run as Chrome trace events (docs/serving.md).

One process per replica (per role and replica when disaggregated). Inside it one track per engine
instance: with PP, a replica is `pp` virtual engines (vLLM's pipeline mode), each iteration a
micro-batch's trip through every stage, so stages are not separate tracks. Every iteration is one
"X" event named by what it ran (prefill, decode, mixed, or preempt for a step that only preempted)
with its batch in args; counter tracks per instance: `kv_cache` (used fraction of its blocks) and
`requests` (running, waiting), sampled at iteration boundaries (the last sample of an instant: an
iteration's end and the next start often share one) and written when they change. A
last process holds the first `max_requests` requests by arrival as async spans from arrival to
finish (cat "request", id = request id) with a "first token" instant; a request dropped before
finishing ends where it arrived, marked `dropped`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parasim.report.trace import async_event, complete_lines, counter_lines, process, thread
from parasim.serving.recording import InstanceRecord, Recording
from parasim.serving.series import samples

#: requests traced by default (`--timeline-requests`): the first this many by arrival
DEFAULT_REQUESTS = 1000


def _process_name(role: str, replica: int) -> str:
    return f"replica {replica}" if role == "mixed" else f"{role} replica {replica}"


def _kind(prefill_tokens: int, decode_requests: int) -> str:
    if prefill_tokens and decode_requests:
        return "mixed"
    return "prefill" if prefill_tokens else "decode" if decode_requests else "preempt"


def _instance_events(rec: InstanceRecord, pid: int, pp: int) -> list[dict[str, Any] | str]:
    tid = rec.engine + 1
    label = "iterations" if pp == 1 else f"virtual engine {rec.engine} (each iteration crosses all {pp} stages)"
    s = rec.starts
    t, dt = s["t_s"], s["dt_s"]
    pre, dec = s["prefill_tokens"].tolist(), s["decode_requests"].tolist()
    names = [_kind(p, d) for p, d in zip(pre, dec)]
    out: list[dict[str, Any] | str] = [thread(pid, tid, label)]
    out += complete_lines(pid, tid, "iteration", names, t.tolist(), (t + dt).tolist(),
                          {"prefill_tokens": pre, "decode_requests": dec, "preemptions": s["preempted"].tolist(),
                           "iteration_s": dt.tolist()})
    suffix = "" if pp == 1 else f" (engine {rec.engine})"
    ts, vals = samples(rec)
    last = np.append(ts[1:] != ts[:-1], True) if ts.size else np.zeros(0, dtype=bool)  # the last at each instant
    ts = ts[last]
    frac = (vals["kv_blocks"][last] / max(rec.kv_capacity_blocks, 1)).round(6)
    run, wait = vals["running"][last], vals["waiting"][last]
    kv_new = _changed(frac)
    q_new = _changed(run) | _changed(wait)
    out += counter_lines(pid, "kv_cache" + suffix, ts[kv_new].tolist(), {"used_fraction": frac[kv_new].tolist()})
    out += counter_lines(pid, "requests" + suffix, ts[q_new].tolist(),
                         {"running": run[q_new].tolist(), "waiting": wait[q_new].tolist()})
    return out


def _changed(v: np.ndarray) -> np.ndarray:
    """Samples that differ from the one before (the first always): a counter holds its value."""
    return np.concatenate([[True], v[1:] != v[:-1]]) if v.size else np.zeros(0, dtype=bool)


def _request_events(cols: dict[str, np.ndarray], pid: int, max_requests: int) -> list[dict[str, Any]]:
    arrival = cols["arrival_s"]
    chosen = np.argsort(arrival, kind="stable")[:max_requests]
    first, finish = cols["first_token_s"], cols["finish_s"]
    out = []
    for rid in chosen.tolist():
        a = float(arrival[rid])
        name = f"request {rid}"
        out.append(async_event("b", pid, name, "request", rid, a,
                               {"prompt_tokens": int(cols["prompt_tokens"][rid]),
                                "output_tokens": int(cols["output_tokens"][rid]),
                                "instance": int(cols["instance"][rid])}))
        if not cols["completed"][rid]:
            out.append(async_event("e", pid, name, "request", rid, a, {"dropped": True}))
            continue
        ft, fin = float(first[rid]), float(finish[rid])
        out.append(async_event("n", pid, "first token", "request", rid, ft))
        out.append(async_event("e", pid, name, "request", rid, fin,
                               {"ttft_s": ft - a, "e2e_s": fin - a, "preemptions": int(cols["preemptions"][rid])}))
    return out


def trace_events(recording: Recording, requests: dict[str, np.ndarray],
                 max_requests: int = DEFAULT_REQUESTS) -> list[dict[str, Any] | str]:
    """The trace events of a recorded run (`ServingResult.recording` and `.requests`) for
    `report.trace.dumps_trace` (the per-iteration ones already encoded)."""
    pids: dict[tuple[str, int], int] = {}
    events: list[dict[str, Any] | str] = []
    for rec in recording.instances:
        key = (rec.role, rec.replica)
        if key not in pids:
            pids[key] = len(pids) + 1
            events += process(pids[key], _process_name(*key), pids[key])
        events += _instance_events(rec, pids[key], recording.pp)
    shown = min(max_requests, len(requests["arrival_s"]))
    if shown:
        pid = len(pids) + 1
        events += process(pid, f"requests (first {shown:,} by arrival)", pid)
        events += _request_events(requests, pid, shown)
    return events
