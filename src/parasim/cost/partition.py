"""How layers are split into pipeline stages.

Layers are spread as evenly as possible; when they do not divide, the extra layers go to the
middle stages, because the first stage also runs the embedding and the last the LM head (the
uneven split the Llama 3 paper describes for 126 layers on 16 stages).
"""

from __future__ import annotations

from functools import lru_cache


def stage_layers(layers: int, pp: int) -> list[int]:
    """Layers per stage, first to last (a fresh list; the split itself is cached)."""
    return list(_stage_layers(layers, pp))


@lru_cache(maxsize=4096)
def _stage_layers(layers: int, pp: int) -> tuple[int, ...]:
    base, rem = divmod(layers, pp)
    counts = [base] * pp
    if rem:
        order = sorted(range(pp), key=lambda i: (i in (0, pp - 1), abs(i - (pp - 1) / 2)))
        for i in order[:rem]:
            counts[i] += 1
    return tuple(counts)
