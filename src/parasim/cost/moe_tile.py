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
  M). Larger batches keep the part's tile (vLLM hands block-fp8 experts to DeepGEMM once M
  reaches its 128-row contiguous-layout alignment, `_valid_deep_gemm_shape`, where DeepGEMM MoE
  is on), except the Triton block-FP8 path on Hopper, which keeps 64 rows (below).

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
`cutlass` family takes that rate on Hopper parts. The `cutlass` rate stays 1 where nothing was
measured: other generations (Ampere runs CUTLASS 2.x grouped kernels, Blackwell others),
weight-only formats (Marlin kernels) and training's grouped GEMMs (cost.layer).

The `triton` family's own MMA rate at prefill sizes (`TRITON_FUSED_MOE_RATES`). vLLM's and SGLang's
fused_moe runs each expert GEMM as one Triton kernel that gathers its A rows through the sorted
token ids (`moe_align_block_size`), so its rows are pointer loads rather than a TMA tile, then the
activation (`silu_and_mul`) and the k-way sum (`moe_sum`) as their own kernels. Published
`benchmark_moe.py` sweeps with the tuned config file time that whole call; where every touched
expert holds at least `TRITON_RATE_MIN_ROWS` rows (compute-bound, the row tiles mostly full) the
kernel runs below the catalog's dense GEMM of the same padded rows. For each sweep point the rate
is the one at which parasim's `experts_up + activation + experts_down + moe_combine` equals the
published time (tests/test_cost_moe_triton_prefill.py re-derives it by bisection from the published
times); each generation's rate is the mean over its sweeps (each sweep weighted once):

* Hopper: vLLM PR #24700 (Mixtral-8x7B BF16, TP 2, H100 SXM, tuned
  `E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json`): 833.72 us at 1,024 tokens (256 rows per
  expert) and 1,122.93 us at 1,536 (384), rates 0.863 and 0.855; vLLM PR #44818 (Gemma-4 shape, E
  128, N 704, K 2816, top 8, BF16, H200, "Tuned" column): 1,189.6 us at 4,096 tokens (256 rows),
  rate 0.709. Mean of the two sweeps 0.784.
* Ampere: vLLM PR #40542 (E 64, N 1408, K 2048, top 6, BF16, A100-SXM4-80GB, "tuned" column):
  2,636.6 us at 4,096 tokens (384 rows), rate 0.809.

At decode sizes the kernel is weight-bound and the rate does not show (the rate scales the compute
side only). Not applied: FP8 / INT8 W8A8 experts (no tuned sweep at prefill sizes was found; the
Qwen3-30B-A3B FP8 sweep of PR #24700 ran vLLM's untuned default config), weight-only formats
(Marlin / matmul_ogs kernels, MXFP4), Blackwell and other generations (nothing measured), and
vLLM's fallback `get_default_config` when no tuned file exists for the device and shape (measured
1.02-1.05x slower than tuned at 1,024-4,096 tokens in PR #44818 and 1.10-1.11x in PR #40542; which
shapes have a file is not knowable from a plan).

