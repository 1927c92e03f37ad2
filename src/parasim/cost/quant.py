"""How a weight format runs on a GPU: on its own tensor-core unit, weight-only, or not at all.

The engines parasim models run a quantized checkpoint one of two ways:

* **W8A8 / W4A4 on the format's own unit** (FP8 on Ada, Hopper, Blackwell and MI300; INT8 on
  Ampere and newer and on TPUs; FP4 on Blackwell and MI355X): weights and activations in the low
  precision, the GEMM at that unit's peak. This is what `--weights fp8` means on an H100.
* **Weight-only (W8A16 / W4A16)**: the GEMM reads the low-bit weights from HBM and dequantizes
  them in registers; the math runs on the 16-bit unit and the activations stay 16-bit, so no
  activation is quantized (`act_quant` does not apply). The bytes are the format's, the FLOP/s
  the 16-bit unit's. NVIDIA Ampere and newer run FP8, FP4, INT8 and INT4 this way with vLLM's
  Marlin kernels (FP8 Marlin: vLLM PR #5975, v0.5.1, July 2024, "FP8 models will run on compute
  capability >= ... as weight-only W8A16, utilizing FP8 Marlin" in vLLM's FP8 docs; NVFP4 Marlin,
  dense and MoE: vLLM PR #17687, May 2025; GPTQ/AWQ Marlin: vLLM's quantization hardware table).
  Volta runs INT8/INT4 GPTQ checkpoints through the GPTQ kernels (the same table: GPTQ on Volta,
  Marlin from Ampere). INT4 always runs this way: AWQ/GPTQ INT4 checkpoints are W4A16 in every
  modelled engine (TensorRT-LLM's W4A8-AWQ, FP8 activations, is not modelled).

**MXFP4 checkpoints** (gpt-oss: E2M1 weights with one E8M0 scale per 32, `weight_scales: mxfp4`)
quantize the weights only: the release's quantization_config states no activation scheme, and no
modelled engine feeds its GEMMs FP4 activations. On a part with an FP4 unit the fastest published path
quantizes the activations to MXFP8 and runs the mixed MXFP4 x MXFP8 MMA: TensorRT-LLM's gpt-oss
deployment guide lists MXFP8 activations with MXFP4 MoE weights for both its TRTLLM and CUTLASS MoE
backends on B200 / GB200 (`ModelConfig.get_mxfp4_quant_algo`, tensorrt_llm/_torch/model_config.py:
W4A8_MXFP4_MXFP8 on SM >= 100, W4A16_MXFP4 on Hopper), SGLang's FlashInfer MXFP4 MoE quantizes its input with `mxfp8_quantize` at its
default `--flashinfer-mxfp4-moe-precision` (sglang/srt/layers/quantization/mxfp4.py), and
triton_kernels' own gpt-oss benchmark (`bench/bench_mlp.py`) pairs fp8 activations with mx4 weights on
parts with native MX4. That MMA is `tcgen05.mma.kind::mxf8f6f4.block_scale`, which CUTLASS's "Blackwell
SM100 GEMMs" table rates at "2x Hopper Fp8 Tensor Core", i.e. the part's FP8 rate; only
`kind::mxf4` (both operands FP4) reaches the FP4 rate ("4x Hopper Fp8"). So the routed experts of an
MXFP4 checkpoint compute on the FP8 unit (`checkpoint_gemm_dtype`), reading 4.25-bit weights. vLLM's
default on SM100 is slower still (`SM100_FI_MXFP4_BF16`, BF16 activations, MXFP8 only with
VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1); it is not modelled (no plan field says which activations an
engine uses), so vLLM's Blackwell runs of an MXFP4 checkpoint are predicted at the W4A8 rate, an
upper bound. NVFP4 checkpoints (W4A4, FP4 activations) keep the FP4 rate.

Anything else (FP8 on a V100 or an MI250X, FP4 on an MI300X, INT4 on a TPU) is an input error
that names the parts that can run the format. Weight-only kernels on AMD, Intel Gaudi and TPU
are not modelled: vLLM's table lists none of GPTQ, AWQ or Marlin for them.

**Dequantization cost at large M.** A Marlin kernel dequantizes every weight element again for each
block of up to 64 rows it multiplies (vLLM's marlin kernels, `thread_m_blocks` <= 4; the original kernel
"will just run the batch 64 kernel repeatedly" above batch 64, IST-DASLab/marlin issue #2), with
integer and FP16 instructions issued from the same SM schedulers as its MMAs. At decode that work hides
under the weight stream; at prefill sizes it adds to the MMA time. Measured on an H100 (SGLang PR
#38884, 2026-09-10: nsys of a live W4A16 server, 16,384-token chunked-prefill forwards) the MoE Marlin
GEMM runs at 254 TFLOP/s (1.237 TFLOP per layer per GPU in 4.863 ms), 25.7 % of the BF16 peak, "issue-
bound, not bandwidth-bound: the SASS inner loop spends 64 of 220 instructions per 32-K step on HMMA";
against the catalog's dense BF16 rate at the model's hidden size (4,096) that is a stall of 1.92 MMA
times per MMA time (`marlin_dequant_stall`). The stall is a fixed number of SM cycles per weight element
and row block, so a part whose SM computes 16-bit MMAs more slowly loses proportionally less:
`marlin_rate` = 1 / (1 + stall x (BF16 rate per SM / the H100's)), 0.34 on H100 / H200, 0.57 on A100,
0.60 on L40S. Two checks the law was not sized on: vLLM PR #2497's Marlin bench (comment of
2024-01-24; the GPU is not named, the torch FP16 rate it implies, 231 TFLOP/s, is an A100's) runs Marlin
at 0.60 / 0.61 of torch FP16 at batch 2,048 / 4,000 (law: 0.574); SGLang PR #34682's H20 sweep (Marlin
MXFP4 MoE, DeepSeek-V4-Flash experts, M = 128k) measures 73.9 TFLOP/s, the law with the H20's 78 SMs
(third-party; not in the catalog, so not applied there) 74.8. The rate bounds the real rows' compute
(`Op.dequant`, `roofline.gemm_roofline_s`), beside the padded-tile floor and under the weight read, so a
decode GEMM of up to 16 rows is unchanged (the bench's time is flat from batch 1 to 16). Where it runs
(`marlin_runs`): every weight-only GEMM on Ampere and Ada (FP8 and FP4 run only Marlin there, GPTQ / AWQ
Marlin unless vLLM's AllSpark 8-bit kernel takes a layer first, not separated); on
Hopper only routed experts the plan serves through the Marlin MoE kernel (`expert_padding: marlin`).
Not applied, unmeasured: Hopper's dense weight-only GEMMs (vLLM runs INT4 / INT8 through Machete, a
wgmma kernel Neural Magic's October 2024 announcement says matches FP16 when compute-bound), Hopper's
MXFP4 experts through Triton `matmul_ogs` (vLLM >= 0.10.2, TensorRT-LLM), TensorRT-LLM's fpA_intB
CUTLASS kernels, Blackwell, and parts without an SM count.

A 16-bit checkpoint on a part without that 16-bit unit runs in the other one (a bf16 model on a
V100 is served in fp16, as vLLM asks with `--dtype half`; an fp16 model on Gaudi or a TPU in
bf16); said in the result, same bytes and, on every catalog part, the same peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from parasim.errors import InputError
from parasim.specs.accelerator import AcceleratorSpec

SIXTEEN_BIT = ("bf16", "fp16")
#: formats with a tensor-core unit of their own on some part (W8A8 / W4A4 there)
NATIVE_CAPABLE = ("fp8", "int8", "fp4")
#: formats vLLM's Marlin kernels run weight-only on NVIDIA Ampere and newer
MARLIN_FORMATS = ("fp8", "fp4", "int8", "int4")
#: formats the GPTQ kernels run weight-only on NVIDIA parts before Ampere (Volta)
GPTQ_FORMATS = ("int8", "int4")
#: rows per output tile of a weight-only GEMM: Marlin's kernels work in 16-row m-blocks
#: (`thread_m_blocks` x 16 in vLLM's marlin kernels; the Marlin README reports near-ideal speedups
#: up to batch 16-32), so a decode batch of a few tokens fills a 16-row tile, not the 128-row tile
#: of the part's dense 16-bit GEMMs (`Efficiency.gemm_tile_m`)
MARLIN_TILE_M = 16
KERNEL = {"fp8": "FP8 Marlin", "fp4": "NVFP4 Marlin", "int8": "GPTQ/Marlin 8-bit",
          "int4": "AWQ/GPTQ Marlin"}

# --- Marlin's dequantization at prefill sizes (module doc, "Dequantization cost at large M") ---------
#: SGLang PR #38884 (sgl-project/sglang, 2026-09-10, description, the `nsys` table of a live W4A16 server
#: on H100, "#new-token: 16384" chunked-prefill forwards): the MoE Marlin W4A16 GEMM does "1.237 TFLOP
#: per layer per GPU in 4.863 ms", i.e. 254 TFLOP/s, "25.7% of H100 BF16 peak"
MARLIN_REF_TFLOP = 1.237
MARLIN_REF_S = 4.863e-3
#: the measurement's part (catalog id) and the depth its dense reference rate is read at: hidden 4,096.
#: The PR's model (43 MoE layers, DSA sparse attention) is DeepSeek-V4-class; its 1.237 TFLOP per layer per
#: GPU is 16,384 tokens x 6 experts x 2 x 3 x 4,096 x 2,048 over 4 GPUs, DeepSeek-V4-Flash's expert
#: shape as SGLang PR #34682 states it (hidden 4,096, intermediate 2,048, E 256, top 6). 4,096 is the
#: up-projection's reduction depth, two thirds of the experts' FLOPs (our reading, not the PR's)
MARLIN_REF_PART = "h100-sxm"
MARLIN_REF_K = 4096
#: generations whose weight-only GEMMs are taken as Marlin's: vLLM's mixed-precision kernel list
#: (choose_mp_linear_kernel) puts Machete, Hopper-only, first; below compute capability 9.0 FP8 and
#: MXFP4 / NVFP4 run Marlin only, GPTQ / AWQ Marlin unless AllSpark (8-bit, Ampere, later releases) takes
#: a layer first, which is not separated
MARLIN_GENERATIONS = ("ampere", "ada")


@dataclass(frozen=True)
class WeightPath:
    """What runs for `weights` on one part: `gemm_dtype` is the unit the GEMMs use."""

    weights: str
    gemm_dtype: str
    mode: str  # "16-bit" | "native" | "weight-only"
    how: str  # one line for reports

    @property
    def weight_only(self) -> bool:
        return self.mode == "weight-only"


def _marlin_capable(acc: AcceleratorSpec) -> bool:
    """NVIDIA Ampere or newer: the NVIDIA parts with a BF16 tensor-core unit (Volta has none)."""
    return acc.vendor == "nvidia" and acc.has_unit("bf16")


def _weight_only_kernel(weights: str, acc: AcceleratorSpec) -> str | None:
    if acc.vendor != "nvidia":
        return None
    if _marlin_capable(acc) and weights in MARLIN_FORMATS:
        return KERNEL[weights]
    if weights in GPTQ_FORMATS:
        return "GPTQ"
    return None


def _sixteen(act_dtype: str, acc: AcceleratorSpec) -> str:
    """The 16-bit unit the part runs `act_dtype` math on."""
    if acc.has_unit(act_dtype):
        return act_dtype
    other = "fp16" if act_dtype == "bf16" else "bf16"
    return other if acc.has_unit(other) else act_dtype


def gemm_dtype(weights: str, acc: AcceleratorSpec, act_dtype: str = "bf16") -> str:
    """The unit a GEMM with `weights` runs on (never raises: training and the cost tables call it
    for any pair; `weight_path` is the checked version for serving plans)."""
    if weights in NATIVE_CAPABLE and acc.has_unit(weights):
        return weights
    if weights in NATIVE_CAPABLE or weights == "int4":
        return act_dtype  # weight-only: 16-bit math
    return weights


#: block-scale layouts of checkpoints that quantize the weights only and whose engines feed the GEMM
#: 8-bit (or 16-bit) activations, never 4-bit ones (module doc, "MXFP4 checkpoints")
WEIGHT_ONLY_FP4_SCALES = ("mxfp4",)


def checkpoint_gemm_dtype(weights: str, scales: str | None, acc: AcceleratorSpec, act_dtype: str = "bf16") -> str:
    """The unit a quantized checkpoint's GEMMs run on: `gemm_dtype`, except that an MXFP4 checkpoint on
    a part with an FP4 unit runs W4A8 on the FP8 unit's rate (module doc, "MXFP4 checkpoints")."""
    unit = gemm_dtype(weights, acc, act_dtype)
    if unit == "fp4" and scales in WEIGHT_ONLY_FP4_SCALES and acc.has_unit("fp8"):
        return "fp8"
    return unit


