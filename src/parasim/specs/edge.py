"""Reading external values once, at the edge: files, YAML/JSON, numbers.

Every value a user hands parasim (a flag, a config key, a trace line, a model config, a case
file) passes through one of these functions before anything computes with it. Each failure is an
`InputError` naming the field and what is allowed, so the CLI prints one line and exits 2 instead
of a traceback, a hang or a silently wrong answer.

Why a module of its own: the hostile inputs are the same everywhere (NaN, inf, 1e20, booleans
where numbers go, strings that look like numbers, binary or UTF-16 files, YAML alias bombs,
JSON nested a million deep) and one checker per kind keeps the messages and the limits alike.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from parasim.errors import InputError

#: Largest text file parasim reads (traces of millions of requests fit well under it).
MAX_FILE_BYTES = 2 * 1024**3
#: Largest expanded YAML document, in nodes, after aliases are followed (a "billion laughs" bomb
#: of a few hundred bytes expands past this; a real config or case file holds a few thousand).
MAX_YAML_NODES = 2_000_000
#: JSON nesting deeper than this is not a config or a trace line.
MAX_JSON_DEPTH = 64


# --- files ---------------------------------------------------------------------------------------
def read_text(path: str | Path, field: str, *, what: str = "file") -> str:
    """The file's text as UTF-8 (a BOM is dropped); a missing, binary, UTF-16 or oversized file is
    an InputError naming `field`."""
    p = Path(path)
    try:
        if not p.is_file():
            kind = "a directory, not a file" if p.is_dir() else "no such file"
            raise InputError(field, f"{kind}: {p}")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(field, f"{p.name} is {size / 1024**3:.1f} GiB; the limit for a {what} is "
                                    f"{MAX_FILE_BYTES / 1024**3:.0f} GiB (split it)")
        raw = p.read_bytes()
    except OSError as e:
        raise InputError(field, f"cannot read {p}: {e.strerror or e}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(field, f"{p.name} is UTF-16 encoded; save it as UTF-8")
    if b"\x00" in raw:
        raise InputError(field, f"{p.name} is not a text file (it holds NUL bytes); a {what} is UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(field, f"{p.name} is not UTF-8 text (byte {e.start}); a {what} is UTF-8 text") from None


# --- YAML ----------------------------------------------------------------------------------------
class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents whose alias-expanded size exceeds MAX_YAML_NODES."""

    def construct_document(self, node):  # noqa: D401 - PyYAML hook
        _check_expanded_size(node)
        return super().construct_document(node)


def _check_expanded_size(root) -> None:
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in sizes and not done:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        children = ([c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value))
        if not done:
            sizes[key] = -1  # in progress (a recursive alias points back here)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        total = 1
        for c in children:
            s = sizes.get(id(c), 1)
            if s < 0:
                raise yaml.YAMLError("a recursive alias (a node that contains itself)")
            total += s
            if total > MAX_YAML_NODES:
                raise _TooBig()
        sizes[key] = total


class _TooBig(yaml.YAMLError):
    pass


