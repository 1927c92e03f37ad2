"""Host-side engine constants: per-iteration overhead by engine, eager (no CUDA graph) kernel
dispatch, vLLM's asynchronous output processing. Named figures, not fitted to any case; the
engine profiles turn them into plan fields (`iteration_overhead_s`, `eager_prefill_layer_s`,
`output_delay_s`, `host_s_per_sequence`, `serial_host_s_per_sequence`), which the simulator takes as given."""

from __future__ import annotations

from parasim.serving.plan import ACT_QUANT, ACT_QUANT_SEPARATE, DEFAULT_ITERATION_OVERHEAD_S

#: Host-side work per engine iteration that does not overlap the GPU: batch formation, input
#: preparation, sampling bookkeeping, kernel-launch gaps between CUDA graphs. A named engine
#: constant (not fitted to any case); a plan may override it with `iteration_overhead_s`.
#: Order of magnitude from vLLM's own profiling (v0.6.0 release notes: CPU overhead was a large
#: share of an H100 decode step before the async/multi-step work) and TensorRT-LLM's C++ runtime.
#: SGLang from 0.4 runs an overlap scheduler that prepares the next batch while the GPU runs the
#: current one; with no published SGLang figure it is taken equal to TensorRT-LLM's C++ runtime
#: (an assumption; SGLang before 0.4 gets "default").
ITERATION_OVERHEAD_S = {"default": DEFAULT_ITERATION_OVERHEAD_S, "vllm": 1.5e-3, "tensorrt-llm": 0.3e-3, "sglang": 0.3e-3,
                        # assumptions, not published figures: TGI's Python model server loop as vLLM's;
                        # LMDeploy's C++ TurboMind batch loop as TensorRT-LLM's
                        "tgi": 1.5e-3, "lmdeploy": 0.3e-3,
                        # assumption: DeepSpeed-MII's Python scheduling loop (engines/fastgen.py) as vLLM's
                        "deepspeed-mii": 1.5e-3}

#: Host time to issue one kernel when the forward pass runs eagerly (no CUDA graph): the Python
#: module call, the PyTorch dispatcher and the launch. vLLM 0.6 captures CUDA graphs only for
#: decode batches (sizes up to 256); every prefill runs eagerly, so a prefill iteration cannot
#: finish before the host has issued all its kernels: its time is max(GPU time, layers x the
#: layer's dispatch time) + the per-iteration overhead. From a published eager-vs-graph
#: measurement: one Llama-3.1-8B (32 layers, one GPU) decode step on an H100 SXM takes 8.4 ms eager
#: vs 5.1 ms as a CUDA graph, i.e. host-bound at 0.26 ms per layer for the layer's 10 kernels
#: (norm, QKV GEMM, rotary, KV-cache write, attention, output GEMM, norm, gate/up GEMM,
#: activation, down GEMM): 26 us per kernel. An engine constant, not fitted to a case.
EAGER_KERNEL_DISPATCH_S = 0.26e-3 / 10
EAGER_KERNELS_PER_LAYER = 10
#: With TP each layer adds two all-reduces; outside a CUDA graph vLLM's custom all-reduce first
#: copies its input into the registered buffer (custom_all_reduce.all_reduce_unreg), so each is
#: two launches (copy + kernel); through NCCL (`custom_allreduce` off) each is one.
EAGER_TP_KERNELS_PER_LAYER = 4
EAGER_TP_KERNELS_PER_LAYER_NCCL = 2


def eager_layer_dispatch_s(tp: int, act_quant: str = "fused", custom_allreduce: bool = True) -> float:
    """Host time to issue one decoder layer's kernels eagerly (see EAGER_KERNEL_DISPATCH_S),
    separate activation-quantization kernels (ACT_QUANT) included."""
    tp_kernels = EAGER_TP_KERNELS_PER_LAYER if custom_allreduce else EAGER_TP_KERNELS_PER_LAYER_NCCL
    kernels = (EAGER_KERNELS_PER_LAYER + (tp_kernels if tp > 1 else 0)
               + len(ACT_QUANT_SEPARATE[act_quant]) * ACT_QUANT[act_quant][0])
    return kernels * EAGER_KERNEL_DISPATCH_S


#: vLLM >= 0.6 processes an iteration's outputs asynchronously: they are queued when the iteration
#: ends and processed (first-token time set, detokenised, TTFT/TPOT observed) by a callback that
#: runs inside the *next* iteration, after its host work (schedule, prepare inputs, broadcast to
#: the TP workers, launch) and before its sampling (v0.6.0 llm_engine.step / model_runner
#: execute_model -> async_callback). Every token is therefore reported about one iteration's host
#: overhead after its GPU work ends; the shift is the same for every token, so inter-token gaps
#: and TPOT are unchanged while TTFT and E2E grow by it. (When nothing else is scheduled vLLM
#: drains the queue at once; that idle-engine case is not distinguished.)
VLLM_ASYNC_OUTPUT_DELAY_S = ITERATION_OVERHEAD_S["vllm"]


#: vLLM V1 with async scheduling (`--async-scheduling`, vllm-project/vllm PR #19970, 0.10; on by default
#: from 0.14.0, PR #27614): the scheduler and input preparation for step i+1 run while the GPU runs step
#: i (`AsyncScheduler`: output placeholders for tokens not yet sampled; PR #23569 made the model runner
#: return a device tensor so `prepare_inputs` overlaps too), so the host's per-iteration work is hidden
#: under the GPU step and what remains in series is the gap between one step's CUDA graph and the next.
#: The one published figure for that gap: vLLM PR #11133 (V1 async-scheduling prototype, December 2024),
#: Llama-2-7B at batch 256 with CUDA graphs, "dropped from the original 5-6ms to 150-170us" between two
#: decode steps, with GPU utilisation at 100 %. The midpoint, 160 us, is charged in place of
#: ITERATION_OVERHEAD_S["vllm"]; not fitted to any case.
VLLM_ASYNC_SCHEDULING_GAP_S = 0.16e-3


