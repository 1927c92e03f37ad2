"""What a plan runs as, for one model on one GPU: the defaults filled in, checked, and said.

`ServingPlan` leaves three things to the model and the scheduler (weights: the checkpoint's own
precision; KV cache: the model's dtype; prefix cache: the scheduler's default). `resolve_plan`
fills them in, checks that the GPU can run the weight format (`cost.quant.weight_path`: natively,
weight-only, or an input error naming the parts that can), and returns what the result must say:
`precision` (for the JSON) and `notes`, one line per default that changes the answer or flag
that does not apply as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parasim.cost.quant import checkpoint_gemm_dtype, weight_path
from parasim.cost.quant_bytes import quant_scope
from parasim.errors import InputError
from parasim.serving.plan import ServingPlan
from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.model import ModelSpec


@dataclass(frozen=True)
class Resolution:
    plan: ServingPlan  # resolved: weights, kv_dtype and prefix_cache are set
    precision: dict[str, Any]
    notes: tuple[str, ...]


def resolve_plan(model: ModelSpec, acc: AcceleratorSpec, plan: ServingPlan) -> Resolution:
    r = plan.resolved(model)
    notes: list[str] = []
    path = weight_path(r.weights, acc, r.act_dtype)
    if r.act_quant != "fused":
        if path.mode == "16-bit":
            raise InputError("act_quant", f"act_quant={r.act_quant} quantizes the activations of W8A8 GEMMs; "
                                          f"the weights are {r.weights}")
        if path.weight_only:
            notes.append(f"act_quant {r.act_quant} does not apply: weight-only GEMMs keep 16-bit activations")
    _refuse_inapplicable(model, r)
    weights_from = "given" if plan.weights else f"the model's own ({model.precision_origin()})"
    kv_from = ("given" if plan.kv_dtype else
               f"the model's dtype; an 8-bit KV cache changes the model's outputs and is asked for with --kv-dtype")
    if plan.weights is None and (model.quantized_weights or model.dtype is None):
        notes.append(f"weights {r.weights}: {weights_from}")
    if path.weight_only or (path.mode == "16-bit" and path.gemm_dtype != r.weights):
        notes.append(path.how)
    if plan.prefix_cache is None and r.prefix_cache:
        notes.append(f"prefix cache on: the {r.scheduler} scheduler shares prompt prefixes by design "
                     "(--no-prefix-cache is refused with it)")
    if r.is_disagg:
        notes.append(f"disagg: the decode pool books each request's whole KV (prompt + output) when it admits it "
                     f"and the prefill pool holds prompts only, so kv_reservation ({r.kv_reservation}) does not apply")
    precision = {"weights": r.weights, "weights_from": weights_from, "kv_cache": r.kv, "kv_from": kv_from,
                 "activations": r.act_dtype, "gemm": path.mode, "gemm_dtype": path.gemm_dtype, "how": path.how}
    scope = quant_scope(model, r.weights)
    if scope is not None and scope.stated:  # what a quantized checkpoint states it holds
        precision["checkpoint"] = scope.describe()
        notes.append(f"weights {r.weights}: {scope.describe()}")
    if scope is not None and path.mode == "native":
        unit = checkpoint_gemm_dtype(scope.weights, scope.scales, acc, r.act_dtype)
        if unit != path.gemm_dtype:  # an MXFP4 checkpoint: W4A8 on the FP8 unit (cost.quant)
            precision["gemm_dtype"] = unit
            precision["how"] = (f"W4A8: {scope.scales} weights with MXFP8 activations, the mixed MMA at {acc.id}'s "
                                f"{unit} rate (the checkpoint quantizes weights only; cost.quant)")
            notes.append(precision["how"])
    return Resolution(plan=r, precision=precision, notes=tuple(notes))


def _refuse_inapplicable(model: ModelSpec, r: ServingPlan) -> None:
    """A setting about a part the model lacks (experts, per-head KV, sliding-window layers) is refused
    naming the field: ignoring it would answer a question the user did not ask."""
    name = model.name
    checks = (
        ("moe_gemm", r.moe_gemm != "cutlass" and not model.is_moe,
         f"moe_gemm={r.moe_gemm} picks the routed experts' GEMM tile; {name} has no experts"),
        ("expert_padding", r.expert_padding != "none" and not model.is_moe,
         f"expert_padding={r.expert_padding} pads the routed experts' weights to a MoE kernel's tile; "
         f"{name} has no experts"),
        ("decode_attention", r.decode_attention != "grouped" and bool(model.mla),
         f"decode_attention={r.decode_attention} reads each KV head once per query head; {name} uses latent "
         "attention (MLA), whose decode reads one shared latent cache"),
        ("attention_window", r.attention_window != "model" and not model.windowed_layers,
         f"attention_window={r.attention_window} says what the engine does with sliding-window layers; "
         f"{name} has none"),
        ("sliding_kv", r.sliding_kv != "full" and not model.windowed_layers,
         f"sliding_kv={r.sliding_kv} says how the engine stores sliding-window layers' KV; {name} has none"),
        ("sliding_kv", r.sliding_kv == "window" and not model.full_attention_layers,
         f"sliding_kv=window books the window beside the full-attention layers' blocks; every layer of "
         f"{name} slides (not modelled)"),
    )
    for field, inapplicable, why in checks:
        if inapplicable:
            raise InputError(field, why)
