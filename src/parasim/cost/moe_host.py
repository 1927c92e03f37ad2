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
forward with the sync, the sync's round trip and at least one kernel's issue time. In that forward
the order of the work matters too: after the sync the host issues the dispatch and then the expert
GEMMs, and the only GPU work queued ahead of them is the dispatch's. The host time of the expert
GEMMs beyond the dispatch's and the experts' own GPU time is therefore exposed even when the layer's
later GPU work (the combine, the next layer's attention and router) is longer: that work cannot
run before the experts it depends on. Kernels inside a CUDA graph (Megatron-Core
`cuda_graph_scope`) cost one launch per graph; a full-iteration graph needs static shapes
(drop-and-pad routing, so no sync) and leaves no host work per layer.
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
#: One kernel launch issued back to back from C++ with no sync: NVIDIA's "Getting Started with
#: CUDA Graphs" (Gray, 2019) measures 3.8 us per short kernel launched in a loop without a sync.
KERNEL_LAUNCH_S = 3.8e-6
#: A device-to-host sync's round trip beyond the launch it waits for: the same post measures
#: 9.6 us per short kernel with a stream sync after each.
HOST_SYNC_S = 9.6e-6 - KERNEL_LAUNCH_S
#: Quantize kernels Transformer Engine launches per local expert and split_quantize call, by FP8
#: recipe. GroupedLinear quantizes its input per expert in the forward and its output gradient per
#: expert in the backward (`tex.split_quantize`). At the 26.02 container's Transformer Engine
#: (5671fd36, v2.12; `pytorch/csrc/extensions/cast.cpp` `multi_tensor_quantize_impl`) only delayed
#: scaling has a fused multi-tensor kernel (`nvte_multi_cast_transpose`, one launch per call,
#: whatever the expert count); MXFP8 and current scaling ("tensorwise") loop over the experts,
#: calling each split's quantizer: MXFP8 one `nvte_quantize_v2`, current scaling
#: `nvte_compute_amax_with_config`, `nvte_compute_scale_from_amax` and `nvte_quantize_v2`
#: (`pytorch/csrc/quantizer.cpp`). Each launch is priced at KERNEL_LAUNCH_S, a lower bound: the
#: loop also converts each split's Python quantizer (`convert_quantizer`), and one
#: `MXFP8Quantizer.update_quantized` call from Python measures 8.5-9.3 us on a B200 at small,
#: launch-bound shapes (TransformerEngine PR #2634, 2026-05).
QUANTIZE_KERNELS_PER_EXPERT = {"delayed": 0, "tensorwise": 3, "mxfp8": 1}
#: split_quantize calls per local expert: forward fc1 and fc2 inputs; backward their output gradients.
QUANTIZE_CALLS_FWD, QUANTIZE_CALLS_BWD = 2, 2
#: Host issue time per kernel on each host CPU family (specs.accelerator.HOST_CPUS) over an x86
#: host's, which the figures above come from (EAGER_KERNEL_DISPATCH_S: an H100 SXM board, always
#: x86-hosted; GROUPED_GEMM_HOST_S: an SM100 machine whose host PR #3134 does not name, taken as
#: x86, the DGX B200's). NVIDIA/TransformerEngine issue #2053 (2025-08) times one eager
#: torch.nn.Linear forward's host runtime (module call, dispatcher, cuBLAS launch; BF16, hidden
#: 2,048, 8,192 tokens) at 37.08 us on GB200's Grace against 13.48 us on an H100 DGX's Xeon
#: Platinum 8480C: 2.75x (GH200's Grace 33.17 us, 2.46x). Transformer Engine's own Linear is
#: slower still on Grace (99.66 us on GB200); the torch figure is the one that prices the same
#: work as the constants above.
HOST_ISSUE_FACTOR = {"x86": 1.0, "grace": 37.08 / 13.48}
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
#: of those, issued after the dispatcher's sync and before the experts: the dispatch all-to-all and
#: the chunk sort (the permutation runs before the sync: Megatron-Core `token_dispatcher.py`,
#: `before_ep_alltoall`)
DISPATCH_KERNELS_AFTER_SYNC = 2
#: a backward issues about twice its forward's kernels: each GEMM's data and weight gradients
BACKWARD_KERNEL_RATIO = 2.0


class HostWork(NamedTuple):
    """Host seconds to issue one MoE layer's kernels for one micro-batch, and whether its forward
    waits for the GPU (the token dispatcher's device-to-host sync)."""

    fwd_s: float
    bwd_s: float
    sync: bool
    #: of fwd_s: what the host issues after the sync up to the last expert GEMM (the dispatch's
    #: kernels and the grouped MLP's forward)
    fwd_experts_s: float = 0.0
    #: of bwd_s: what the host issues up to the last expert GEMM (the combine's backward and the
    #: grouped MLP's backward)
    bwd_experts_s: float = 0.0


def scope_set(scope: str | None) -> frozenset[str]:
    """The graph scopes of a comma list (None: nothing graphed, Megatron-Core's default)."""
    return frozenset(x.strip() for x in (scope or "").split(",") if x.strip())


def moe_layer_host(local_experts: int, *, fp8: bool, scopes: frozenset[str], host_cpu: str = "x86",
                   fp8_recipe: str = "delayed") -> HostWork:
    """Host work of one MoE layer per micro-batch; a graphed scope costs one launch per pass.
    Megatron-Core's dispatchers sync unless routing is drop-and-pad (token_dispatcher.py
    `_maybe_dtoh_and_synchronize`), which only a full-iteration graph here assumes. Every issue
    time scales with the host CPU (`HOST_ISSUE_FACTOR`): the same Python, dispatcher and driver
    work takes longer on a slower core. In FP8 the grouped MLP also launches its per-expert
    quantize kernels (`QUANTIZE_KERNELS_PER_EXPERT`: none beyond the fused call under delayed
    scaling)."""
    if "full_iteration" in scopes:
        return HostWork(0.0, 0.0, False)
    kernels = DISPATCH_KERNELS
    for name, n in (("attn", ATTN_KERNELS + (1 if fp8 else 0)), ("moe_router", ROUTER_KERNELS),
                    ("moe_preprocess", PREPROCESS_KERNELS)):
        kernels += 1 if name in scopes else n
    x = HOST_ISSUE_FACTOR[host_cpu]
    fwd = kernels * EAGER_KERNEL_DISPATCH_S * x
    quant = QUANTIZE_KERNELS_PER_EXPERT[fp8_recipe] * KERNEL_LAUNCH_S if fp8 else 0.0
    mlp_f, mlp_b = ((t + calls * quant) * x for t, calls in
                    zip(GROUPED_MLP_HOST_S_PER_EXPERT, (QUANTIZE_CALLS_FWD, QUANTIZE_CALLS_BWD)))
    # after the sync: the dispatch all-to-all and chunk sort, then the grouped MLP; the backward
    # meets the combine's mirror of them first
    edge = DISPATCH_KERNELS_AFTER_SYNC * EAGER_KERNEL_DISPATCH_S * x
    return HostWork(fwd + local_experts * mlp_f, BACKWARD_KERNEL_RATIO * fwd + local_experts * mlp_b, True,
                    edge + local_experts * mlp_f, BACKWARD_KERNEL_RATIO * edge + local_experts * mlp_b)


def exposed_s(host: HostWork, gpu_fwd_s: float, gpu_bwd_s: float,
              gpu_fwd_experts_s: float | None = None) -> tuple[float, float]:
    """(forward, backward) seconds the GPU waits on the host per layer and micro-batch. After the
    forward's sync the queue is empty: the GPU waits the sync's round trip, then at least the
    first kernel's issue, and all host time beyond its own work. Without a sync (and in the
    backward, whose split sizes the forward kept) queued work hides the host until it runs out.

    With the sync, the forward runs in two stretches in stream order: up to the last expert GEMM
    (host `host.fwd_experts_s`, GPU `gpu_fwd_experts_s`: the dispatch and the experts) and the rest
    (the combine, the next layer's attention, router and preprocess). What the GPU queued in the
    first stretch hides host time in the second, never the other way round: a kernel cannot run
    before the host has issued the ones it follows. `gpu_fwd_experts_s` None (or no host split)
    is one stretch: the plain max(0, host - GPU)."""
    bwd = max(0.0, host.bwd_s - gpu_bwd_s)
    if not host.sync:
        return max(0.0, host.fwd_s - gpu_fwd_s), bwd
    idle = (max(0.0, host.fwd_s - gpu_fwd_s) if gpu_fwd_experts_s is None
            else _from_empty_queue_s(host.fwd_s, host.fwd_experts_s, gpu_fwd_s, gpu_fwd_experts_s))
    return HOST_SYNC_S + max(EAGER_KERNEL_DISPATCH_S, idle), bwd


def _from_empty_queue_s(host_s: float, host_experts_s: float, gpu_s: float, gpu_experts_s: float) -> float:
    """GPU idle seconds of one pass of a layer started with nothing queued, in two stretches in
    stream order: up to the last expert GEMM (host_experts_s, gpu_experts_s), then the rest. The
    GPU work queued in the first stretch hides host time in the second, never the reverse."""
    h1, g1 = min(host_experts_s, host_s), min(gpu_experts_s, gpu_s)
    lead = max(0.0, g1 - h1)  # GPU work still queued when the host has issued the last expert GEMM
    return max(0.0, h1 - g1) + max(0.0, (host_s - h1) - lead - (gpu_s - g1))


def backward_edge_s(host: HostWork, gpu_bwd_s: float, gpu_bwd_experts_s: float) -> float:
    """GPU idle seconds beyond `exposed_s`'s backward share, once per model chunk and micro-batch,
    when the backward of a chunk starts with nothing queued: Megatron-Core's blocking pipeline
    exchange (`batch_p2p_comm` with `batch_p2p_sync`, both on by default; Megatron-Bridge turns
    batch_p2p_comm on for PP > 1 without virtual stages) ends in torch.cuda.synchronize()
    (`pipeline_parallel/p2p_communication.py`), so the chunk's first MoE layer has only the
    combine's backward queued ahead of the host's issue of its expert GEMMs. Later layers find
    the work the host got ahead by in the ones before (the steady state `exposed_s` prices)."""
    if not host.sync:  # a full-iteration graph: no host work per layer
        return 0.0
    first = _from_empty_queue_s(host.bwd_s, host.bwd_experts_s, gpu_bwd_s, gpu_bwd_experts_s)
    return max(0.0, first - max(0.0, host.bwd_s - gpu_bwd_s))
