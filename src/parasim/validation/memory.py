"""Memory as a validated quantity: the memory keys of the case format, their unit, and the
verdict on a case whose run is known to have fit (or not).

A planner that calls a real run out of memory rejects the plan that worked, so a prediction of
"does not fit" for a case measured `fits: true` is an error of its own kind (a false OOM),
counted in the summary, never a silent "infeasible". The symmetric miss (`fits: false`, a run
known to have run out of memory, predicted to fit) is a missed OOM.
"""

from __future__ import annotations

import re

from parasim.specs.validation_case import Case

#: shared/validation/README.md's memory keys, for both kinds (GiB as the framework printed them)
MEMORY_KEYS = ("peak_memory_gb_per_gpu", "activation_memory_gb_per_gpu", "weights_and_optimizer_gb_per_gpu")
#: what a serving engine prints at start-up, per GPU of one replica: the KV pool in tokens and
#: blocks (vLLM "GPU KV cache size: N tokens" / "# GPU blocks: N"), its bytes ("Available KV cache
#: memory"), and the weights ("Model loading took N GiB")
SERVING_MEMORY_KEYS = ("kv_cache_tokens", "kv_cache_blocks", "kv_cache_gb_per_gpu", "weights_gb_per_gpu")
ALL_MEMORY_KEYS = (*MEMORY_KEYS, *SERVING_MEMORY_KEYS)
#: statuses of a case whose measured `fits` the prediction contradicts
FALSE_OOM, MISSED_OOM = "false_oom", "missed_oom"

#: a source that states its gigabytes are decimal (the ZeRO paper's "GB" are 10^9 bytes)
_DECIMAL_GB = re.compile(r"GB\s*=\s*(?:10\^?9|1e9|10\*\*9)|decimal GB", re.IGNORECASE)


def memory_unit_bytes(source: str) -> float:
    """Bytes per "GB" of the case's memory figures: GiB (what PyTorch and vLLM print) unless the
    source says its GB are 10^9 bytes."""
    return 1e9 if _DECIMAL_GB.search(source) else float(2**30)


def oom_verdict(case: Case, *, fits: bool, what: str) -> tuple[str, str] | None:
    """(status, reason) when the case states whether its run fit and the prediction says the
    opposite; None otherwise. `what` says why the model calls it out of memory (or why it fits)."""
    measured = case.measured.get("fits")
    if measured is True and not fits:
        return FALSE_OOM, f"false OOM: the run ran (fits: true) but parasim predicts it does not fit: {what}"
    if measured is False and fits:
        return MISSED_OOM, "missed OOM: the run ran out of memory (fits: false) but parasim predicts it fits"
    return None