def load_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load` with alias expansion bounded; errors name `where` and the line."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except _TooBig:
        raise InputError(where, f"YAML expands to more than {MAX_YAML_NODES:,} nodes through its aliases "
                                "(an alias bomb?); write the values out") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{where}{f' line {mark.line + 1}' if mark else ''}", f"malformed YAML ({problem})") from None
    except RecursionError:
        raise InputError(where, "YAML nested too deeply") from None


def load_yaml_file(path: str | Path, field: str, *, what: str = "file") -> Any:
    p = Path(path)
    return load_yaml(read_text(p, field, what=what), p.name)


# --- JSON ----------------------------------------------------------------------------------------
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def load_json(text: str, where: str) -> Any:
    """`json.loads` that rejects NaN/Infinity and nesting deeper than MAX_JSON_DEPTH."""
    depth = deepest = 0
    in_str = esc = False
    brackets = text.count("[") + text.count("{")
    for ch in text if brackets > MAX_JSON_DEPTH else "":  # nesting depth outside strings
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > MAX_JSON_DEPTH:
        raise InputError(where, f"JSON nested {deepest} deep; at most {MAX_JSON_DEPTH} levels are read")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise InputError(where, f"malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except ValueError as e:
        raise InputError(where, f"malformed JSON ({e})") from None


# --- numbers -------------------------------------------------------------------------------------
_BARE_EXPONENT = re.compile(r"^[+-]?\d+(\.\d*)?[eE][+-]?\d+$")


def _exponent_hint(value: Any) -> str:
    """PyYAML follows YAML 1.1, which reads `2e-05` (an exponent with no decimal point, or with no sign)
    as text: say how to write it, since the user meant a number."""
    if isinstance(value, str) and _BARE_EXPONENT.match(value.strip()):
        mantissa, exponent = re.split("[eE]", value.strip())
        mantissa += "" if "." in mantissa else ".0"
        sign = "" if exponent[0] in "+-" else "+"
        return (f"; YAML reads an exponent without a decimal point and a sign as text: "
                f"write {mantissa}e{sign}{exponent}")
    return ""


def number(field: str, value: Any, *, integer: bool = False, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, allow_none: bool = False, hint: str = "") -> Any:
    """`value` as a finite int/float within [lo, hi] (or (lo, hi] with lo_open); booleans, strings,
    NaN and inf are refused. `hint` is appended to a too-large message (how to go past a cap)."""
    if value is None:
        if allow_none:
            return None
        raise InputError(field, "required")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise InputError(field, f"must be {kind}, got {value!r} ({type(value).__name__}){_exponent_hint(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(field, f"must be a finite number, got {value}")
    if integer:
        if isinstance(value, float):
            if value != int(value):
                raise InputError(field, f"must be a whole number, got {value}")
            value = int(value)
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise InputError(field, f"must be {'>' if lo_open else '>='} {_fmt(lo)}, got {_fmt(value)}")
    if hi is not None and value > hi:
        raise InputError(field, f"must be at most {_fmt(hi)}, got {_fmt(value)}{'; ' + hint if hint else ''}")
    return value


def positive_int(field: str, value: Any, *, hi: float | None = None, allow_none: bool = False,
                 hint: str = "") -> int | None:
    return number(field, value, integer=True, lo=1, hi=hi, allow_none=allow_none, hint=hint)


def positive_float(field: str, value: Any, *, hi: float | None = None, allow_none: bool = False,
                   hint: str = "") -> float | None:
    v = number(field, value, lo=0, lo_open=True, hi=hi, allow_none=allow_none, hint=hint)
    return None if v is None else float(v)


def boolean(field: str, value: Any, *, allow_none: bool = False) -> bool | None:
    """A YAML/JSON boolean; the strings 'true'/'false' (any case) are read as YAML 1.1 would not
    always, so they are accepted explicitly, and anything else ('no', 1, 'off') is an error."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InputError(field, f"must be true or false, got {value!r}")


def text_value(field: str, value: Any, *, allow_none: bool = False, choices: tuple[str, ...] | None = None) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(field, f"must be a non-empty string, got {value!r}")
    if choices is not None and value not in choices:
        raise InputError(field, f"'{value}' is not one of {', '.join(choices)}")
    return value


def _fmt(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v == int(v) and abs(v) < 1e15):
        return f"{int(v):,}"
    return f"{v:g}"


# --- caps on sizes -------------------------------------------------------------------------------
#: Default upper bounds on sizes a user can ask for. Each is far above any real job (the largest
#: clusters hold ~10^5 GPUs, the longest contexts ~10^7 tokens) and low enough that a typo or a
#: hostile value ("1000000000000 requests") is refused before it allocates or loops for hours.
#: `PARASIM_MAX_<NAME>` (e.g. PARASIM_MAX_REQUESTS=50000000) raises one; docs/limits.md lists them.
CAPS: dict[str, int] = {
    "requests": 10_000_000,       # simulated or screened requests per run
    "tokens": 10_000_000,         # one sequence or request: prompt, output, seq-len, context, token budget
    "batch_tokens": 10_000_000_000,  # tokens per optimizer step (Llama 3: 16M)
    "batch": 10_000_000,          # sequences: micro/global batch, running sequences, concurrency
    "gpus": 1_000_000,            # training GPUs, and every parallel degree drawn from them
    "replicas": 10_000,           # serving: engines (replicas, EP ranks) and the GPUs a run spreads them over
    "workers": 1024,              # worker processes
    "rows": 100_000,              # rows of a ranked table, plans re-run per round
}


def cap(name: str) -> int:
    """The cap `name` (CAPS), or the positive integer in env var PARASIM_MAX_<NAME>."""
    env = f"PARASIM_MAX_{name.upper()}"
    raw = os.environ.get(env)
    if raw is None or not raw.strip():
        return CAPS[name]
    text = raw.strip().replace("_", "")
    if not text.isdigit() or int(text) < 1 or len(text) > 30:
        raise InputError(env, f"must be a positive whole number, got {raw!r}")
    return int(text)


def cap_hint(name: str) -> str:
    """How to go past cap `name`: the env var to set."""
    return f"set PARASIM_MAX_{name.upper()} to go past this cap (docs/limits.md)"


def capped_int(field: str, value: Any, name: str, *, lo: int = 1, allow_none: bool = False) -> int | None:
    """An integer in [lo, cap(name)]; the too-large message says how to raise the cap."""
    return number(field, value, integer=True, lo=lo, hi=cap(name), allow_none=allow_none, hint=cap_hint(name))


def finite_float(field: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, allow_none: bool = False) -> float | None:
    """A finite float in [lo, hi] (or (lo, hi]); NaN, inf, booleans and strings are refused."""
    v = number(field, value, lo=lo, hi=hi, lo_open=lo_open, allow_none=allow_none)
    return None if v is None else float(v)
