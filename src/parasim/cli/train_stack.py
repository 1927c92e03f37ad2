"""The options that state the user's training stack, shared by `parasim train` and `parasim plan train`.

One definition, two commands: each option below is declared once (flag, help, panel) and has one
rule in cli.limits (`limits.STACK`); `train` applies it to its one plan, `plan train` holds it
fixed over the search and applies it to every candidate, the baseline and the --reference plan.
These are facts of the stack (how it stores state, who wrote its kernels, what it overlaps, the
nodes it runs on), not layout choices: the layout (tp, pp, dp, zero, recompute, schedule, ...) is
what `plan train` searches, with its own comma-list forms.

An option that cannot apply to the run is refused (exit 2) rather than ignored: a MoE option on a
dense model (`check_moe`), and in `plan train` a layout-bound one (`--fsdp-layout` needs a ZeRO-3
candidate, `--cp-ring` one with cp > 1, `--recompute-modules` one with selective recompute) when no
candidate of the search space has that layout (`search.plan_train.stack_for`).
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from parasim.errors import InputError

PANEL_BATCH = "Batch and precision"
PANEL_OVERLAP = "Overlap and schedule"
PANEL_MOE = "Mixture of experts"
PANEL_CLUSTER = "Cluster"

GpusPerNode = Annotated[Optional[int], typer.Option("--gpus-per-node", help="GPUs per node (default: the GPU's node preset, else 8).", rich_help_panel=PANEL_CLUSTER)]
InterNodeGbps = Annotated[Optional[float], typer.Option("--inter-node-gbps", help="NIC bandwidth per GPU, Gbit/s.", rich_help_panel=PANEL_CLUSTER)]
GradDtype = Annotated[Optional[str], typer.Option("--grad-dtype", help="Gradient buffer / DP reduction dtype: fp32 | bf16.", rich_help_panel=PANEL_BATCH)]
RecomputeModules = Annotated[Optional[str], typer.Option("--recompute-modules", help="With --recompute selective (implied): comma list of core_attn, moe_act, layernorm, mla_up_proj (Megatron-Core's; default core_attn).", rich_help_panel=PANEL_BATCH)]
MoeImbalance = Annotated[Optional[float], typer.Option("--moe-imbalance", help="MoE: busiest expert's token load over the mean, >= 1 (default 1: routing's sampling noise only).", rich_help_panel=PANEL_MOE)]
MoeCapacityFactor = Annotated[Optional[float], typer.Option("--moe-capacity-factor", help="MoE: drop tokens beyond this factor x the mean expert load (default: dropless).", rich_help_panel=PANEL_MOE)]
MoeA2a = Annotated[Optional[str], typer.Option("--moe-a2a", help="MoE dispatch/combine kernels: alltoall (NCCL) | deepep (DeepEP: one network copy per node).", rich_help_panel=PANEL_MOE)]
MoeA2aOverlap = Annotated[Optional[bool], typer.Option("--moe-a2a-overlap/--no-moe-a2a-overlap", help="MoE: hide the dispatch/combine under another micro-batch's compute (Megatron-Core --overlap-moe-expert-parallel-comm).", rich_help_panel=PANEL_MOE)]
MoeRouting = Annotated[Optional[str], typer.Option("--moe-routing", help="MoE: which experts a token takes: random (a router; default) | contiguous (k consecutive expert ids, NeMo AutoModel's fake_balanced_gate benchmark gate: exact balance, one or two GPUs per token for DeepEP). docs/training.md.", rich_help_panel=PANEL_MOE)]
CudaGraphScope = Annotated[Optional[str], typer.Option("--cuda-graph-scope", help="MoE host work: what CUDA graphs cover, a comma list of attn, moe_router, moe_preprocess, or full_iteration alone (Megatron-Core's; default none: eager; docs/training.md).", rich_help_panel=PANEL_MOE)]
CudnnVersion = Annotated[Optional[str], typer.Option("--cudnn-version", help="cuDNN version the run's Transformer Engine fused attention used, e.g. 9.18 (a NeMo container's release notes list it): picks the Blackwell cuDNN attention curve, the newest published at or below it (default: the newest, 9.22). kernels fused, attention flash, Blackwell only (docs/training.md).", rich_help_panel=PANEL_OVERLAP)]
OverlapGradReduce = Annotated[Optional[bool], typer.Option("--overlap-grad-reduce/--no-overlap-grad-reduce", help="Overlap DP gradient reduction with the backward.", rich_help_panel=PANEL_OVERLAP)]
OverlapParamGather = Annotated[Optional[bool], typer.Option("--overlap-param-gather/--no-overlap-param-gather", help="Overlap parameter all-gathers with compute.", rich_help_panel=PANEL_OVERLAP)]
TpCommOverlap = Annotated[Optional[bool], typer.Option("--tp-comm-overlap/--no-tp-comm-overlap", help="Overlap TP communication with GEMMs.", rich_help_panel=PANEL_OVERLAP)]
OverlapP2pComm = Annotated[Optional[bool], typer.Option("--overlap-p2p-comm/--no-overlap-p2p-comm", help="Pipeline sends beside compute (default); --no-... = blocking exchanges (Megatron-LM 2021).", rich_help_panel=PANEL_OVERLAP)]
Attention = Annotated[Optional[str], typer.Option("--attention", help="flash (best fused kernel) | flash2 (FA2-generation) | triton (2022-23 Triton FlashAttention) | unfused.", rich_help_panel=PANEL_OVERLAP)]
Kernels = Annotated[Optional[str], typer.Option("--kernels", help="Non-GEMM kernels: fused (Megatron/TE) | eager (PyTorch eager) | compiled (torch.compile).", rich_help_panel=PANEL_OVERLAP)]
FsdpLayout = Annotated[Optional[str], typer.Option("--fsdp-layout", help="ZeRO-3 parameter layout: flat (FSDP1, DeepSpeed; default) | per_param (FSDP2 fully_shard: copy-out and chunk-cat on the compute stream). --zero 3 only.", rich_help_panel=PANEL_OVERLAP)]
CpRing = Annotated[Optional[str], typer.Option("--cp-ring", help="Context-parallel ring: te (Transformer Engine, default) | pytorch (torch.distributed context_parallel: fp32 merges per ring step). --cp > 1 only.", rich_help_panel=PANEL_OVERLAP)]
ParamState = Annotated[Optional[str], typer.Option("--param-state", help="How the stack stores parameter state: megatron (16-bit weights + fp32 master and Adam moments, 18 B/param; default) | fp32_params (PyTorch FSDP / autocast: fp32 parameters as the master, 16 B, plus the 16-bit copies gathered) | bf16_params (no fp32 copy, 8 B) | bf16_optimizer (Megatron's 16-bit weights and gradients, optimizer state in bf16 as NeMo's optim.dtype bf16: 2 + 2 + 6 B with bf16 gradients). docs/training.md.", rich_help_panel=PANEL_OVERLAP)]
Fp8Recipe = Annotated[Optional[str], typer.Option("--fp8-recipe", help="FP8 recipe under Transformer Engine: delayed (default) | tensorwise (per-tensor current scaling) | mxfp8 (32-element block scales); sizes TE's FP8 weight copies and, in MoE layers, the grouped MLP's per-expert quantize launches (precision fp8, kernels fused).", rich_help_panel=PANEL_OVERLAP)]
CrossEntropy = Annotated[Optional[str], typer.Option("--cross-entropy", help="Loss kernel, which sizes the logits the last stage keeps: fp32 (Megatron-Core's vocab-parallel cross entropy, an fp32 softmax; default) | te (Transformer Engine's in-place cross entropy, Megatron-Bridge's performance recipes: the 16-bit logits; kernels fused).", rich_help_panel=PANEL_OVERLAP)]
Fp8ParamGather = Annotated[Optional[bool], typer.Option("--fp8-param-gather/--no-fp8-param-gather", help="Parameters kept in FP8 (Megatron-Core --fp8-param-gather): no 16-bit copy beside TE's FP8 weight (default off: both). precision fp8, kernels fused.", rich_help_panel=PANEL_OVERLAP)]
PowerLimitW = Annotated[Optional[float], typer.Option("--power-limit-w", help="Every GPU's power limit, W (nvidia-smi -pl): above the part's idle draw, at most its rated TDP (default: the rated TDP). Compute slows to the clock that power sustains (docs/training.md \"Power limits\").", rich_help_panel=PANEL_CLUSTER)]
SaveInterval = Annotated[Optional[int], typer.Option("--save-interval", help="Steps between checkpoints (Megatron --save-interval; default: the Young/Daly optimum).", rich_help_panel="Failures and checkpoints (goodput)")]

#: TrainingPlan fields that describe the stack, held fixed by `plan train` (cluster keys apart)
STACK_FIELDS = ("grad_dtype", "attention", "kernels", "fsdp_layout", "cp_ring", "param_state", "fp8_recipe",
                "fp8_param_gather", "cross_entropy", "overlap_grad_reduce",
                "overlap_param_gather", "tp_comm_overlap", "overlap_p2p_comm", "recompute_modules", "moe_imbalance",
                "moe_capacity_factor", "moe_a2a", "moe_a2a_overlap", "moe_routing", "cuda_graph_scope", "cudnn_version")
#: the cluster the stack runs on (`specs.catalog.cluster_for`'s overrides, `specs.mixed.power_limited`'s cap)
CLUSTER_FIELDS = ("gpus_per_node", "inter_node_gbps", "power_limit_w")
#: options only a mixture-of-experts model reads
#: (cuda_graph_scope and moe_routing too: TrainingPlan.check refuses them on a dense model itself)
MOE_FIELDS = ("moe_imbalance", "moe_capacity_factor", "moe_a2a", "moe_a2a_overlap")


def check_moe(model, given: dict[str, Any]) -> None:
    """A MoE option set away from its default for a dense model cannot apply: exit 2 naming it,
    never ignored. (Its default, as a `--emit-yaml` config of a dense plan writes it, is harmless.)"""
    if model.is_moe:
        return
    from dataclasses import fields

    from parasim.training.plan import TrainingPlan

    defaults = {f.name: f.default for f in fields(TrainingPlan)}
    for key in MOE_FIELDS:
        if given.get(key) is not None and given[key] != defaults[key]:
            raise InputError(key.replace("_", "-"), f"applies to mixture-of-experts models; {model.name} is dense")


def power_limit_keys(cluster, power_limit_w: float | None) -> dict[str, Any]:
    """The JSON keys of --power-limit-w (none without it, so other outputs stay as they were): the
    limit and, per part, the sustained compute clock over the rated one that it implies."""
    if power_limit_w is None:
        return {}
    parts = getattr(cluster, "groups", (cluster,))
    return {"power_limit_w": float(power_limit_w),
            "power_limit_clock_ratio": {g.accelerator.id: g.accelerator.clock_ratio for g in parts}}


def power_limit_line(keys: dict[str, Any]) -> str | None:
    """The table's line for `power_limit_keys`, e.g. "power limit 500 W: sustained clock 0.80 of rated (h100-sxm)"."""
    if not keys:
        return None
    clocks = ", ".join(f"{r:.2f} of rated ({gpu})" for gpu, r in keys["power_limit_clock_ratio"].items())
    return f"power limit {keys['power_limit_w']:g} W: sustained clock {clocks}"