def is_weight_only(weights: str, acc: AcceleratorSpec) -> bool:
    """Whether GEMMs with `weights` dequantize them onto the 16-bit unit (see the module doc)."""
    return weights not in SIXTEEN_BIT and gemm_dtype(weights, acc) != weights


def weight_path(weights: str, acc: AcceleratorSpec, act_dtype: str = "bf16") -> WeightPath:
    """How `weights` run on `acc`, or an InputError naming the parts that can run them."""
    if weights in SIXTEEN_BIT:
        unit = _sixteen(weights, acc)
        how = (f"{weights} on the {weights} tensor cores" if unit == weights else
               f"{weights} weights run as {unit}: {acc.id} has no {weights} unit (engines serve the model in {unit}, "
               f"e.g. vLLM --dtype {'half' if unit == 'fp16' else 'bfloat16'})")
        return WeightPath(weights, unit, "16-bit", how)
    if weights in NATIVE_CAPABLE and acc.has_unit(weights):
        a = "A4" if weights == "fp4" else "A8"
        return WeightPath(weights, weights, "native",
                          f"W{weights[-1]}{a} on {acc.id}'s {weights} tensor cores (weights and activations {weights})")
    kernel = _weight_only_kernel(weights, acc)
    if kernel is None:
        raise InputError("weights", f"{weights} weights cannot run on {acc.id}: " + _why_not(weights, acc)
                         + "; " + runs_on(weights))
    unit = _sixteen(act_dtype, acc)
    bits = {"fp8": 8, "int8": 8, "fp4": 4, "int4": 4}[weights]
    reason = ("INT4 checkpoints run weight-only in every modelled engine" if weights == "int4"
              else f"{acc.id} has no {weights} unit")
    return WeightPath(weights, unit, "weight-only",
                      f"weight-only W{bits}A16 ({kernel}): {bits}-bit weight reads, {unit} tensor-core math, "
                      f"16-bit activations ({reason})")


