"""Document-length distributions for `--seq-len-dist`: a length file, a histogram, or a named law.

`--seq-len-dist` takes either a file path or `NAME:key=value,...`:

- a file of lengths, one per line: the documents in file order (packed as a loader streams them);
- a histogram file, `length,count` per line: a corpus too large to list, as its length histogram;
- `lognormal:median=N,sigma=S`, `pareto:min=N,alpha=A`, `fixed:length=N`: a named law.

Histograms and named laws become SAMPLE_DOCS documents at evenly spaced quantiles (so the sample
is exact for the law, not noisy) put in a pseudo-random order by `seed=` (default 0): the same
spec always gives the same documents, and changing the seed only reorders them. Lengths above
`max=` (default: the largest accepted context) are clipped.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from functools import lru_cache
from statistics import NormalDist

from parasim.errors import InputError
from parasim.specs import edge

FIELD = "seq-len-dist"
#: documents drawn from a histogram or a named law
SAMPLE_DOCS = 4096
#: name -> (required parameters, optional parameters); each law's quantile function is _quantile
LAWS = {
    "lognormal": (("median", "sigma"), ("seed", "max")),
    "pareto": (("min", "alpha"), ("seed", "max")),
    "fixed": (("length",), ("max",)),
}


def is_named(spec: str) -> bool:
    """True when `spec` names a law (`lognormal:...`) rather than a file."""
    return spec.split(":", 1)[0].strip().lower() in LAWS and ":" in spec


@lru_cache(maxsize=16)
def load_lengths(spec: str) -> tuple[int, ...]:
    """Document lengths of a `--seq-len-dist` value (InputError naming the option on bad input)."""
    from parasim.specs import model_limits

    hi = model_limits.limit("context")
    if is_named(spec):
        return _named(spec, hi)
    from parasim.specs.length_file import read_lengths

    lengths, weights = read_lengths(spec, FIELD, hi=hi, weighted=True)
    if all(w == 1.0 for w in weights):  # a plain list: the documents in file order
        return tuple(lengths)
    return _shuffled(_weighted_quantiles(lengths, weights), 0)


def _named(spec: str, hi: int) -> tuple[int, ...]:
    name, _, body = spec.partition(":")
    name = name.strip().lower()
    required, optional = LAWS[name]
    allowed = ", ".join(required + optional)
    params: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in body.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in required + optional:
            raise InputError(FIELD, f"{name}: expected key=value with keys {allowed}, got {item!r}")
        params[key] = _number(f"{name} {key}", value.strip())
    missing = [k for k in required if k not in params]
    if missing:
        raise InputError(FIELD, f"{name} needs {', '.join(missing)} (keys: {allowed})")
    top = int(edge.number(f"{FIELD} {name} max", params.get("max", hi), integer=True, lo=1, hi=hi))
    seed = int(edge.number(f"{FIELD} {name} seed", params.get("seed", 0), integer=True, lo=0, hi=2**32 - 1))
    if name == "fixed":
        n = edge.number(f"{FIELD} fixed length", params["length"], integer=True, lo=1, hi=hi)
        return (min(int(n), top),)
    q = _quantile(name, params)
    docs = [max(1, min(top, round(q((i + 0.5) / SAMPLE_DOCS)))) for i in range(SAMPLE_DOCS)]
    return _shuffled(docs, seed)


def _quantile(name: str, p: dict[str, float]):
    """Quantile function of a law, after checking its parameters' ranges."""
    if name == "lognormal":
        median = edge.number(f"{FIELD} lognormal median", p["median"], lo=1, hi=1e9)
        sigma = edge.number(f"{FIELD} lognormal sigma", p["sigma"], lo=0, hi=5)
        z = NormalDist()
        return lambda u: median * math.exp(sigma * z.inv_cdf(u))
    low = edge.number(f"{FIELD} pareto min", p["min"], lo=1, hi=1e9)
    alpha = edge.number(f"{FIELD} pareto alpha", p["alpha"], lo=0.1, hi=100)
    return lambda u: low * (1 - u) ** (-1 / alpha)


def _number(where: str, text: str) -> float:
    try:
        if not text.isascii() or "_" in text:
            raise ValueError(text)
        return float(text)
    except ValueError:
        raise InputError(FIELD, f"{where}: expected a number, got {text!r}") from None


def _weighted_quantiles(lengths: list[int], weights: list[float]) -> list[int]:
    """SAMPLE_DOCS lengths at evenly spaced quantiles of a (length, count) histogram."""
    pairs = sorted(zip(lengths, weights))
    cum, total = [], 0.0
    for _, w in pairs:
        total += w
        cum.append(total)
    return [pairs[min(len(pairs) - 1, bisect_left(cum, (i + 0.5) / SAMPLE_DOCS * total))][0]
            for i in range(SAMPLE_DOCS)]


def _shuffled(docs: list[int], seed: int) -> tuple[int, ...]:
    """A loader's shuffled stream: the seed fixes the order (random.Random is stable across runs)."""
    random.Random(seed).shuffle(docs)
    return tuple(docs)
