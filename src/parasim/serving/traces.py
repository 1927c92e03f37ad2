"""Request traces as people have them, read into a `Workload`.

Formats, recognised from the CSV header (or the keys of a JSONL file's first object; names are
matched ignoring case and surrounding spaces):

| format   | arrival       | prompt             | output            | origin |
|----------|---------------|--------------------|-------------------|--------|
| parasim  | arrival_s     | prompt_tokens      | output_tokens     | as written (+ prefix_id, prefix_tokens) |
| vidur    | arrived_at    | num_prefill_tokens | num_decode_tokens | earliest request at t = 0 |
| azure    | TIMESTAMP     | ContextTokens      | GeneratedTokens   | earliest request at t = 0 |
| burstgpt | Timestamp     | Request tokens     | Response tokens   | earliest request at t = 0 |

Anything else is mapped with `--trace-columns arrival=COL,prompt=COL,output=COL[,arrival_unit=ms]`.

The rules (docs/serving.md, "Trace formats"):

* Arrival: a number of seconds (`arrival_unit` s, ms, us or ns for mapped columns) or an ISO-8601
  date-time (`2023-11-16 18:15:46.6805900`, any number of fractional digits, `T` or a space, an
  optional `Z` / `+00:00`; no zone = UTC). The foreign formats are excerpts of long logs, so the
  earliest request arrives at t = 0; parasim's own `arrival_s` is taken as written.
* Rows are sorted by arrival (stable: equal times keep file order). `limit` keeps the first N
  requests in file order.
* A row with 0 output (BurstGPT's failed requests) or 0 prompt tokens in a foreign format is
  skipped and counted; parasim's own format requires >= 1 of each.
* With `max_total_tokens` (the model's max_seq_len) a request whose prompt + output exceeds it is
  an error naming the line, as vLLM rejects it (prompt + max_tokens > max_model_len).
* Token counts are whole numbers up to MAX_TRACE_TOKENS; NaN, Infinity, booleans, strings in
  JSON, binary or UTF-16 files and deeply nested JSON lines are errors naming the file and line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from parasim.errors import InputError
from parasim.serving.requests import Workload
from parasim.specs import edge

#: Largest prompt or output of one request (tokens): far above any model's context (10M).
MAX_TRACE_TOKENS = 100_000_000
#: Latest numeric arrival (seconds after the trace's origin; ~317 years).
MAX_ARRIVAL_S = 1e10
ARRIVAL_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


@dataclass(frozen=True, kw_only=True)
class TraceColumns:
    """Where a trace keeps each request's arrival and lengths, and how to read them."""

    format: str
    arrival: str
    prompt: str
    output: str
    arrival_unit: str = "s"
    prefix_id: str | None = None
    prefix_tokens: str | None = None

    @property
    def native(self) -> bool:
        """parasim's own columns: arrival times as written, 0-token rows are errors."""
        return self.format == "parasim"

    def to_dict(self) -> dict[str, str]:
        d = {"arrival": self.arrival, "prompt": self.prompt, "output": self.output}
        if self.arrival_unit != "s":
            d["arrival_unit"] = self.arrival_unit
        for k in ("prefix_id", "prefix_tokens"):
            if getattr(self, k) and not self.native:
                d[k] = getattr(self, k)
        return d


KNOWN_FORMATS = (
    TraceColumns(format="parasim", arrival="arrival_s", prompt="prompt_tokens", output="output_tokens",
                 prefix_id="prefix_id", prefix_tokens="prefix_tokens"),
    TraceColumns(format="vidur", arrival="arrived_at", prompt="num_prefill_tokens", output="num_decode_tokens"),
    TraceColumns(format="azure", arrival="TIMESTAMP", prompt="ContextTokens", output="GeneratedTokens"),
    TraceColumns(format="burstgpt", arrival="Timestamp", prompt="Request tokens", output="Response tokens"),
)
_MAPPING_KEYS = ("arrival", "prompt", "output", "arrival_unit", "prefix_id", "prefix_tokens")


