"""The summary of one serving run: one typed record for a run and for a plan that cannot run.

The fields are the JSON keys of `summary` in `parasim serve --json` (docs/metrics.md), in their
order; `to_dict` is that mapping. A run and an infeasible plan build the same record, so they
cannot drift apart in their keys.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ServingSummary:
    requests: int
    completed: int
    dropped: int  # including `unservable`
    makespan_s: float | None
    input_tokens: int
    output_tokens: int
    requests_per_s: float | None
    input_tokens_per_s: float | None
    output_tokens_per_s: float | None
    total_tokens_per_s: float | None
    preemptions: int
    output_tokens_emitted: int
    ttft_mean_s: float | None
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    tpot_mean_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None
    tpot_p99_s: float | None
    e2e_mean_s: float | None
    e2e_p50_s: float | None
    e2e_p90_s: float | None
    e2e_p99_s: float | None
    queueing_mean_s: float | None
    queueing_p50_s: float | None
    queueing_p90_s: float | None
    queueing_p99_s: float | None
    itl_mean_s: float | None
    itl_p50_s: float | None
    itl_p90_s: float | None
    itl_p99_s: float | None
    # serving.metrics.slo_summary
    slo_attainment: float | None
    goodput_requests_per_s: float | None
    slo_met: bool | None
    slo_binding: str | None
    slo_itl_observed_s: float | None
    slo_ratio_ttft: float | None
    slo_ratio_tpot: float | None
    slo_ratio_e2e: float | None
    slo_ratio_itl: float | None
    kv_utilization_mean: float | None
    kv_utilization_peak: float | None
    peak_running: int
    iterations: int
    gpus: int
    gpu_hours: float | None
    busy_fraction: float | None
    energy_j: float | None
    energy_j_per_token: float | None
    cost_usd: float | None
    cost_usd_per_m_tokens: float | None
    prefix_cache_hits: int
    unservable: int  # requests that alone can never fit the KV cache (rejected on arrival)
    shed: int = 0  # refused by admission control (plan.max_queued); part of `dropped`
    #: energy_j in three parts (cost.energy.energy_by_phase_j): the idle draw over the held time, the
    #: dynamic power of compute-saturated and of memory-bound busy time; None on a part without a
    #: memory-bound power figure
    energy_idle_j: float | None = None
    energy_compute_bound_j: float | None = None
    energy_memory_bound_j: float | None = None

    @classmethod
    def infeasible(cls, requests: int, gpus: int, slo_keys: dict[str, Any]) -> ServingSummary:
        """A plan that cannot run: every request unserved, every metric null, the counts 0;
        `slo_keys` are `slo_summary(slo)` (with SLOs, attainment and goodput are 0)."""
        nulls = {f.name: None for f in fields(cls)}
        zeros = dict.fromkeys(("completed", "input_tokens", "output_tokens", "preemptions", "output_tokens_emitted",
                               "peak_running", "iterations", "prefix_cache_hits", "shed"), 0)
        return cls(**nulls | zeros | slo_keys | {"requests": requests, "dropped": requests, "unservable": requests,
                                                "gpus": gpus})

    def to_dict(self) -> dict[str, Any]:
        """The JSON mapping (field order); a fresh dict each call."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
