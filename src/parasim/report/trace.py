"""Chrome trace-event JSON (opens in Perfetto and chrome://tracing): a small generic writer.

A trace is `{"traceEvents": [...], "displayTimeUnit": "ms"}` with times in microseconds. Callers
build plain event dicts (complete "X", counter "C", async "b"/"n"/"e", metadata "M") with the
helpers here; `dumps_trace` writes them one per line with sorted keys, so the same events give the
same bytes and a diff of two traces reads line by line. Streams of one event per simulated step
are encoded from columns instead (`complete_lines`, `counter_lines`: the same text, no dict each).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

#: decimals kept of a time in microseconds (nanoseconds: finer is below any simulated cost)
US_DECIMALS = 3


def us(t_s: float) -> float:
    """Seconds -> microseconds, rounded to the nanosecond (numpy's rounding, as `us_array`)."""
    return float(np.round(t_s * 1e6, US_DECIMALS))


def us_array(t_s) -> np.ndarray:
    """`us` of many times at once."""
    return np.round(np.asarray(t_s, dtype=np.float64) * 1e6, US_DECIMALS)


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
            "dur": float(np.round(us(end_s) - ts, US_DECIMALS)), "args": args}


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


def _template(fixed: dict[str, Any], varying: list[str]) -> str:
    """A %-format line of one event: `fixed` keys encoded now, `varying` ones as %s slots, keys in
    sorted order (as `dumps_trace` writes dicts), `args` keys sorted too."""
    parts = []
    for key in sorted([*fixed, *varying]):
        if key == "args":
            parts.append('"args":{' + ",".join(f'"{k}":%s' for k in sorted(fixed["args"])) + "}")
        elif key in fixed:
            parts.append(f'"{key}":{json.dumps(fixed[key])}')
        else:
            parts.append(f'"{key}":%s')
    return "{" + ",".join(parts) + "}"


def _finite(cols: list[list]) -> None:
    """JSON has no NaN or infinity (dumps_trace refuses them in dicts too)."""
    if not all(np.isfinite(np.asarray(c, dtype=np.float64)).all() for c in cols):
        raise ValueError("trace values must be finite")


def complete_lines(pid: int, tid: int, cat: str, names: list[str], start_s: list[float], end_s: list[float],
                   args: dict[str, list]) -> list[str]:
    """Many "X" events of one track, already encoded (the same text `complete` + `dumps_trace`
    give, about three times faster: a run has one per iteration). `args` maps a name to one value per
    event (whole numbers or finite floats)."""
    keys = sorted(args)
    cols = [np.asarray(args[k]).tolist() for k in keys]  # plain ints and floats: %s writes them as JSON does
    _finite([start_s, end_s, *cols])
    line = _template({"args": dict.fromkeys(keys), "cat": cat, "ph": "X", "pid": pid, "tid": tid},
                     ["dur", "name", "ts"])
    quoted = {n: json.dumps(n) for n in set(names)}
    ts = us_array(start_s)
    dur = np.round(us_array(end_s) - ts, US_DECIMALS).tolist()
    return [line % (*row[3:], row[0], quoted[row[1]], row[2]) for row in zip(dur, names, ts.tolist(), *cols)]


def counter_lines(pid: int, name: str, t_s: list[float], values: dict[str, list]) -> list[str]:
    """Many "C" samples of one counter track, already encoded (as `counter` + `dumps_trace`)."""
    keys = sorted(values)
    cols = [np.asarray(values[k]).tolist() for k in keys]
    _finite([t_s, *cols])
    line = _template({"args": dict.fromkeys(keys), "name": name, "ph": "C", "pid": pid, "tid": 0}, ["ts"])
    return [line % (*row[1:], row[0]) for row in zip(us_array(t_s).tolist(), *cols)]


def dumps_trace(events: list[dict[str, Any] | str], display_time_unit: str = "ms",
                other_data: dict[str, Any] | None = None) -> str:
    """The trace file's text: deterministic, one event per line (an event is a dict, or a line
    `complete_lines` / `counter_lines` already encoded); `other_data` (what the trace is of) goes in
    the format's `otherData` object."""
    encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False).encode  # one encoder, not one per event
    body = ",\n".join(e if isinstance(e, str) else encode(e) for e in events)
    other = "" if other_data is None else f'"otherData": {encode(other_data)}, '
    return f'{{"displayTimeUnit": "{display_time_unit}", {other}"traceEvents": [\n{body}\n]}}\n'
