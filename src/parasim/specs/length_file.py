"""Files of lengths: one length per line, optionally `length,weight` (or `length weight`).

Two options read them: serve's `--prompt-dist` / `--output-dist` (request lengths, weighted) and
train's `--seq-len-dist` (document lengths). One reader for both, so the same hostile lines
(NaN, inf, 1e30, 2.5, a UTF-16 or binary file) get the same one-line error naming the file and
line. Blank lines, `#` comments and a header line (length / value / tokens ...) are skipped.
"""

from __future__ import annotations

from pathlib import Path

from parasim.errors import InputError
from parasim.specs import edge

#: Largest weight a line may carry; weights are relative, so this only keeps sums finite.
MAX_WEIGHT = 1e12
_HEADER_WORDS = ("length", "value", "tokens")


def read_lengths(path: str | Path, field: str, *, hi: int, weighted: bool) -> tuple[list[int], list[float]]:
    """(lengths, weights) of a length file: whole numbers in 1..hi, weights finite in
    [0, MAX_WEIGHT] (1 when not given; a weight on a line is an error unless `weighted`), at least
    one length and a positive total weight. `field` names the option the file came from."""
    p = Path(path)
    text = edge.read_text(p, field, what="length file")
    values: list[int] = []
    weights: list[float] = []
    for i, line in enumerate(text.splitlines(), start=1):
        s = line.split("#", 1)[0].strip()
        if not s or (not values and s.lower().startswith(_HEADER_WORDS)):
            continue
        where = f"{p.name} line {i}"
        parts = s.replace(",", " ").split()
        allowed = "'length' or 'length,weight'" if weighted else "one length"
        if len(parts) > (2 if weighted else 1):
            raise InputError(where, f"expected {allowed} per line, got {s!r}")
        value = _as_number(parts[0], where, allowed)
        values.append(edge.number(f"{where} length", value, integer=True, lo=1, hi=hi,
                                  hint="longer than any model's context"))
        weight = _as_number(parts[1], where, allowed) if len(parts) > 1 else 1.0
        weights.append(float(edge.number(f"{where} weight", weight, lo=0, hi=MAX_WEIGHT)))
    if not values:
        raise InputError(field, f"{p.name} holds no lengths")
    if sum(weights) <= 0:
        raise InputError(field, f"{p.name}: every weight is 0")
    return values, weights


def _as_number(text: str, where: str, allowed: str) -> float | int:
    """Decimal ASCII notation only: Python's float() would also read '1_000' and Arabic-Indic digits."""
    try:
        if not text.isascii() or "_" in text:
            raise ValueError(text)
        return int(text) if text.lstrip("+-").isdigit() else float(text)
    except ValueError:
        raise InputError(where, f"expected {allowed} per line, got {text!r}") from None
