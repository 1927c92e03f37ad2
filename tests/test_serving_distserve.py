"""DistServe's motivating example (Zhong et al., OSDI'24, section 2.2 and Fig. 2): a 13B model on
A100-80GB GPUs, every request 512 prompt and 64 output tokens, SLOs P90 TTFT 0.4 s and P90 TPOT
0.04 s. Colocated, one GPU serves about 1.6 requests/s within both SLOs; two prefill GPUs and one
decode GPU serve about 10 requests/s, 3.3 per GPU: 2.1x the goodput per GPU. The tight TPOT is the
point: a colocated engine's decode steps carry prefill work and stretch past 40 ms, so the SLO caps
its rate well below what its GPU can do, while a decode-only pool runs short steps.

parasim's absolute rates are higher than the paper's (its colocated 1.6 requests/s is about a third
of what the roofline gives a 13B model on an A100); the test checks the direction and the rough size
of the per-GPU ratio, each side from the same physics (docs/serving.md, Disaggregation)."""

from __future__ import annotations

import numpy as np

from parasim.search.capacity import capacity
from parasim.serving.plan import ServingPlan
from parasim.specs.catalog import default_cluster, get_model

SLO = {"ttft_s": 0.4, "tpot_s": 0.04}
N = 400


def per_gpu_capacity(plan: ServingPlan, gpus: int, slo: dict = SLO) -> float:
    model = get_model("opt-13b")
    lengths = (np.full(N, 512), np.full(N, 64))
    res = capacity(model, default_cluster("a100-sxm-80gb", gpus), plan, slo=slo, attainment=0.9, requests=N,
                   lengths=lengths)
    return res.requests_per_s / gpus


def test_disaggregation_beats_colocation_per_gpu_under_a_tight_tpot():
    colocated = per_gpu_capacity(ServingPlan(scheduler="vllm"), 1)
    two_p_one_d = per_gpu_capacity(ServingPlan(scheduler="disagg", prefill_gpus=2, decode_gpus=1), 3)
    assert colocated > 0
    ratio = two_p_one_d / colocated
    # the paper's 2.1x; ours from the same physics on both sides, not fitted
    assert 1.4 < ratio < 3.0, ratio


def test_the_tpot_slo_is_what_colocation_loses_to():
    """With the TPOT SLO loosened to 0.1 s (DistServe's chatbot SLO) the colocated engine's per-GPU
    capacity rises: the tight TPOT, which prefill work inside decode steps breaks, is what binds it."""
    tight = per_gpu_capacity(ServingPlan(scheduler="vllm"), 1)
    loose = per_gpu_capacity(ServingPlan(scheduler="vllm"), 1, {"ttft_s": 0.4, "tpot_s": 0.1})
    assert loose > 1.2 * tight