def parse_trace_columns(spec: str | Mapping[str, Any] | None, field: str = "trace_columns") -> TraceColumns | None:
    """`arrival=COL,prompt=COL,output=COL[,arrival_unit=ms][,prefix_id=COL,prefix_tokens=COL]`
    (or the same as a mapping in a config file) -> TraceColumns; None when not given."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, str):
        pairs: dict[str, Any] = {}
        for part in spec.split(","):
            key, eq, value = part.partition("=")
            if not eq:
                raise InputError(field, f"expected key=column pairs separated by commas, got {part.strip()!r}")
            pairs[key.strip().replace("-", "_")] = value.strip()
        spec = pairs
    if not isinstance(spec, Mapping):
        raise InputError(field, f"must be 'arrival=COL,prompt=COL,output=COL' or a mapping, got {spec!r}")
    unknown = sorted(str(k) for k in spec if k not in _MAPPING_KEYS)
    if unknown:
        raise InputError(f"{field}.{unknown[0]}", f"unknown key; allowed: {', '.join(_MAPPING_KEYS)}")
    cols = {k: edge.text_value(f"{field}.{k}", spec.get(k), allow_none=k not in ("arrival", "prompt", "output"))
            for k in _MAPPING_KEYS}
    unit = cols.pop("arrival_unit") or "s"
    if unit not in ARRIVAL_UNITS:
        raise InputError(f"{field}.arrival_unit", f"'{unit}' is not one of {', '.join(ARRIVAL_UNITS)}")
    return TraceColumns(format="custom", arrival_unit=unit, **{k: v.strip() if v else v for k, v in cols.items()})


def _shown(names: list[str]) -> str:
    """A header's column names for a message: printable ones as written, others as Python
    literals, so a control character from the file never breaks the one-line error."""
    return ", ".join(n if n.isprintable() else repr(n) for n in names)


def _key(name: str) -> str:
    return name.strip().lower()


def _resolve(names: list[str], wanted: TraceColumns | None, where: str) -> TraceColumns:
    """The columns to read, spelled as in the file: `wanted` (from --trace-columns), else the
    first known format whose three columns the header holds."""
    by_key: dict[str, str] = {}
    for n in names:
        by_key.setdefault(_key(n), n)
    if wanted is not None:
        for k in ("arrival", "prompt", "output", "prefix_id", "prefix_tokens"):
            col = getattr(wanted, k)
            if col and _key(col) not in by_key:
                raise InputError("trace_columns", f"column '{col}' ({k}) is not in {where}'s header "
                                                  f"(columns: {_shown(names)})")
        return replace(wanted, **{k: by_key[_key(getattr(wanted, k))] for k in
                                  ("arrival", "prompt", "output", "prefix_id", "prefix_tokens") if getattr(wanted, k)})
    for fmt in KNOWN_FORMATS:
        if all(_key(c) in by_key for c in (fmt.arrival, fmt.prompt, fmt.output)):
            # optional columns keep their names: a JSONL line may carry them when the first does not
            found = {k: by_key.get(_key(getattr(fmt, k)), getattr(fmt, k)) if getattr(fmt, k) else None
                     for k in ("arrival", "prompt", "output", "prefix_id", "prefix_tokens")}
            return replace(fmt, **found)
    known = "; ".join(f"{f.format}: {f.arrival}, {f.prompt}, {f.output}" for f in KNOWN_FORMATS)
    raise InputError(where, f"columns {_shown(names) or '(none)'} are not a known trace format ({known}); "
                            "map yours with --trace-columns arrival=COL,prompt=COL,output=COL")


# --- values ------------------------------------------------------------------------------------
_INT = re.compile(r"[+-]?\d+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_DATETIME = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?\s*(Z|z|[+-]\d{2}:?\d{2})?",
                       re.ASCII)


def _number_text(text: str) -> float | int | None:
    """A CSV cell as a number: decimal notation only (no '1_000', no hex); NaN and Infinity are
    returned as floats so that the checker names them."""
    s = text.strip()
    if len(s) <= 30 and _INT.fullmatch(s):  # longer digit strings go through float (huge, then refused)
        return int(s)
    if _FLOAT.fullmatch(s) or s.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        return float(s)
    return None


def _whole(raw: Any, col: str, where: str, *, lo: int, from_text: bool, hi: float = MAX_TRACE_TOKENS) -> int:
    """A whole number from a JSON value, or from CSV text when `from_text` (JSON strings are refused)."""
    value = raw
    if from_text and isinstance(raw, str):
        value = _number_text(raw)
        if value is None:
            raise InputError(where, f"'{col}' is not a number: {raw!r}")
    return edge.number(f"{where} '{col}'", value, integer=True, lo=lo, hi=hi,
                       hint="longer than any model's context; check the column mapping")


_DAYS: dict[str, int | None] = {}


def _day(text: str) -> int | None:
    """The proleptic ordinal of a YYYY-MM-DD date, None if it is not a date (cached: a trace holds
    few distinct days and millions of rows)."""
    if text in _DAYS:
        return _DAYS[text]
    try:
        day: int | None = date.fromisoformat(text).toordinal()
    except ValueError:
        day = None
    if len(_DAYS) >= 100_000:
        _DAYS.clear()
    _DAYS[text] = day
    return day


def _datetime(text: str) -> tuple[int, float] | None:
    """An ISO-8601 date-time as (whole seconds since 0001-01-01 UTC, fraction): exact at any
    number of fractional digits, and free of float rounding in the whole part."""
    m = _DATETIME.fullmatch(text.strip())
    if not m:
        return None
    day = _day(m[1])
    if day is None:
        return None
    h, mi, s = int(m[2]), int(m[3]), int(m[4])
    if h > 23 or mi > 59 or s > 60:
        return None
    zone = 0
    if m[6] and m[6] not in "Zz":
        sign = -1 if m[6][0] == "-" else 1
        digits = m[6][1:].replace(":", "")
        if int(digits[:2]) > 14 or int(digits[2:]) > 59:  # UTC offsets run from -12:00 to +14:00
            return None
        zone = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    frac = float("0." + m[5]) if m[5] else 0.0
    return day * 86400 + h * 3600 + mi * 60 + s - zone, frac


# --- rows --------------------------------------------------------------------------------------
def _csv_rows(text: str, name: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next((row for row in reader if any(c.strip() for c in row)), [])
    except csv.Error as e:
        raise InputError(f"{name} line {reader.line_num}", f"malformed CSV ({e})") from None
    header = [h.strip() for h in header]

    def rows() -> Iterator[tuple[int, list[str]]]:
        try:
            for row in reader:
                if any(c.strip() for c in row):
                    yield reader.line_num, row
        except csv.Error as e:
            raise InputError(f"{name} line {reader.line_num}", f"malformed CSV ({e})") from None

    return header, rows()


def _jsonl_rows(text: str, name: str) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    lines = text.splitlines()

    def parsed() -> Iterator[tuple[int, dict[str, Any]]]:
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            row = edge.load_json(line, f"{name} line {i}")
            if not isinstance(row, dict):
                raise InputError(f"{name} line {i}", "each line must be a JSON object")
            yield i, row

    it = parsed()
    first = next(it, None)
    if first is None:
        return [], iter(())

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        yield first
        yield from it

    return [str(k) for k in first[1]], rows()


def _is_csv(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return True
    if suffix in (".jsonl", ".json", ".ndjson"):
        return False
    return not text.lstrip().startswith("{")


# --- reading -----------------------------------------------------------------------------------
def read_trace(path: str | Path, *, limit: int | None = None, columns: TraceColumns | None = None,
               max_total_tokens: int | None = None, model_name: str = "the model") -> Workload:
    """A Workload from a trace file (module docstring for the formats and rules); every bad value
    is an InputError naming the file and line. The workload's `trace` records the format, the
    columns, the skipped rows and the origin of t = 0."""
    p = Path(path)
    text = edge.read_text(p, "trace", what="trace")
    is_csv = _is_csv(p, text)
    names, rows = (_csv_rows if is_csv else _jsonl_rows)(text, p.name)
    if not names:
        raise InputError("trace", f"{p.name} holds no requests (empty trace)")
    cols = _resolve(names, columns, f"{p.name} line 1")
    scale = ARRIVAL_UNITS[cols.arrival_unit]
    lo = 1 if cols.native else 0
    pick = _picker(cols, names if is_csv else None)
    whole: list[int] = []
    frac: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    pid: list[int] = []
    ptok: list[int] = []
    skipped = {"no_output_tokens": 0, "no_prompt_tokens": 0}
    kind = None  # "number" | "datetime", set by the first request
    for line, row in rows:
        if limit is not None and len(prompt) >= limit:
            break
        a_raw, p_raw, o_raw, id_raw, pt_raw = pick(row)
        where = f"{p.name} line {line}"
        for col, v in ((cols.arrival, a_raw), (cols.prompt, p_raw), (cols.output, o_raw)):
            if _missing(v):
                raise InputError(where, f"missing field '{col}'")
        stamp, now = _arrival(a_raw, cols, where, is_csv, scale)
        if kind is None:
            kind = now
        elif now != kind:
            raise InputError(where, f"'{cols.arrival}' mixes date-times and numbers (the first request set the kind)")
        p_tok = _count(p_raw, cols.prompt, where, lo, is_csv)
        o_tok = _count(o_raw, cols.output, where, lo, is_csv)
        if o_tok == 0 or p_tok == 0:
            skipped["no_output_tokens" if o_tok == 0 else "no_prompt_tokens"] += 1
            continue
        if max_total_tokens is not None and p_tok + o_tok > max_total_tokens:
            raise InputError(where, f"prompt {p_tok:,} + output {o_tok:,} = {p_tok + o_tok:,} tokens exceed "
                                    f"{model_name}'s context (max_seq_len {max_total_tokens:,}); vLLM rejects such "
                                    "a request: remove the row or use a model with a longer context")
        i_pid = -1 if _missing(id_raw) else _whole(id_raw, cols.prefix_id, where, lo=-1, from_text=is_csv, hi=2**62)
        i_pt = 0 if _missing(pt_raw) else _count(pt_raw, cols.prefix_tokens, where, 0, is_csv)
        if i_pt > p_tok:
            raise InputError(where, f"'{cols.prefix_tokens}' must be between 0 and {cols.prompt}={p_tok}, got {i_pt}")
        whole.append(stamp[0])
        frac.append(stamp[1])
        prompt.append(p_tok)
        output.append(o_tok)
        pid.append(i_pid)
        ptok.append(i_pt)
    if not prompt:
        why = f" ({_skipped_text(skipped)})" if any(skipped.values()) else ""
        raise InputError("trace", f"{p.name} holds no requests{why}")
    w = np.asarray(whole, dtype=np.int64)
    arrival = (w - w.min()).astype(np.float64) + np.asarray(frac, dtype=np.float64)
    first = int(np.argmin(arrival))
    info: dict[str, Any] = {"file": p.name, "format": cols.format, "columns": cols.to_dict(),
                            "skipped": {k: v for k, v in skipped.items() if v},
                            "sorted": bool(np.all(np.diff(arrival) >= 0))}
    if not cols.native:
        info["origin"] = _origin(kind, whole[first], frac[first])
        arrival = arrival - arrival[first]
    if arrival.max() > MAX_ARRIVAL_S:  # date-times: numbers were checked one by one
        raise InputError(f"{p.name} '{cols.arrival}'", f"the trace spans {arrival.max():g} s, past "
                                                       f"{MAX_ARRIVAL_S:g} s; check its dates")
    wl = Workload.from_columns(arrival, prompt, output, pid, ptok, where=p.name)
    return replace(wl, trace=info)


def _picker(cols: TraceColumns, header: list[str] | None):
    """row -> (arrival, prompt, output, prefix_id, prefix_tokens) raw values (None when absent):
    by index for a CSV row (a list), by key for a JSON object."""
    fields = (cols.arrival, cols.prompt, cols.output, cols.prefix_id, cols.prefix_tokens)
    if header is None:
        return lambda row: [row.get(f) if f else None for f in fields]
    index: dict[str, int] = {}
    for i, n in enumerate(header):
        index.setdefault(n, i)
    idx = [index.get(f) if f else None for f in fields]
    return lambda row: [row[i] if i is not None and i < len(row) else None for i in idx]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _count(raw: Any, col: str, where: str, lo: int, is_csv: bool) -> int:
    """A token count; plain ASCII digits (nearly every CSV cell) take the short way."""
    if is_csv and len(raw) < 10 and raw.isdigit() and raw.isascii():
        v = int(raw)
        if lo <= v <= MAX_TRACE_TOKENS:
            return v
    return _whole(raw, col, where, lo=lo, from_text=is_csv)


def _arrival(raw: Any, cols: TraceColumns, where: str, is_csv: bool, scale: float) -> tuple[tuple[int, float], str]:
    """((whole seconds, fraction), kind) of one arrival: a number of `scale` seconds (CSV text or a
    JSON number), or a date-time string."""
    value = raw
    if isinstance(raw, str):
        value = _number_text(raw) if is_csv else None
        if value is None:
            stamp = None if cols.native else _datetime(raw)
            if stamp is not None:
                return stamp, "datetime"
            allowed = "a number of seconds" if cols.native else "a number or an ISO-8601 date-time"
            raise InputError(where, f"'{cols.arrival}' must be {allowed}, got {raw!r}")
    seconds = edge.number(f"{where} '{cols.arrival}'", value, lo=0) * scale
    if seconds > MAX_ARRIVAL_S:
        raise InputError(f"{where} '{cols.arrival}'", f"{seconds:g} s is past {MAX_ARRIVAL_S:g} s; give arrivals "
                                                      "in seconds, or set arrival_unit in --trace-columns")
    return (0, float(seconds)), "number"


def _origin(kind: str | None, whole: int, frac: float) -> str:
    """What t = 0 is on the file's own clock: a UTC date-time, or a number of seconds."""
    if kind == "datetime":
        day, rest = divmod(whole, 86400)
        micro = min(int(round(frac * 1e6)), 999_999)
        return (f"{date.fromordinal(day).isoformat()} {rest // 3600:02d}:{rest % 3600 // 60:02d}:"
                f"{rest % 60:02d}.{micro:06d} UTC")
    return f"{frac:.6f}".rstrip("0").rstrip(".") + " s"


def _skipped_text(skipped: Mapping[str, int]) -> str:
    parts = [f"{n:,} {'row' if n == 1 else 'rows'} with 0 {k.removeprefix('no_').replace('_', ' ')}"
             for k, n in skipped.items() if n]
    return "skipped " + " and ".join(parts) if parts else ""


def trace_note(info: Mapping[str, Any] | None) -> str | None:
    """One line for stderr when reading the trace changed what it holds (rows skipped or
    reordered, a clock shifted to t = 0); None when the trace was used as written."""
    if not info:
        return None
    parts = []
    if info.get("skipped"):
        parts.append(_skipped_text(info["skipped"]) + " (failed or empty requests, not served)")
    if not info.get("sorted", True):
        parts.append("rows sorted by arrival")
    if info.get("origin"):
        parts.append(f"t = 0 is the earliest arrival, {info['origin']}")
    if not parts:
        return None
    return f"trace {info['file']} ({info['format']}): " + "; ".join(parts)
