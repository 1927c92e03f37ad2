"""The per-sequence cost of a sort-based top-k / top-p sampler (ServingPlan.sampler).

vLLM V1's PyTorch-native sampler (`TopKTopPSampler.forward_native` -> `apply_top_k_top_p`,
vllm/v1/sample/ops/topk_topp_sampler.py; read at inference-sim/vllm f6ec81c, the Python of the
vllm/vllm-openai:v0.15.1 image) filters a request that asks for top-p (with or without top-k) by
sorting its whole row of fp32 logits, masking in sorted order and scattering back, then samples
with a softmax and an exponential race. FlashInfer's sorting-free kernels are opt-in there
(VLLM_USE_FLASHINFER_SAMPLER); an all-greedy batch runs none of it (argmax only). Every op is a
streaming pass over [rows, vocab] with no reuse, so the term is memory-bound: bytes per
vocabulary entry x vocab / (HBM bandwidth x efficiency.memory), per sampled row, O(1) per
iteration. The byte counts are read off the source of the passes (below); they are lower bounds
(one read per input, no extra softmax pass, no cache-line waste on the sort's gather and
scatter): vLLM's own PyTorch-path tables (PR #32558, #40376: 12-18 us per row at 131,072
entries, GPU not stated) are 1.5-2.2x this count at the H100's bandwidth (docs/serving.md).
"""

from __future__ import annotations

from parasim.specs.accelerator import AcceleratorSpec

#: PyTorch's stable sort of a [rows, vocab] fp32 tensor along the last dim with fewer than 128 rows
#: (aten/src/ATen/native/cuda/SortStable.cu, `segmented_sort_pairs_by_full_sort`): fill (index,
#: segment) int2 pairs (write 8); cub radix_sort_pairs of fp32 keys with int2 values, four 8-bit
#: digit passes (cub onesweep) each reading and writing key + value (4 x 24) plus the key histogram
#: (read 4); cub radix_sort_keys on the int64 pairs over the segment bits (<= 7 bits: one pass, read
#: 8 + write 8, histogram read 8); `sort_postprocess_kernel` (read the pair 8, gather the value 4,
#: write the int64 index 8 and the value 4). Bytes per vocabulary entry of a row.
SORT_BYTES = 8 + 4 * (4 + 8) * 2 + 4 + (8 + 8 + 8) + (8 + 4 + 8 + 4)
#: top-k in sorted order: the threshold compare (read 4, write a 1-byte mask) and the in-place
#: masked_fill (read the mask 1, read and write the value 4 + 4)
TOP_K_BYTES = (4 + 1) + (1 + 4 + 4)
#: top-p in sorted order: softmax (read 4, write 4), cumsum into the softmax's buffer (read 4,
#: write 4), the compare (read 4, write 1), masked_fill (read 1, read and write 4 + 4)
TOP_P_BYTES = (4 + 4) + (4 + 4) + (4 + 1) + (1 + 4 + 4)
#: back to vocabulary order: `logits.scatter_(-1, logits_idx, logits_sort)` in place (read the int64
#: index 8 and the sorted value 4, write 4)
UNSORT_BYTES = 8 + 4 + 4
#: what random sampling adds to greedy's argmax: the temperature divide (read 4, write 4), softmax
#: (read 4, write 4), the exponential noise (write 4), probs / noise in place (read 8, write 4)
#: (`random_sample`; its argmax stands for greedy's)
RANDOM_BYTES = (4 + 4) + (4 + 4) + 4 + (8 + 4)

#: ServingPlan.sampler -> bytes per vocabulary entry per sampled row. `none`: greedy sampling, or
#: a sorting-free kernel (FlashInfer, a Triton top-k/top-p) whose cost is left out.
SAMPLER_BYTES = {
    "none": 0,
    "sort_top_p": SORT_BYTES + TOP_P_BYTES + UNSORT_BYTES + RANDOM_BYTES,
    "sort_top_k_top_p": SORT_BYTES + TOP_K_BYTES + TOP_P_BYTES + UNSORT_BYTES + RANDOM_BYTES,
}
SAMPLERS = tuple(SAMPLER_BYTES)


def sampler_s_per_row(sampler: str, vocab: int, acc: AcceleratorSpec) -> float:
    """Seconds one sampled row costs the replica under `sampler`: the vocabulary's bytes at the
    accelerator's sustained HBM bandwidth. TP does not divide it: vLLM gathers the full logits and
    every TP rank runs the same sampler on them."""
    b = SAMPLER_BYTES[sampler]
    if not b:
        return 0.0
    return b * vocab / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory)
