"""An engine's defaults for a plan a user gives (`parasim serve --engine NAME[==VERSION]`).

The same profile a validation case of that software gets, with no source text: the plan fields
the user left open take the engine's defaults for this model, GPU and workload; fields the user
gave win. Returned as the fields taken and the profile's `Choice`s, so the caller can say them.
"""

from __future__ import annotations

from typing import Any

from parasim.engines.lookup import engine_software
from parasim.engines.profile import Choice, EngineContext
from parasim.serving.workload import Workload
from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.model import ModelSpec

#: plan fields an engine profile may fill (the rest of a ServingPlan is the user's or parasim's)
ENGINE_FIELDS = ("scheduler", "token_budget", "max_batch", "block_size", "kv_dtype", "gpu_memory_utilization",
                 "kv_reservation", "iteration_overhead_s", "eager_prefill_layer_s", "output_delay_s", "act_quant",
                 "custom_allreduce", "cuda_graph_max_batch", "attention", "host_s_per_context_token",
                 "host_s_per_sequence", "serial_host_s_per_sequence", "decode_attention", "moe_gemm", "schedule_ahead",
                 "expert_padding", "attention_window", "sliding_kv", "cuda_graph_batch_sizes", "context_pass", "prefix_cache",
                 "sampler_profile")


def engine_defaults(engine: str, model: ModelSpec, acc: AcceleratorSpec, given: dict[str, Any],
                    workload: Workload) -> tuple[str, dict[str, Any], list[Choice]]:
    """(software, the plan fields `engine` sets that `given` leaves open, its choices). `given`
    holds the plan fields stated (None = open), as ServingPlan names them."""
    profile, software = engine_software(engine)
    kw: dict[str, Any] = {"tp": int(given.get("tp") or 1), "pp": int(given.get("pp") or 1),
                          "replicas": int(given.get("replicas") or 1),
                          "weights": given.get("weights") or model.native_weights, "kv_dtype": given.get("kv_dtype")}
    if given.get("ep"):
        kw["ep"] = int(given["ep"])
    stated = {k: given.get(k) for k in ("max_batch", "kv_dtype", "scheduler", "moe_gemm", "decode_attention",
                                        "spec_method", "expert_padding", "attention_window", "sliding_kv",
                                        "prefix_cache")}
    ctx = EngineContext(software=software, source="", model=model, acc=acc, stated=stated, kw=kw,
                        workload=lambda: workload, server_tp=kw["tp"] * kw.get("ep", 1))
    profile().apply(ctx)
    fields = {k: kw[k] for k in ENGINE_FIELDS if kw.get(k) is not None and given.get(k) is None}
    return software, fields, ctx.choices
