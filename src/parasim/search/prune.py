"""Why plans were dropped before (or instead of) being ranked: counts per reason.

Enumeration is hierarchical (degrees first, then batch split, then the knobs), and a rule that
fails at an outer level drops every combination below it at once; `Pruned.drop(reason, n)`
records all n of them, so the counts add up to the size of the raw space:

    raw space = evaluated + sum(pruned.values())

Reasons are short stable keys (they are part of the `--json` output); `REASONS` documents them.
"""

from __future__ import annotations

from collections import Counter

from parasim.training.schedules import SCHEDULES

#: each pipeline schedule's own rules, as its class states them
_SCHEDULE_RULES = "; ".join(f"{name}: {cls.requires}" for name, cls in SCHEDULES.items() if cls.requires)

REASONS = {
    # training
    "tp_heads": "tp does not divide the attention heads (or is not a multiple of the KV heads)",
    "gpus_divisibility": "tp*cp*pp does not divide the GPU count",
    "batch_divisibility": "dp*micro_batch divides neither the exact --global-batch nor any batch within "
                          "--batch-tolerance of the token budget",
    "cp_seq_len": "cp does not split seq_len into 2*cp equal chunks",
    "ep_divisibility": "ep does not divide the experts, or ep*etp the tp*cp*dp GPUs of a stage, or etp the expert "
                       "FFN width (or ep > 1 on a dense model)",
    "etp_duplicate": "the etp choice repeats another (etp = tp when tp = 1; a dense model has no experts to split)",
    "interleave_layers": "pp*virtual_stages exceeds the layers (chunks may be uneven), or pp is below what the "
                         f"schedule needs ({_SCHEDULE_RULES})",
    "interleave_microbatches": "no global batch (exact, or within --batch-tolerance of the token budget) gives a "
                               f"micro-batch count the schedule accepts ({_SCHEDULE_RULES})",
    "mixed_placement": "on a mixed cluster, a placement that does not fit each GPU group whole pipeline stages "
                       "(stages: tp*cp*dp GPUs) or whole pipeline replicas (replicas: tp*pp*cp GPUs)",
    "memory_model_state": "weights + gradients + optimizer state alone exceed HBM",
    "memory_activations": "peak memory with in-flight activations exceeds HBM (schedule walk)",
    "dominated_recompute": "a plan that recomputes less fits in memory (recompute only adds work)",
    # serving
    "tp_pp_layout": "tp/pp do not divide the heads/layers, or tp exceeds the scale-up domain",
    "precision_unsupported": "the GPU cannot run the weight format (no unit for it and no modelled weight-only kernel)",
    "gpu_budget": "tp*pp*replicas exceeds --max-gpus",
    "memory_weights": "weights do not fit the GPU's usable memory",
    "memory_kv": "no room for the KV cache of one max-length request",
    "kv_cannot_hold_request": "with its scheduler knobs, the plan's KV cache cannot hold some request of the workload",
    "tpot_floor": "reading the weights once per decode step already exceeds the TPOT (or ITL) SLO",
    "throughput_bound": "the roofline upper bound on throughput is below the offered load",
    "slo_missed": "simulated, but missed an SLO (the attainment target, or the ITL percentile; not ranked)",
    "unstable": "simulated and within the SLOs, but not stable: median queueing over its bound, or the offered rate over the plan's saturated (burst) throughput (not ranked)",
    "dominated_replicas": "a layout of the same family with no more instances per pool already met the SLO",
    "screen_cut": "screened with a short workload, not among the best re-run at full size",
    # both
    "invalid_plan": "rejected by the simulator's plan validator",
    "sim_error": "the simulator could not run the plan (first message in `errors`)",
}


class Pruned(Counter):
    """reason -> count of raw combinations dropped for it."""

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self[reason] += n

    def successes(self, items: list, results: list, errors: dict[str, str]):
        """Yield (item, result) for evaluations that succeeded; count the failures here by reason
        (keeping the first message per reason in `errors`); skip items never evaluated (None)."""
        for item, res in zip(items, results):
            if res is None:
                continue
            if not res["ok"]:
                self.drop(res["reason"])
                errors.setdefault(res["reason"], res.get("message", ""))
                continue
            yield item, res

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in sorted(self.items()) if v}
