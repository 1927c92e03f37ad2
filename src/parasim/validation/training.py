"""Validation adapter: a training `Case` -> `CaseResult` (predicted values for its measured keys).

Null plan fields and the settings a case format does not carry (attention kernel, overlap
switches) are chosen as the named software most plausibly ran them, and every choice is
returned in `choices` so the report prints it:

* Megatron-LM as of the 2021 paper: no FlashAttention (it did not exist; scores materialised and
  softmax fused), gradient all-reduce after the backward (no bucketed overlap), no TP overlap,
  blocking pipeline exchanges (its p2p_communication waits on batch_isend_irecv and then calls
  torch.cuda.synchronize, so a send holds the rank).
* Megatron-Core based stacks (NeMo, Megatron-LM >= 2023, torchtitan...): fused flash attention,
  overlapped gradient reduce-scatter and parameter all-gather; NeMo's performance recipes also
  overlap TP communication with GEMMs (userbuffers) when sequence parallelism is on.
"""

from __future__ import annotations

import re
from typing import Any

from parasim.errors import InputError
from parasim.specs.validation_case import Case, CaseResult
from parasim.training import TrainingPlan, simulate
from parasim.training.schedules import for_virtual_stages
from parasim.units import fmt_gib
from parasim.validation.memory import MEMORY_KEYS, memory_unit_bytes, oom_verdict

PREDICTABLE = ("tflops_per_gpu", "tokens_per_s", "tokens_per_s_per_gpu", "step_time_s", "mfu", "hfu",
               "samples_per_s", *MEMORY_KEYS)


def _legacy_megatron(software: str) -> bool:
    """Megatron-LM before Megatron-Core (the 2021-2022 papers' code), and the Megatron-DeepSpeed
    forks of that code (BigScience's BLOOM run, 2022): no FlashAttention, no overlapped reduce."""
    s = software.lower()
    m = re.search(r"megatron-lm\s*\((\d{4})", s)
    if m:
        return int(m.group(1)) < 2023
    y = re.search(r"\b(20\d\d)\b", s)
    return "megatron-deepspeed" in s and bool(y and int(y.group(1)) < 2023)


def _pre_fa3(software: str) -> bool:
    """Software older than FlashAttention-3 (July 2024; arXiv 2407.08608): NeMo releases before 24.09
    (Transformer Engine < 1.11), a stack whose `software` names a month (YYYY-MM) before 2024-07, or
    one that names a year before 2024."""
    s = software.lower()
    m = re.search(r"nemo\s*(\d{2})\.(\d{2})", s)
    if m:
        return (int(m.group(1)), int(m.group(2))) < (24, 9)
    ym = re.search(r"\b(20\d\d)-(\d\d)\b", s)  # a stated month: before FlashAttention-3's (2024-07)
    if ym:
        return (int(ym.group(1)), int(ym.group(2))) < (2024, 7)
    y = re.search(r"\b(20\d\d)\b", s)
    return bool(y and int(y.group(1)) < 2024)


#: PyTorch FSDP's "PURE" mixed precision (Composer/llm-foundry): parameters, gradients and their
#: reduce-scatter in bf16; "DEFAULT" reduces in fp32
_FSDP_PURE = re.compile(r"(?:MP Mode|mixed[_ ]precision)\s*:?\s*PURE\b", re.IGNORECASE)


#: PyTorch-native training stacks whose non-GEMM ops run as PyTorch eager ops unless compiled
_PYTORCH_NATIVE = re.compile(r"torchtitan|llm-foundry|composer|pytorch fsdp|\bfsdp2?\b", re.IGNORECASE)


#: stacks that shard with FSDP2 (`fully_shard`, per-parameter DTensor shards): torchtitan uses nothing else
_FSDP2 = re.compile(r"torchtitan|\bfsdp2\b", re.IGNORECASE)


#: stacks whose 2023 releases ran a Triton FlashAttention kernel (llm-foundry MPT: attn_impl: triton)
_TRITON_ERA = re.compile(r"llm-foundry|composer", re.IGNORECASE)
#: Megatron-Bridge: every FP8 mixed-precision preset keeps the parameters in FP8
#: (src/megatron/bridge/training/mixed_precision.py, tags v0.2.0 to v0.5.0: `fp8_param_gather = True`
#: in the delayed, tensorwise, blockwise and MXFP8 presets)
_MBRIDGE = re.compile(r"megatron-bridge", re.IGNORECASE)
#: a row published as MXFP8 (the performance summary's precision column, or an FP8_MX preset name)
_MXFP8 = re.compile(r"precision MXFP8|_FP8_MX_", re.IGNORECASE)


