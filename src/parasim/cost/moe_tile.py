"""Row tile and MMA rate of a serving engine's grouped expert GEMM, by kernel family.

A grouped (fused-MoE) GEMM pads every touched expert's rows to whole row tiles, so at decode, when
an expert holds one or two tokens, the tile height sets the compute charged (cost.routing). The
kernel families differ (`MOE_GEMMS`):

* `cutlass` (default): the part's `gemm_tile_m` at every batch. TensorRT-LLM's SM90 grouped GEMM
  offers only 128- and 256-row CTA shapes for non-weight-only MoE (cutlass_kernels
  cutlass_heuristic.cpp, `get_candidate_tiles_sm90`, GROUPED_GEMM branch); Megatron-Core / TE
  training keeps this too.
* `triton`: vLLM's and SGLang's Triton fused_moe kernel. Its config is chosen by M, the tokens on
  the rank, against E, the rank's experts: `get_default_config` takes a small BLOCK_SIZE_M while
  M <= E (vLLM fused_moe.py and SGLang fused_moe_triton, 2024-2025: 16 rows for 16-bit weights; 64
  for fp8 in SGLang and for vLLM's block-scaled fp8, whose tuned H20 table for DeepSeek-V3,
  `E=256,N=256,device_name=NVIDIA_H20,dtype=fp8_w8a8,block_shape=[128,128].json`, keeps 64 at every
  M). Larger batches keep the part's tile: vLLM hands block-fp8 experts to DeepGEMM once M reaches
  its 128-row contiguous-layout alignment (`_valid_deep_gemm_shape`).

Weight-only formats keep Marlin's own tile (cost.quant.MARLIN_TILE_M) in every family.

The family also sets the grouped GEMM's MMA rate against a dense GEMM of the same rows
(`grouped_gemm_rate`). The catalog's GEMM efficiencies are dense-kernel measurements, and DeepGEMM's
grouped rows, which parasim reproduces within 10 % (tests/test_cost_moe_grouped_published.py), run
at the dense rate. A CUTLASS grouped GEMM does not: DeepGEMM's README (deepseek-ai/DeepGEMM, the
February 2025 release table, H800, "All speedup metrics are calculated in comparison to our
internally and carefully optimized implementation based on CUTLASS 3.6") puts its CUTLASS baseline
1.1-1.2x behind on all ten grouped MoE rows (mean 1.18) but 1.0-1.2x (mean 1.08) behind on the six
dense rows at M = 4096. The grouping itself therefore costs the CUTLASS 3.x kernel 1.08 / 1.18 =
0.92 of its dense rate (the shared 1.08 is the baseline's fine-grained FP8 scaling, which
TensorRT-LLM's per-tensor FP8 MoE does not pay). TensorRT-LLM's MoE runner on Hopper runs CUTLASS
3.x grouped GEMMs (`MoeGemmRunner::supportsTmaWarpSpecialized` is true for sm 90, cutlass_kernels/
moe_gemm/moe_gemm_template_dispatch.h; its TMA warp-specialized configs are the Hopper ones), so the
`cutlass` family takes that rate on Hopper parts. The rate stays 1 where nothing was measured:
other generations (Ampere runs CUTLASS 2.x grouped kernels, Blackwell others), the `triton` family
(vLLM PR #24700's Mixtral sweep is predicted within 10 % at decode sizes; serving.md, "Fused-MoE
kernel sweeps"), weight-only formats (Marlin kernels) and training's grouped GEMMs (cost.layer).
"""

from __future__ import annotations

from statistics import fmean

#: grouped expert GEMM kernel families (ServingPlan.moe_gemm)
MOE_GEMMS = ("cutlass", "triton")

#: Triton fused_moe BLOCK_SIZE_M while the rank's tokens <= its experts (module docstring):
#: 16-bit weights (vLLM and SGLang `get_default_config`, small-M branch)
TRITON_SMALL_M_TILE_16BIT = 16
#: fp8 / int8 (W8A8) weights (SGLang's fp8 small-M branch; vLLM's block-fp8 default and tuned H20 table)
TRITON_SMALL_M_TILE_QUANT = 64

#: DeepGEMM README (February 2025 table, H800): its speedup over the CUTLASS 3.6 baseline on the
#: dense rows at M = 4096 ("Normal GEMMs for dense models", last six rows) ...
DEEPGEMM_DENSE_SPEEDUPS = (1.1, 1.0, 1.0, 1.2, 1.1, 1.1)
#: ... and on every grouped MoE row (the four contiguous-layout rows, then the six masked-layout rows)
DEEPGEMM_GROUPED_SPEEDUPS = (1.2, 1.2, 1.2, 1.1, 1.2, 1.2, 1.2, 1.2, 1.1, 1.2)
#: a CUTLASS 3.x grouped GEMM's MMA rate against the same library's dense GEMM (module docstring)
CUTLASS_GROUPED_RATE = fmean(DEEPGEMM_DENSE_SPEEDUPS) / fmean(DEEPGEMM_GROUPED_SPEEDUPS)
#: the generations whose `cutlass` family is a CUTLASS 3.x (SM90) grouped GEMM
CUTLASS_GROUPED_GENERATIONS = ("hopper",)


def moe_tile_m(gemm: str, tokens: float, experts: float, part_tile: int, *, quantized: bool) -> int:
    """Row tile height of the grouped expert GEMM for `tokens` tokens meeting on a rank holding
    `experts` experts, under kernel family `gemm` (MOE_GEMMS); `part_tile` is the part's own;
    `quantized`: weights below 16 bits computed in their own format (W8A8; W4A4 taken alike)."""
    if gemm == "triton" and 0 < tokens <= experts:
        small = TRITON_SMALL_M_TILE_QUANT if quantized else TRITON_SMALL_M_TILE_16BIT
        return min(small, part_tile)
    return part_tile


def grouped_gemm_rate(gemm: str, generation: str, *, weight_only: bool) -> float:
    """The routed experts' grouped GEMM's MMA rate against a dense GEMM of the same rows, for kernel
    family `gemm` on a part of `generation` (module docstring); weight-only formats run Marlin
    kernels (1)."""
    if gemm == "cutlass" and generation in CUTLASS_GROUPED_GENERATIONS and not weight_only:
        return CUTLASS_GROUPED_RATE
    return 1.0
