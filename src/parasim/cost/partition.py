"""How layers are split into pipeline stages and, with interleaving, into model chunks.

Layers are spread as evenly as possible; when they do not divide, the extra layers go to the
middle stages, because the first stage also runs the embedding and the last the LM head (the
uneven split the Llama 3 paper describes for 126 layers on 16 stages).

With `v` model chunks per pipeline rank (interleaved 1F1B) the model is cut into pp*v virtual
stages; virtual stage g = chunk * pp + rank, so rank r holds stages r, r + pp, r + 2*pp, ...
The same rule applies over the virtual stages: the first one (embedding) and the last one
(LM head) get extra layers only when every other stage already has one; the others are filled
round by round (each rank gets one extra chunk layer before any rank gets a second), middle
ranks first, so the per-rank totals stay as even as the per-chunk ones.

Where a rank's chunks sit in the model is the schedule's layout (`rank_stages`): "loop" is the
above (Megatron's interleaving); "vee" puts chunk 1 of rank r at virtual stage 2*pp-1-r, so the
model goes down the ranks and back up (ZB-V: rank 0 holds the embedding and the LM head);
"mirror" is DualPipe's: the model is cut into pp stages and rank r holds stage r and a second
copy of stage pp-1-r, one per direction micro-batches travel.
"""

from __future__ import annotations

from functools import lru_cache


def stage_layers(layers: int, pp: int) -> list[int]:
    """Layers per stage, first to last (a fresh list; the split itself is cached)."""
    return list(_stage_layers(layers, pp))


@lru_cache(maxsize=4096)
def _stage_layers(layers: int, pp: int) -> tuple[int, ...]:
    return _virtual_stage_layers(layers, pp, 1)


def virtual_stage_layers(layers: int, pp: int, v: int = 1) -> list[int]:
    """Layers per virtual stage g = chunk * pp + rank, in model order (v = 1: `stage_layers`)."""
    return list(_virtual_stage_layers(layers, pp, v))


LAYOUTS = ("loop", "vee", "mirror")


def chunk_layers(layers: int, pp: int, v: int = 1, layout: str = "loop") -> list[list[int]]:
    """Layers per (rank, chunk): `out[r][c]` is virtual stage `rank_stages(...)[r][c]`."""
    g = _virtual_stage_layers(layers, pp, stage_count(pp, v, layout) // pp)
    return [[g[s] for s in row] for row in rank_stages(pp, v, layout)]


def stage_count(pp: int, v: int, layout: str = "loop") -> int:
    """Virtual stages one micro-batch passes through (mirror: pp, each held twice)."""
    return pp if layout == "mirror" else pp * v


@lru_cache(maxsize=4096)
def rank_stages(pp: int, v: int, layout: str = "loop") -> tuple[tuple[int, ...], ...]:
    """Per rank, per chunk: the virtual stage it runs (see the module docstring)."""
    if layout == "loop":
        return tuple(tuple(c * pp + r for c in range(v)) for r in range(pp))
    if v != 2 or layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} with {v} chunks per rank")
    last = stage_count(pp, v, layout) - 1
    return tuple((r, last - r) for r in range(pp))


@lru_cache(maxsize=4096)
def _virtual_stage_layers(layers: int, pp: int, v: int) -> tuple[int, ...]:
    n = pp * v
    base, rem = divmod(layers, n)
    counts = [base] * n
    if rem:
        mid_rank, mid_chunk = (pp - 1) / 2, (v - 1) / 2

        def key(g: int) -> tuple:
            c, r = divmod(g, pp)
            # chunks of a rank, preferred order: middle chunks first (their index is the round)
            rnd = sorted(range(v), key=lambda k: (abs(k - mid_chunk), k)).index(c)
            return (g in (0, n - 1), rnd, abs(r - mid_rank), g)

        for g in sorted(range(n), key=key)[:rem]:
            counts[g] += 1
    return tuple(counts)
