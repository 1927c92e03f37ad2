"""PyTorch's ring attention (torch.distributed.tensor.experimental context_parallel, as torchtitan
runs it): the memory-bound work around each ring step's SDPA call.

Read from torch/distributed/tensor/experimental/_attention.py (`_templated_ring_attention`,
`_SDPAMerger`, `_templated_ring_attention_backward`; `convert_to_f32` and round-robin load
balancing on by default). Transformer Engine's ring (Megatron-Core) is not this code and is not
charged here. Bytes are per element of the rank's local query / output (tokens x heads x
head_dim); torchtitan repeats K and V to the query heads before SDPA, so K and V have as many.

Forward, per ring step after the first (cp - 1 of them), on the rank that merges whole blocks
(the slowest: the others merge half a block and re-concatenate):
  K and V concatenated into the send buffer, read + write 16-bit: 2 x 4 = 8;
  the block output cast to fp32 (2 + 4) and merged, `out - sigmoid(lse_b - lse) * (out - out_b)`:
  subtract 12, scale 8, subtract 12 = 38.
Once per call: the first block cast to fp32 (6) and the result cast back (6).
Backward (`_templated_ring_attention_backward`): fp32 accumulators zeroed (3 x 4) and cast back at
the end (q: 6, K and V: 12); per step the K/V send buffer (8, cp - 1 steps), the gradient of K and
V added into fp32 (step 0: 2 x 10; later steps `_partial_update`, half-block add then a full fp32
re-concatenation: 2 x 13), the fp32 dK/dV send buffer (2 x 8, every step) and dQ's fp32 add (10,
every step).
"""

from __future__ import annotations

from parasim.cost.roofline import memory_time_s
from parasim.specs.accelerator import AcceleratorSpec

#: context-parallel implementations: Transformer Engine's ring (Megatron-Core) or PyTorch's
CP_RINGS = ("te", "pytorch")


def forward_bytes_per_element(cp: int) -> float:
    if cp <= 1:
        return 0.0
    return (cp - 1) * (8.0 + 38.0) + 12.0


def backward_bytes_per_element(cp: int) -> float:
    if cp <= 1:
        return 0.0
    return 12.0 + 18.0 + (cp - 1) * 8.0 + 20.0 + (cp - 1) * 26.0 + cp * (16.0 + 10.0)


def ring_merge_s(elements: float, cp: int, acc: AcceleratorSpec) -> tuple[float, float]:
    """(forward, backward) seconds of one layer's ring bookkeeping for `elements` local query
    elements; one kernel per op (forward 6 per step, backward 7 per step)."""
    if cp <= 1 or elements <= 0:
        return 0.0, 0.0
    return (memory_time_s(elements * forward_bytes_per_element(cp), acc, kernels=6 * (cp - 1) + 2),
            memory_time_s(elements * backward_bytes_per_element(cp), acc, kernels=7 * cp + 6))