#: cuDNN in each NeMo Framework container, from NVIDIA-NeMo/Megatron-Bridge docs/releases/software-versions.md
#: (commit 067f987d): 25.09 9.11.0.98, 25.11 9.13.1.26, 26.02 9.18.0.50, 26.04 9.20.0.48, 26.06 9.21.1.3.
#: A patch release (26.04.01) takes its release's; one between two listed takes the earlier listed
#: (cuDNN only moves forward); one before 25.09 ran at most 9.11, which selects the same (9.13) curve.
NEMO_CUDNN = ((2509, "9.11"), (2511, "9.13"), (2602, "9.18"), (2604, "9.20"), (2606, "9.21"))
_NEMO_CONTAINER = re.compile(r"\bNeMo (\d\d)\.(\d\d)(?:\.\d+)? container", re.IGNORECASE)


def nemo_cudnn(software: str) -> tuple[str, str] | None:
    """(cudnn_version, the choice line) for a case run in a named NeMo container; None when the
    software names none."""
    m = _NEMO_CONTAINER.search(software)
    if m is None:
        return None
    release = int(m.group(1)) * 100 + int(m.group(2))
    listed = [(r, v) for r, v in NEMO_CUDNN if r <= release]
    if not listed:
        return NEMO_CUDNN[0][1], (f"cudnn_version<={NEMO_CUDNN[0][1]} (NeMo {m.group(1)}.{m.group(2)} predates 25.09, which "
                                  f"shipped cuDNN 9.11: the 9.13 attention curve, an upper bound)")
    r, v = listed[-1]
    return v, f"cudnn_version={v} (NeMo {r // 100}.{r % 100:02d} container's cuDNN, its release notes)"


def _container_cudnn(case: Case, raw: dict[str, Any]) -> list[str]:
    """Set `cudnn_version` from the named NeMo container where its curve applies (Transformer
    Engine's fused attention on a Blackwell part, not stated by the case); the choice line."""
    cudnn = nemo_cudnn(case.software)
    if (cudnn is None or raw.get("cudnn_version") is not None or raw.get("kernels") != "fused"
            or raw.get("attention") != "flash" or case.cluster.accelerator.generation != "blackwell"):
        return []
    raw["cudnn_version"] = cudnn[0]
    return [cudnn[1]]


def kernel_mode(software: str) -> tuple[str, str]:
    """(kernels plan value, the choice line): Megatron / NeMo / DeepSpeed stacks run fused
    kernels; PyTorch-native stacks eager, or compiled when the software names torch.compile."""
    if not _PYTORCH_NATIVE.search(software) or re.search(r"megatron|nemo", software, re.IGNORECASE):
        return "fused", ""
    if re.search(r"torch\.?compile|\bcompiled?\b", software, re.IGNORECASE):
        return "compiled", "kernels=compiled (torch.compile named in software: fused elementwise and loss)"
    return "eager", "kernels=eager (PyTorch-native stack, torch.compile not named: one kernel per op)"