def _why_not(weights: str, acc: AcceleratorSpec) -> str:
    if acc.vendor != "nvidia":
        return f"it has no {weights} unit, and weight-only {weights} kernels on {acc.vendor.upper()} parts are not modelled"
    return f"it has no {weights} unit, and vLLM's weight-only {weights} kernel (Marlin) needs NVIDIA Ampere or newer"


def runs_on(weights: str) -> str:
    """Which catalog parts run `weights`, and how (for error messages)."""
    from parasim.specs.catalog import accelerators

    native: list[str] = []
    wonly: dict[str, list[str]] = {}
    for acc in accelerators().values():
        if weights in NATIVE_CAPABLE and acc.has_unit(weights):
            native.append(acc.id)
        elif kernel := _weight_only_kernel(weights, acc):
            wonly.setdefault(kernel, []).append(acc.id)
    parts = []
    if native:
        parts.append(f"natively on {', '.join(native)}")
    parts += [f"weight-only (vLLM's {kernel}) on {', '.join(ids)}" for kernel, ids in wonly.items()]
    return f"{weights} runs " + (" and ".join(parts) if parts else "on no catalog part")


def _bf16_per_sm(acc: AcceleratorSpec) -> float:
    return acc.sustained_peak(_sixteen("bf16", acc)) / acc.efficiency.sms


