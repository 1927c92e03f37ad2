"""The share of a serving run's busy GPU time that was compute-saturated (cost.energy's split of
board power between compute-bound and memory-bound work).

Per run, from summed work, not per iteration: the FLOPs the completed requests needed (2 x the
matmul weights per token for each prompt token and each decode token, plus prefill attention's
query-key pairs, causal) at the part's sustained GEMM and attention rates is the GPU time the
tensor cores were saturated; the rest of the busy time is memory-bound weight and KV reads,
communication and host waits, all charged the part's streaming power. Prefix-cache hits count as
computed (the share errs high); recompute after preemption, speculative draft and rejected tokens
and requests left unfinished are not counted (it errs low).
"""

from __future__ import annotations

import numpy as np

from parasim.cost.dtypes import attention_dtype
from parasim.serving.itercost import IterationCost


def compute_gpu_s(cost: IterationCost, prompt_tokens: np.ndarray, output_tokens: np.ndarray) -> float:
    """GPU-seconds of compute-saturated work for requests with these prompt and output lengths
    (summed over every GPU of the replica: the FLOPs are split among them)."""
    if prompt_tokens.size == 0:
        return 0.0
    p = prompt_tokens.astype(np.float64)
    tokens = float(p.sum()) + float(np.maximum(output_tokens.astype(np.float64) - 1.0, 0.0).sum())
    pairs = float((p * (p + 1.0) * 0.5).sum())
    m, l, acc = cost.model, cost.layer, cost.cluster.accelerator
    gemm_flops = 2.0 * m.matmul_params_active * tokens
    attn_flops = 2.0 * m.heads * (m.qk_head_dim + m.v_head_dim) * m.layers * pairs
    adt = attention_dtype(l.adt)
    return (gemm_flops / (acc.sustained_peak(l.cdt) * acc.gemm_efficiency(l.cdt))
            + attn_flops / (acc.sustained_peak(adt) * acc.efficiency.attention))


def compute_share(cost: IterationCost, prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                  busy_gpu_s: float) -> float:
    """The compute-saturated fraction of `busy_gpu_s` (0..1); 1.0 when the part has no
    memory-bound power figure (then the split changes nothing and is not computed)."""
    if cost.cluster.accelerator.memory_bound_power_fraction >= 1.0 or busy_gpu_s <= 0:
        return 1.0
    return min(compute_gpu_s(cost, prompt_tokens, output_tokens) / busy_gpu_s, 1.0)