def plan_for_case(case: Case) -> tuple[TrainingPlan, list[str]]:
    raw = dict(case.plan)
    choices: list[str] = []
    legacy = _legacy_megatron(case.software)
    if raw.get("micro_batch") is None:
        raw["micro_batch"] = 1
        choices.append("micro_batch=1 (not published; the Megatron/NeMo default)")
    if raw.get("virtual_stages", 1) is None:
        pp = int(raw.get("pp") or 1)
        layers = case.model.layers
        v = next((k for k in (2, 3, 4, 5, 6) if pp > 1 and layers % (pp * k) == 0), 1)
        raw["virtual_stages"] = v
        choices.append(f"virtual_stages={v} (interleaved, count not published: smallest v>1 dividing the layers)"
                       if v > 1 else
                       f"virtual_stages=1 (interleaved, count not published, but no v in 2..6 makes pp*v divide the "
                       f"{layers} layers: plain 1F1B)")
    for key, default in (("cp", 1), ("ep", 1), ("sequence_parallel", False), ("recompute", "none"),
                         ("zero", 0 if legacy else 1), ("precision", "bf16")):
        if raw.get(key) is None:
            raw[key] = default
            choices.append(f"{key}={default} (not published; {'Megatron-LM 2021' if legacy else 'Megatron-Core'} default)")
    if case.model.is_moe and raw.get("etp") is None and int(raw.get("tp") or 1) > 1:
        choices.append("etp=tp (not published; Megatron-Core sets --expert-tensor-parallel-size to the TP size)")
    if case.model.is_moe and raw.get("cuda_graph_scope") is None:
        choices.append("cuda_graph_scope=none (not stated; Megatron-Core's default: MoE layers issued eagerly)")
    extra: dict[str, Any] = {}
    if legacy:
        extra = {"attention": "unfused", "overlap_grad_reduce": False, "overlap_param_gather": False,
                 "tp_comm_overlap": False, "overlap_p2p_comm": False}
        choices.append("Megatron-LM 2021: unfused attention (no FlashAttention), gradient all-reduce after the "
                       "backward, no TP overlap, blocking pipeline sends")
    else:
        tp_overlap = bool(raw.get("sequence_parallel")) and int(raw.get("tp") or 1) > 1 and "nemo" in case.software.lower()
        # PyTorch-native stacks call SDPA, whose flash backend is FlashAttention-2 (PyTorch 2.2+);
        # llm-foundry's MPT configs of 2023 ran its Triton FlashAttention (attn_impl: triton)
        kernel = "flash2" if _pre_fa3(case.software) or _PYTORCH_NATIVE.search(case.software) else "flash"
        if _TRITON_ERA.search(case.software) and _pre_fa3(case.software):
            kernel = "triton"
        extra = {"attention": kernel, "overlap_grad_reduce": True, "overlap_param_gather": True,
                 "tp_comm_overlap": tp_overlap}
        extra |= _recipe_overrides(case, raw, choices)
        label = {"flash2": "FA2-generation (cuDNN/FA2, pre-FA3) ", "triton": "Triton (attn_impl: triton) "}.get(kernel, "")
        choices.append(f"Megatron-Core-era stack: {label}flash attention, overlapped grad reduce-scatter and param all-gather"
                       f"{', TP comm overlap (NeMo recipe with SP)' if tp_overlap else ''}")
    if raw.get("recompute") == "selective" and "torchtitan" in case.software.lower():
        raw["recompute"] = "selective_op"  # the same stated setting, read as that framework defines it
        choices.append("recompute=selective_op (torchtitan's selective AC, op mode: every other matmul output and "
                       "the attention output saved, the rest recomputed; not Megatron's attention-core recompute)")
    if raw.get("fsdp_layout") is None and int(raw.get("zero") or 0) == 3 and _FSDP2.search(case.software):
        extra["fsdp_layout"] = "per_param"
        choices.append("fsdp_layout=per_param (FSDP2 fully_shard: copy-out after each all-gather, chunk-cat before "
                       "each reduce-scatter, on the compute stream)")
    if raw.get("cp_ring") is None and int(raw.get("cp") or 1) > 1 and "torchtitan" in case.software.lower():
        extra["cp_ring"] = "pytorch"
        choices.append("cp_ring=pytorch (torch.distributed context_parallel: fp32 output merges, K/V send buffers and "
                       "fp32 gradient accumulation as separate ops per ring step)")
    fp8, fp8_why = _fp8_weights(case, raw)
    extra |= fp8
    choices += fp8_why
    stack_kernels, why = kernel_mode(case.software)
    if raw.get("kernels") is None:
        extra["kernels"] = stack_kernels
        if why:
            choices.append(why)
    if raw.get("param_state") is None and stack_kernels != "fused":  # a PyTorch-native stack
        extra["param_state"] = "fp32_params"
        choices.append("param_state=fp32_params (PyTorch-native mixed precision: fp32 parameters are the master copy, "
                       "16 B/param, plus the 16-bit copies FSDP gathers)")
    for key, value in extra.items():  # a value the case states wins over the software's default
        if raw.get(key) is None:
            raw[key] = value
    choices += _container_cudnn(case, raw)
    if int(raw.get("virtual_stages") or 1) > 1:
        raw["schedule"] = for_virtual_stages(raw.get("schedule") or "1f1b", int(raw["virtual_stages"]))
    return TrainingPlan.from_mapping(raw, gpus=case.cluster.gpus), choices


def _recipe_overrides(case: Case, raw: dict[str, Any], choices: list[str]) -> dict[str, Any]:
    """What the launch recipes of NeMo, FSDP PURE and Megatron-Bridge set beyond Megatron-Core's
    defaults (gradient reduction dtype, the loss kernel), where the case does not state it; each
    appended to `choices` with its source."""
    extra: dict[str, Any] = {}
    if "nemo" in case.software.lower() and raw.get("precision") != "fp16" and raw.get("grad_dtype") is None:
        extra["grad_dtype"] = "bf16"
        choices.append("grad_dtype=bf16 (NeMo performance launch scripts set optim.grad_sync_dtype=bf16)")
    elif _FSDP_PURE.search(case.source) and raw.get("precision") != "fp16":
        extra["grad_dtype"] = "bf16"
        choices.append("grad_dtype=bf16 (FSDP mixed precision PURE in the source: gradients reduced in bf16)")
    if _MBRIDGE.search(case.software) and raw.get("cross_entropy") is None:
        extra["cross_entropy"] = "te"
        choices.append("cross_entropy=te (Megatron-Bridge's performance scripts set cross_entropy_fusion_impl 'te' for "
                       "every recipe, v0.2.0 utils/helpers.py set_common_perf_overrides, v0.3.0+ utils/overrides.py: "
                       "Transformer Engine's in-place loss keeps the 16-bit logits, not an fp32 softmax)")
    return extra