@lru_cache(maxsize=1)
def marlin_dequant_stall() -> float:
    """Marlin's dequantization time per unit of its MMA time on the measured part (module doc): the
    dense 16-bit GEMM rate there at the reference depth over the measured Marlin rate, minus 1."""
    from parasim.specs.catalog import get_accelerator

    ref = get_accelerator(MARLIN_REF_PART)
    dense = ref.sustained_peak("bf16") * ref.gemm_efficiency("bf16", MARLIN_REF_K)
    return dense / (MARLIN_REF_TFLOP * 1e12 / MARLIN_REF_S) - 1.0


def marlin_rate(acc: AcceleratorSpec) -> float:
    """A Marlin weight-only GEMM's MMA rate against the part's dense 16-bit GEMM of the same shape:
    MMA time plus the dequantization's fixed SM cycles, which weigh less where an SM's 16-bit tensor
    rate is lower (module doc). 1 on a part whose SM count the catalog does not give."""
    from parasim.specs.catalog import get_accelerator

    if acc.efficiency.sms <= 0:
        return 1.0
    ref = get_accelerator(MARLIN_REF_PART)
    return 1.0 / (1.0 + marlin_dequant_stall() * _bf16_per_sm(acc) / _bf16_per_sm(ref))


def marlin_runs(acc: AcceleratorSpec, *, experts: bool = False, marlin_moe: bool = False) -> bool:
    """Whether a weight-only GEMM on `acc` runs a Marlin kernel whose dequantization is charged: every
    weight-only GEMM on Ampere / Ada (`MARLIN_GENERATIONS`); on Hopper only routed experts that the plan
    serves through the Marlin MoE kernel (`marlin_moe`: `expert_padding: marlin`). Hopper's dense
    weight-only GEMMs (vLLM's Machete for INT4 / INT8), its Triton MXFP4 experts and Blackwell keep the
    dense rate: not measured (module doc)."""
    if acc.vendor != "nvidia" or acc.efficiency.sms <= 0:
        return False
    if acc.generation in MARLIN_GENERATIONS:
        return True
    return acc.generation == "hopper" and experts and marlin_moe