#: vLLM V1 without async scheduling (0.8 - 0.13 by default, and any release with
#: `--no-async-scheduling` or on ROCm): every step runs its host work in series with the GPU, and most of
#: that work is a Python loop over the scheduled requests: `Scheduler.schedule` (each running request's
#: token budget and KV blocks), the `SchedulerOutput` pickled to every TP worker, the worker's
#: `_update_states` / `_prepare_inputs` (per-request rows of the persistent batch), the sampled ids'
#: `.tolist()`, `Scheduler.update_from_output` (append, stop check, one `EngineCoreOutput` each) and their
#: msgpack serialization to the front end. The one published figure for the whole gap at a stated batch:
#: vLLM issue #10634 (November 2024, on the V1 engine after PR #9826 "[V1] AsyncLLM Implementation"),
#: Llama-2-7B at batch 256 on ShareGPT, "the gap between the two decodes at this time is about 5-6ms (token
#: gap)", read from a profile of the GPU timeline, and PR #11133 by the same author repeats it ("dropped from the
#: original 5-6ms to 150-170us" with async scheduling). The midpoint, 5.5 ms, less the per-iteration
#: overhead already charged to every vLLM iteration (ITERATION_OVERHEAD_S["vllm"], 1.5 ms), is read as
#: per-request work: (5.5 - 1.5) ms / 256 = 15.6 us per scheduled request per step, charged in series
#: (ServingPlan.serial_host_s_per_sequence). One point, so the split into a fixed and a per-request part is
#: an assumption (that the fixed part is what parasim already charges); a prototype-era figure, not
#: re-measured for 0.9-0.13. Not fitted to any case (docs/serving.md, "vLLM V1's host work per request").
VLLM_V1_SYNC_GAP_S = 5.5e-3
VLLM_V1_SYNC_GAP_BATCH = 256
VLLM_V1_SYNC_HOST_S_PER_SEQ = (VLLM_V1_SYNC_GAP_S - ITERATION_OVERHEAD_S["vllm"]) / VLLM_V1_SYNC_GAP_BATCH


#: vLLM before 0.2.7 ran every tensor-parallel rank as a Ray actor and sent each step's inputs by
#: Ray RPC: `LLMEngine._run_workers` calls `execute_model.remote(seq_group_metadata_list, ...)` once
#: per worker, and that list carries every scheduled sequence's `SequenceData` (all its prompt and
#: output token ids), so the driver pickles the whole token history of the batch once per worker,
#: every step, before any worker can start (v0.2.1 llm_engine.py `step` / `_run_workers`;
#: config.py forces `worker_use_ray` when world_size > 1). vLLM PR #2221 ("Use NCCL instead of ray
#: for control-plane communication to remove serialization overhead", merged for 0.2.7) measured
#: the cost on Llama-70B over 8 A100-40G, input 1031, output 317 tokens: 2.48 -> 3.48 requests/s.
#: The time saved per request, 1/2.48 - 1/3.48 = 0.1159 s, is what that request's own history cost
#: over its life: 8 workers x (its 1031-token prompt once + sum over its 317 decode steps of its
#: context 1031 + k), i.e. 8 x (1031 + 317 x 1031 + 316 x 317 / 2) = 8 x 377,981 token-sends:
#: 38 ns per token per worker (pickling a list of Python ints, shipping it through Ray's object
#: store, unpickling it on the worker). Derived from that A/B measurement of this one effect.
RAY_CONTROL_S_PER_TOKEN = (1 / 2.48 - 1 / 3.48) / (8 * (1031 + 317 * 1031 + 316 * 317 / 2))


#: TensorRT-LLM's PyTorch backend (trtllm-bench from v0.19, the default flow from 1.0) drives every
#: iteration from a Python executor (PyExecutor: scheduling, resource bookkeeping, input preparation,
#: the sampler's per-request token updates, responses), so its host work grows with the scheduled
#: requests. Its overlap scheduler (on by default) runs that work for step i+1 while the GPU runs step
#: i, so an iteration lasts about max(GPU time, host time). The one published per-iteration host
#: figure at a stated large batch: TensorRT-LLM PR #10273 (2025-12, the Python capacity / micro-batch
#: scheduler A/B), GPT-OSS-120B on GB200, attention DP 2 with max_batch_size 1536 at concurrency 3,072
#: (1,536 requests per rank), ISL/OSL 1k/1k: "average per iteration host_step_time is 45.11 ms" with
#: the C++ scheduler, a run the PR presents as one where host overhead is the bottleneck.
#: host_step_time is PyExecutor's own log of one executor-loop iteration (py_executor.py
#: `_profiler`), so 45.11 ms / 1,536 = 29 us per scheduled
#: request per iteration, the fixed per-iteration part included (an upper bound per request). It is a
#: Grace (Arm Neoverse V2) host's figure; no x86-host figure was found, so only Grace-hosted parts
#: (GB200, GH200: `grace_hosted`) take it. Later releases trimmed this path (PRs #16047, #16313,
#: #16564), so for v1.0 it is, if anything, low. A search for an x86 figure (2026-12-07) found no
#: host_step_time at stated batches on an x86 host; docs/serving.md lists the closest hits.
TRTLLM_PYEXECUTOR_GRACE_S_PER_SEQ = 45.11e-3 / 1536


def grace_hosted(form_factor: str) -> bool:
    """Whether the part's host CPU is a Grace (a Grace superchip: GH200, GB200), from the catalog's
    form factor."""
    return "grace" in form_factor.lower()