def _fp8_weights(case: Case, raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """How an FP8 case's stack holds its weights (`cost.memory.te_fp8_weight_bytes`), where the
    case does not say: Megatron-Bridge keeps FP8 parameters, and a row published as MXFP8 runs
    that recipe. Returns the plan fields and the sentences saying so."""
    if raw.get("precision") != "fp8":
        return {}, []
    out: dict[str, Any] = {}
    why = []
    if raw.get("fp8_param_gather") is None and _MBRIDGE.search(case.software):
        out["fp8_param_gather"] = True
        why.append("fp8_param_gather (Megatron-Bridge's FP8 presets keep the parameters in FP8: no 16-bit copy "
                   "beside Transformer Engine's FP8 weight)")
    if raw.get("fp8_recipe") is None and _MXFP8.search(case.source):
        out["fp8_recipe"] = "mxfp8"
        why.append("fp8_recipe=mxfp8 (the row's precision: row- and column-scaled FP8 weights)")
    return out, why


def predict_case(case: Case) -> CaseResult:
    """Predicted values for every measured key this simulator can predict."""
    try:
        plan, choices = plan_for_case(case)
        res = simulate(case.model, case.cluster, plan)
    except InputError as e:
        return CaseResult(status="skipped", reason=f"{e.field}: {e.message}")
    conv = case.measured.get("flops_convention", "model")
    pred: dict[str, float] = {}
    # published TFLOP/s, MFU and HFU count the full s x s attention (Megatron/PaLM/NeMo): score those
    for key in case.measured:
        if key == "tflops_per_gpu":
            pred[key] = res.megatron_hardware_tflops_per_gpu if conv == "hardware" else res.megatron_model_tflops_per_gpu
        elif key == "tokens_per_s":
            pred[key] = res.tokens_per_s
        elif key == "tokens_per_s_per_gpu":
            pred[key] = res.tokens_per_s_per_gpu
        elif key == "step_time_s":
            pred[key] = res.step_time_s
        elif key == "mfu":
            pred[key] = res.megatron_mfu
        elif key == "hfu":
            pred[key] = res.megatron_hfu
        elif key == "samples_per_s":  # sequences per second
            pred[key] = res.tokens_per_s / plan.seq_len
    pred.update(_memory_predictions(case, res.memory))
    verdict = oom_verdict(case, fits=res.fits, what=f"peak memory {fmt_gib(res.peak_memory_bytes)} per GPU exceeds "
                                                     f"{fmt_gib(case.cluster.accelerator.hbm_bytes, None)}")
    if verdict is not None:
        return CaseResult(status=verdict[0], predicted=pred, choices=choices, reason=verdict[1])
    if not res.fits:
        choices.append(f"peak memory {fmt_gib(res.peak_memory_bytes)} exceeds "
                       f"{fmt_gib(case.cluster.accelerator.hbm_bytes, None)}")
        return CaseResult(status="infeasible", predicted=pred, choices=choices,
                          reason=f"does not fit: {fmt_gib(res.peak_memory_bytes)} per GPU")
    return CaseResult(status="ok", predicted=pred, choices=choices)


def _memory_predictions(case: Case, memory: dict[str, float]) -> dict[str, float]:
    """The memory keys the case measured, from the peak rank's breakdown (`TrainingResult.memory`,
    GiB): the whole peak with the runtime reserve, the activations held at the peak, and the
    model state (weights, gradients and optimizer, after ZeRO sharding). In the unit the case's
    source printed (`memory_unit_bytes`: GiB unless it says GB = 10^9 bytes)."""
    scale = 2**30 / memory_unit_bytes(case.source)
    state = memory["weights_gib"] + memory["gradients_gib"] + memory["optimizer_gib"]
    values = {"peak_memory_gb_per_gpu": memory["total_gib"], "activation_memory_gb_per_gpu": memory["activations_gib"],
              "weights_and_optimizer_gb_per_gpu": state}
    return {k: v * scale for k, v in values.items() if k in case.measured}