One more `triton`-family term: block-scaled FP8 (W8A8 with 128 x 128 weight blocks and per-128
activation groups, DeepSeek-V3/R1 and Qwen3-FP8 checkpoints) on Hopper. The Triton kernels that
vLLM and SGLang run for it (`fused_moe_kernel` with `block_shape`, written like the dense
`w8a8_block_fp8_matmul`) multiply each 128-deep K step's partial product by the two block scales
before adding it to the fp32 accumulator (vLLM `vllm/model_executor/layers/fused_moe/fused_moe.py`,
`fused_moe_kernel`, block-wise branch of the K loop: `accumulator += tl.dot(a, b) * a_scale[:,
None] * b_scale[None, :]`, where the per-tensor branch passes `acc=accumulator` to the dot), so
each step's FP8 wgmma result must be complete before the next step can use the accumulator: the
MMAs of successive K steps do not overlap (our reading of the kernel's structure; the cost itself
is the measurement that follows). Measured on an H100 with the tuned config (vLLM PR #23280,
https://github.com/vllm-project/vllm/pull/23280, "Benchmarking DeepSeek-V3, N=2112 K=7168", table
"BF16 vs W8A8 Block FP8 GEMMs", TFLOP/s), the Triton block-FP8 GEMM reaches 0.56-0.61 of the torch
BF16 GEMM of the same shape at M = 1,024-8,192 rows: no FP8 speed-up at all. Read against the
catalog's H100 FP8 GEMM rate at that depth, each K step spends `triton_block_fp8_stall()` times its
MMA time waiting. That wait is a fixed number of SM cycles per step, while the MMA time per step
scales inversely with the SM's FP8 tensor rate, so a part whose SMs compute FP8 more slowly than
the H100's (H100 PCIe) loses proportionally less (`triton_block_fp8_rate`; the fixed wait in cycles
is the model's assumption, checked on no second part). The same kernels keep BLOCK_SIZE_M = 64 at
every batch (vLLM's `get_default_config` block-FP8 branch, `"BLOCK_SIZE_M": 64` unless DeepGEMM
runs, and its tuned H20 table; SGLang's fp8 default), so the 64-row tile holds above E tokens too
(`moe_tile_m`'s `block_fp8`). Not applied: per-tensor FP8 (no per-step rescale), TensorRT-LLM's and
DeepGEMM's kernels (the `cutlass` family; DeepGEMM overlaps the promotion with warp
specialisation), parts whose SM count the catalog does not give (the per-SM rate is unknown), and
other generations (nothing measured).
"""

from __future__ import annotations

from functools import lru_cache
from statistics import fmean

from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.catalog import get_accelerator

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

#: Triton fused_moe prefill rate (module docstring): published tuned `benchmark_moe.py` points with at
#: least this many rows per touched expert (tokens x top-k / experts) ...
TRITON_RATE_MIN_ROWS = 256
#: ... (part, experts, top-k, hidden K, expert width N per rank, tokens, published kernel time in us),
#: one tuple per sweep, by generation: vLLM PR #24700 (H100, Mixtral BF16 TP 2), PR #44818 (H200,
#: Gemma-4 shape, tuned), PR #40542 (A100-SXM4-80GB, E 64 / N 1408, tuned)
TRITON_FUSED_MOE_SWEEPS = {
    "hopper": (("h100-sxm", 8, 2, 4096, 7168, ((1024, 833.72), (1536, 1122.93))),
               ("h200-sxm", 128, 8, 2816, 704, ((4096, 1189.6),))),
    "ampere": (("a100-sxm-80gb", 64, 6, 2048, 1408, ((4096, 2636.6),)),),
}
#: each point's rate (parasim's fused-MoE time equal to the published one; re-derived by
#: tests/test_cost_moe_triton_prefill.py), in the order of TRITON_FUSED_MOE_SWEEPS
TRITON_FUSED_MOE_POINT_RATES = {"hopper": ((0.863, 0.855), (0.709,)), "ampere": ((0.809,),)}
#: the Triton fused_moe kernel's MMA rate against the dense GEMM's, by generation: mean over sweeps
TRITON_FUSED_MOE_RATES = {gen: fmean(fmean(p) for p in sweeps) for gen, sweeps in TRITON_FUSED_MOE_POINT_RATES.items()}
#: the compute formats the sweeps ran (16-bit weights and activations)
TRITON_RATE_DTYPES = ("bf16", "fp16")

#: vLLM PR #23280 (H100 80GB HBM3, DeepSeek-V3 N=2112 K=7168, block 128 x 128, tuned config), TFLOP/s
#: at M = 1,024 / 2,048 / 4,096 / 8,192: (torch-bf16, w8a8-block-fp8-triton)
TRITON_BLOCK_FP8_VS_BF16_TFLOPS = ((619.771938, 366.839772), (648.192575, 396.032348), (715.781529, 402.982983),
                                   (666.385367, 406.511360))
#: the Triton block-FP8 GEMM's rate against the dense 16-bit GEMM of the same shape on that part
TRITON_BLOCK_FP8_VS_BF16 = fmean(fp8 / bf16 for bf16, fp8 in TRITON_BLOCK_FP8_VS_BF16_TFLOPS)
#: the measurement's part (catalog id) and reduction depth
TRITON_BLOCK_FP8_REF_PART = "h100-sxm"
TRITON_BLOCK_FP8_REF_K = 7168
#: the generations where it was measured (Hopper: FP8 wgmma with the rescale on the accumulator)
TRITON_BLOCK_FP8_GENERATIONS = ("hopper",)
#: the checkpoint scale layout the Triton block-FP8 path serves (cost.quant_bytes)
BLOCK_FP8_SCALES = "block_128"


def moe_tile_m(gemm: str, tokens: float, experts: float, part_tile: int, *, quantized: bool,
               block_fp8: bool = False) -> int:
    """Row tile height of the grouped expert GEMM for `tokens` tokens meeting on a rank holding
    `experts` experts, under kernel family `gemm` (MOE_GEMMS); `part_tile` is the part's own;
    `quantized`: weights below 16 bits computed in their own format (W8A8; W4A4 taken alike);
    `block_fp8`: the Triton block-FP8 kernel runs (`triton_block_fp8`), whose config keeps
    TRITON_SMALL_M_TILE_QUANT rows at every batch."""
    if block_fp8:
        return min(TRITON_SMALL_M_TILE_QUANT, part_tile)
    if gemm == "triton" and 0 < tokens <= experts:
        small = TRITON_SMALL_M_TILE_QUANT if quantized else TRITON_SMALL_M_TILE_16BIT
        return min(small, part_tile)
    return part_tile


def grouped_gemm_rate(gemm: str, generation: str, *, weight_only: bool, dtype: str) -> float:
    """The routed experts' grouped GEMM's MMA rate against a dense GEMM of the same rows, for kernel
    family `gemm` on a part of `generation` computing in `dtype` (module docstring); weight-only
    formats run Marlin kernels (1)."""
    if weight_only:
        return 1.0
    if gemm == "cutlass" and generation in CUTLASS_GROUPED_GENERATIONS:
        return CUTLASS_GROUPED_RATE
    if gemm == "triton" and generation in TRITON_FUSED_MOE_RATES and dtype in TRITON_RATE_DTYPES:
        return TRITON_FUSED_MOE_RATES[generation]
    return 1.0


def triton_block_fp8(gemm: str, acc: AcceleratorSpec, weights: str, scales: str) -> bool:
    """Whether the routed experts run the Triton block-FP8 kernel with its per-step wait
    (`triton_block_fp8_rate`; module docstring): `triton` family, FP8 weights with 128 x 128 block
    scales computed on the FP8 unit, on a generation where that was measured and a part whose SM
    count is known."""
    return (gemm == "triton" and weights == "fp8" and scales == BLOCK_FP8_SCALES and acc.has_unit("fp8")
            and acc.generation in TRITON_BLOCK_FP8_GENERATIONS and acc.efficiency.sms > 0)


def _fp8_per_sm(acc: AcceleratorSpec) -> float:
    return acc.sustained_peak("fp8") / acc.efficiency.sms


@lru_cache(maxsize=1)
def triton_block_fp8_stall() -> float:
    """Wait per K step over the step's MMA time, on the measured part: its dense FP8 GEMM rate at the
    measured depth over the Triton block-FP8 rate, minus 1 (module docstring)."""
    ref = get_accelerator(TRITON_BLOCK_FP8_REF_PART)
    k = TRITON_BLOCK_FP8_REF_K
    fp8 = ref.sustained_peak("fp8") * ref.gemm_efficiency("fp8", k)
    bf16 = ref.sustained_peak("bf16") * ref.gemm_efficiency("bf16", k)
    return fp8 / (TRITON_BLOCK_FP8_VS_BF16 * bf16) - 1.0


def triton_block_fp8_rate(acc: AcceleratorSpec) -> float:
    """The Triton block-FP8 grouped GEMM's MMA rate against the part's dense FP8 GEMM: each K step's
    MMA time plus the fixed wait, which weighs less where an SM's FP8 rate is lower (module doc).
    Callers check `triton_block_fp8` first (the part's SM count must be known)."""
    ref = get_accelerator(TRITON_BLOCK_FP8_REF_PART)
    return 1.0 / (1.0 + triton_block_fp8_stall() * _fp8_per_sm(acc) / _fp8_per_sm(ref))
