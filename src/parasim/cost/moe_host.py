"""Host-bound MoE layers in training: the GPU waiting for the CPU to issue an MoE layer's kernels.

An eagerly run layer is a stream of kernels the host issues one by one; the GPU only waits when
the host falls behind. Two things make an MoE layer fall behind where a dense one does not:
* a dropless token dispatcher needs the per-expert token counts on the host (all-to-all split
  sizes, the grouped GEMM's per-expert row counts) before it can issue the dispatch, so once per
  layer forward the host waits for the GPU (a device-to-host sync) and the GPU's queue is empty:
  everything the host issues after it runs no sooner than the host issues it;
* the experts' grouped GEMM issues one GEMM per local expert and matrix (and, in FP8, one
  quantisation of its input), so the kernel count grows with the experts a GPU holds while
  each kernel's work shrinks with them.
Per layer and micro-batch the GPU then idles max(0, host - GPU) seconds in each pass, plus, in a
forward with the sync, the sync's round trip and at least one kernel's issue time. Kernels
inside a CUDA graph (Megatron-Core `cuda_graph_scope`) cost one launch per graph; a
full-iteration graph needs static shapes (drop-and-pad routing, so no sync) and leaves no host
work per layer.
"""

from __future__ import annotations

from typing import NamedTuple

#: Host time to issue one kernel from eager PyTorch (module call, dispatcher, launch): a
#: published eager-vs-graph measurement, one Llama-3.1-8B decode step on an H100 SXM host, 8.4 ms
#: eager vs 5.1 ms as a CUDA graph: 0.26 ms per layer for its 10 kernels (the same measurement
#: as `engines.host.EAGER_KERNEL_DISPATCH_S`, which the serving model uses).
EAGER_KERNEL_DISPATCH_S = 0.26e-3 / 10
#: Host time of one expert GEMM in Transformer Engine's GroupedLinear, the module Megatron-Core's
#: TEGroupedMLP runs: a per-expert loop of cuBLASLt GEMMs over several CUDA streams
#: (`nvte_multi_tensor_gemm`). TransformerEngine PR #3134 (2026-06, SM100) times that path at
#: 0.272 ms for 8 experts x 128 tokens (N = K = 2,048, per-call scale swizzles included): 34 us
#: per expert GEMM, where one CUTLASS launch for all 8 takes 0.069 ms. Its GEMMs are ~1 GFLOP
#: each, a few microseconds of tensor-core time, so the 34 us is the path's per-GEMM issue cost.
#: The figure is NVFP4 (per-tensor); the path is the one the FP8 / MXFP8 / BF16 runs take.
GROUPED_GEMM_HOST_S = 0.272e-3 / 8
#: Expert GEMMs per local expert: forward fc1 and fc2; backward the data and weight gradients of each.
EXPERT_GEMMS_FWD, EXPERT_GEMMS_BWD = 2, 4
#: Host time of the grouped MLP per local expert, forward and backward. (Until 2026-12-07 this was
#: TransformerEngine issue #2897's ~1.2 / ~2.1 ms of CPU time for 64 experts, 18.8 / 32.8 us per
#: expert: the *fused* MXFP8 grouped MLP ops of TE PR #2769 (by its number spring 2026, after the
#: 26.02 container the validation rows ran); that issue also prices most of it per call, not per
#: expert.)
GROUPED_MLP_HOST_S_PER_EXPERT = (EXPERT_GEMMS_FWD * GROUPED_GEMM_HOST_S, EXPERT_GEMMS_BWD * GROUPED_GEMM_HOST_S)
#: A device-to-host sync's round trip beyond the launch it waits for: NVIDIA's "Getting Started
#: with CUDA Graphs" (Gray, 2019) measures 9.6 us per short kernel with a stream sync after each
#: and 3.8 us without.
HOST_SYNC_S = 9.6e-6 - 3.8e-6
#: Megatron-Core `cuda_graph_scope` names the term reads; full_iteration graphs the whole step.
GRAPH_SCOPES = ("attn", "moe_router", "moe_preprocess", "full_iteration")

# Forward kernels of one MoE transformer layer outside the experts, as Megatron-Core issues them
# (Transformer Engine modules, fused permute and router options on), by the graph scope that can
# hold them:
#: attn: input norm + QKV (TE LayerNormLinear), rotary, core attention, output projection,
#: residual add, pre-MLP norm (FP8 adds the output projection's input cast)
ATTN_KERNELS = 6
#: moe_router: router GEMM, fused top-k softmax, scores for the load-balancing loss
ROUTER_KERNELS = 3
#: moe_preprocess: per-expert token counts, their exchange over the EP group, the host copy
PREPROCESS_KERNELS = 3
#: never graphed with dropless routing (dynamic shapes): permute, dispatch, chunk sort; and their
#: inverses for the combine
DISPATCH_KERNELS = 6
#: a backward issues about twice its forward's kernels: each GEMM's data and weight gradients
BACKWARD_KERNEL_RATIO = 2.0


class HostWork(NamedTuple):
    """Host seconds to issue one MoE layer's kernels for one micro-batch, and whether its forward
    waits for the GPU (the token dispatcher's device-to-host sync)."""

    fwd_s: float
    bwd_s: float
    sync: bool


def scope_set(scope: str | None) -> frozenset[str]:
    """The graph scopes of a comma list (None: nothing graphed, Megatron-Core's default)."""
    return frozenset(x.strip() for x in (scope or "").split(",") if x.strip())


def moe_layer_host(local_experts: int, *, fp8: bool, scopes: frozenset[str]) -> HostWork:
    """Host work of one MoE layer per micro-batch; a graphed scope costs one launch per pass.
    Megatron-Core's dispatchers sync unless routing is drop-and-pad (token_dispatcher.py
    `_maybe_dtoh_and_synchronize`), which only a full-iteration graph here assumes."""
    if "full_iteration" in scopes:
        return HostWork(0.0, 0.0, False)
    kernels = DISPATCH_KERNELS
    for name, n in (("attn", ATTN_KERNELS + (1 if fp8 else 0)), ("moe_router", ROUTER_KERNELS),
                    ("moe_preprocess", PREPROCESS_KERNELS)):
        kernels += 1 if name in scopes else n
    fwd = kernels * EAGER_KERNEL_DISPATCH_S
    mlp_f, mlp_b = GROUPED_MLP_HOST_S_PER_EXPERT
    return HostWork(fwd + local_experts * mlp_f, BACKWARD_KERNEL_RATIO * fwd + local_experts * mlp_b, True)


def exposed_s(host: HostWork, gpu_fwd_s: float, gpu_bwd_s: float) -> tuple[float, float]:
    """(forward, backward) seconds the GPU waits on the host per layer and micro-batch. After the
    forward's sync the queue is empty: the GPU waits the sync's round trip, then at least the
    first kernel's issue, and all host time beyond its own work. Without a sync (and in the
    backward, whose split sizes the forward kept) queued work hides the host until it runs out."""
    bwd = max(0.0, host.bwd_s - gpu_bwd_s)
    if not host.sync:
        return max(0.0, host.fwd_s - gpu_fwd_s), bwd
    return HOST_SYNC_S + max(EAGER_KERNEL_DISPATCH_S, host.fwd_s - gpu_fwd_s), bwd
