"""FSDP2's per-layer copies on the compute stream (PyTorch `fully_shard`, per-parameter sharding).

FSDP2 keeps each parameter as its own DTensor shard, so the collectives cannot run in place on the
module's tensors. Read from torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py:

* after each all-gather, `foreach_all_gather_copy_out` waits for the all-gather event on the
  *current* (compute) stream and runs `split_with_sizes_copy` from the all-gather output into the
  unsharded parameters: every gathered byte read once and written once;
* before each reduce-scatter, `foreach_reduce` runs `chunk_cat` of the unsharded gradients into the
  reduce-scatter input on the current stream ("reduce_scatter_stream.wait_stream(current_stream)"
  follows it), casting to the reduce dtype on the way: the gradient read in the parameter dtype,
  written in the reduce dtype.

The all-gather copy-in (sharded parameters cast into the send buffer) runs on its own stream over
1/world of the bytes, and the post-reduce division and shard views on the reduce-scatter stream:
neither is charged. FSDP1 and DeepSpeed ZeRO-3 gather into and reduce from one flat buffer per
unit (no copy-out, no chunk-cat) and are not charged this term.

Autograd hands each unsharded weight gradient to FSDP2 as a fresh tensor (AccumulateGrad with no
earlier gradient keeps it), so there is no main-gradient accumulation epilogue to charge instead.
"""

from __future__ import annotations

from parasim.cost.roofline import memory_time_s
from parasim.specs.accelerator import AcceleratorSpec

#: FSDP layouts: flat buffers (FSDP1, DeepSpeed ZeRO-3) or per-parameter shards (FSDP2)
FSDP_LAYOUTS = ("flat", "per_param")


def copy_out_bytes(params: float, param_bytes: float) -> float:
    """One all-gather's copy-out: read the gathered buffer, write the unsharded parameters."""
    return 2.0 * params * param_bytes


def chunk_cat_bytes(params: float, param_bytes: float, reduce_bytes: float) -> float:
    """One reduce-scatter's copy-in: read the gradients (parameter dtype), write the reduce dtype."""
    return params * (param_bytes + reduce_bytes)


def fsdp2_copies_s(params: float, param_bytes: float, reduce_bytes: float, acc: AcceleratorSpec, *,
                   regather: bool = True) -> tuple[float, float]:
    """(forward, backward) seconds of one FSDP2 unit's copies on the compute stream, per micro-batch:
    the forward's copy-out, and the backward's copy-out (when the unit was resharded after the
    forward, torchtitan's default) plus its chunk-cat. One kernel each."""
    fwd = memory_time_s(copy_out_bytes(params, param_bytes), acc)
    bwd = memory_time_s(chunk_cat_bytes(params, param_bytes, reduce_bytes), acc)
    if regather:
        bwd += fwd
    return fwd, bwd
