"""Row tile of a serving engine's grouped expert GEMM, which the engine picks by the batch's size.

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
"""

from __future__ import annotations

#: grouped expert GEMM kernel families (ServingPlan.moe_gemm)
MOE_GEMMS = ("cutlass", "triton")

#: Triton fused_moe BLOCK_SIZE_M while the rank's tokens <= its experts (module docstring):
#: 16-bit weights (vLLM and SGLang `get_default_config`, small-M branch)
TRITON_SMALL_M_TILE_16BIT = 16
#: fp8 / int8 (W8A8) weights (SGLang's fp8 small-M branch; vLLM's block-fp8 default and tuned H20 table)
TRITON_SMALL_M_TILE_QUANT = 64


def moe_tile_m(gemm: str, tokens: float, experts: float, part_tile: int, *, quantized: bool) -> int:
    """Row tile height of the grouped expert GEMM for `tokens` tokens meeting on a rank holding
    `experts` experts, under kernel family `gemm` (MOE_GEMMS); `part_tile` is the part's own;
    `quantized`: weights below 16 bits computed in their own format (W8A8; W4A4 taken alike)."""
    if gemm == "triton" and 0 < tokens <= experts:
        small = TRITON_SMALL_M_TILE_QUANT if quantized else TRITON_SMALL_M_TILE_16BIT
        return min(small, part_tile)
    return part_tile
