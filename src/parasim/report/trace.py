"""Chrome trace-event JSON (Perfetto, chrome://tracing): a small generic writer.

A trace is a list of event dicts; this module makes the common ones and writes the file, so a
simulator's timeline only has to say what happened when. The format is the Trace Event Format's
JSON object form: `{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}`; times
(`ts`, `dur`) are microseconds. Complete events ("X") carry a start and a duration; metadata
events ("M") name processes and threads and fix their order. Output is deterministic: keys
sorted, one event per line, times rounded to the nanosecond.
"""

from __future__ import annotations

import json
from typing import Any

US_DECIMALS = 3  # microseconds kept to the nanosecond


def us(seconds: float) -> float:
    """Seconds -> microseconds, as the trace stores them."""
    return round(seconds * 1e6, US_DECIMALS)


def complete(name: str, pid: int, tid: int, start_s: float, dur_s: float, *, cat: str = "",
             args: dict[str, Any] | None = None) -> dict[str, Any]:
    """An "X" event from `start_s` lasting `dur_s` (seconds in, microseconds out)."""
    ev: dict[str, Any] = {"name": name, "ph": "X", "pid": pid, "tid": tid, "ts": us(start_s), "dur": us(dur_s),
                          "args": args or {}}
    if cat:
        ev["cat"] = cat
    return ev


def process(pid: int, name: str, sort_index: int | None = None) -> list[dict[str, Any]]:
    """Metadata naming process `pid` (and placing it: lower sort_index first)."""
    out = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}}]
    if sort_index is not None:
        out.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": sort_index}})
    return out


def thread(pid: int, tid: int, name: str) -> list[dict[str, Any]]:
    """Metadata naming thread `tid` of `pid`, ordered by its tid."""
    return [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}},
            {"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "args": {"sort_index": tid}}]


def dumps(events: list[dict[str, Any]], other_data: dict[str, Any] | None = None) -> str:
    """The trace file's text: one event per line, keys sorted, no NaN."""
    one = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False).encode
    head = f'{{"displayTimeUnit":"ms","otherData":{one(other_data or {})},"traceEvents":[\n'
    return head + ",\n".join(one(e) for e in events) + "\n]}\n"
