"""Chrome trace-event JSON (opens in Perfetto and chrome://tracing): a small generic writer.

A trace is `{"traceEvents": [...], "displayTimeUnit": "ms"}` with times in microseconds. Callers
build plain event dicts (complete "X", counter "C", async "b"/"n"/"e", metadata "M") with the
helpers here; `dumps_trace` writes them one per line with sorted keys, so the same events give the
same bytes and a diff of two traces reads line by line.
"""

from __future__ import annotations

import json
from typing import Any

#: decimals kept of a time in microseconds (nanoseconds: finer is below any simulated cost)
US_DECIMALS = 3


def us(t_s: float) -> float:
    """Seconds -> microseconds, rounded to the nanosecond."""
    return round(t_s * 1e6, US_DECIMALS)


def process(pid: int, name: str, sort_index: int) -> list[dict[str, Any]]:
    """Metadata naming process `pid` and placing it `sort_index`-th in the viewer."""
    return [{"ph": "M", "pid": pid, "tid": 0, "name": "process_name", "args": {"name": name}},
            {"ph": "M", "pid": pid, "tid": 0, "name": "process_sort_index", "args": {"sort_index": sort_index}}]


def thread(pid: int, tid: int, name: str) -> dict[str, Any]:
    """Metadata naming thread (track) `tid` of process `pid`."""
    return {"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}}


def complete(pid: int, tid: int, name: str, cat: str, start_s: float, end_s: float,
             args: dict[str, Any]) -> dict[str, Any]:
    """An "X" event from start_s to end_s (the duration is taken between the rounded ends, so
    back-to-back events stay back to back)."""
    ts = us(start_s)
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "cat": cat, "ts": ts,
            "dur": round(us(end_s) - ts, US_DECIMALS), "args": args}


def counter(pid: int, name: str, t_s: float, values: dict[str, float]) -> dict[str, Any]:
    """A "C" sample: each key of `values` is one series of the counter track `name`."""
    return {"ph": "C", "pid": pid, "tid": 0, "name": name, "ts": us(t_s), "args": values}


def async_event(ph: str, pid: int, name: str, cat: str, ident: int, t_s: float,
                args: dict[str, Any] | None = None) -> dict[str, Any]:
    """A nestable async event ("b" begin, "n" instant, "e" end) of the span `ident` in `cat`."""
    e = {"ph": ph, "pid": pid, "tid": 0, "name": name, "cat": cat, "id": ident, "ts": us(t_s)}
    if args:
        e["args"] = args
    return e


def dumps_trace(events: list[dict[str, Any]], display_time_unit: str = "ms") -> str:
    """The trace file's text: deterministic, one event per line."""
    encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False).encode  # one encoder, not one per event
    body = ",\n".join(map(encode, events))
    return f'{{"displayTimeUnit": "{display_time_unit}", "traceEvents": [\n{body}\n]}}\n'
