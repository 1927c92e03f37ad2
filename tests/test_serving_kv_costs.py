"""The KV costs the serving simulator takes from cost/: the disaggregated KV transfer and the
KV pool a replica's GPUs hold, each worked by hand from the catalog's numbers."""

from __future__ import annotations

import pytest

from parasim.cost.comm import kv_link
from parasim.cost.memory import kv_budget, weight_bytes_per_gpu
from parasim.serving import ServingPlan, Workload, simulate
from parasim.serving.itercost import IterationCost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from tests.conftest import DOCUMENTED_RUNTIME_RESERVE_BYTES

LLAMA = get_model("llama-3-8b")
H100 = get_accelerator("h100-sxm")
# Llama-3-8B caches K and V for 8 KV heads of 128 in each of 32 layers: 131,072 bytes per token in bf16
KV_BYTES_PER_TOKEN = 32 * 2 * 8 * 128 * 2


def test_kv_transfer_time_by_hand():
    """Inside a node the KV goes over NVLink, each of the `lanes` GPU pairs at the achievable bus
    bandwidth; across nodes over the NICs, with their latency."""
    cl = ClusterSpec(accelerator=H100, gpus=16)
    size = 1000 * KV_BYTES_PER_TOKEN
    nv = H100.link_bw_bytes_per_s * H100.efficiency.nvlink_busbw * 2
    assert kv_link(cl, lanes=2, same_node=True).time_s(size) == pytest.approx(
        size / nv + H100.efficiency.nvlink_latency_s, rel=1e-12)
    nic = cl.nic_bw_bytes_per_s_per_gpu * H100.efficiency.network_busbw
    assert kv_link(cl, lanes=1, same_node=False).time_s(size) == pytest.approx(
        size / nic + H100.efficiency.network_latency_s, rel=1e-12)


def test_disaggregated_request_pays_the_transfer_between_its_first_and_second_token():
    """One request, two output tokens, prefill and decode pools of one GPU each in one node: the
    first token ends the prefill; the second comes after the KV of the prompt has crossed NVLink
    and one decode step of one sequence (the prompt and the first token as context) has run."""
    prompt = 1000
    cl = ClusterSpec(accelerator=H100, gpus=2)
    plan = ServingPlan(scheduler="disagg", prefill_gpus=1, decode_gpus=1)
    res = simulate(LLAMA, cl, plan, Workload.from_columns([0.0], [prompt], [2]))
    transfer = prompt * KV_BYTES_PER_TOKEN / (H100.link_bw_bytes_per_s * H100.efficiency.nvlink_busbw) \
        + H100.efficiency.nvlink_latency_s
    step = IterationCost.for_plan(LLAMA, cl, plan).time_s(1, 0.0, 0.0, 1, prompt + 1.0, 1)
    gap = res.requests["finish_s"][0] - res.requests["first_token_s"][0]
    assert gap == pytest.approx(transfer + step, rel=1e-9)


def test_kv_pool_blocks_by_hand():
    """80 GiB x 0.9, less the bf16 weights, the activation workspace of 512 tokens (residual, norm
    input, Q, K, V, attention output, gate/up/product: 2h + (2q + 2kv)/tp + 3 ffn/tp values per
    token) plus 256 fp32 logit rows, and the 1 GB runtime reserve, in 16-token blocks."""
    b = kv_budget(LLAMA, H100, tp=1, pp=1, weights="bf16", kv_dtype="bf16", block_size=16,
                  gpu_memory_utilization=0.9, max_tokens=512, max_batch=256)
    m = LLAMA
    act = 512 * (2 * m.hidden + 2 * m.q_dim + 2 * 8 * 128 + 3 * m.ffn_hidden) * 2 + 256 * m.vocab * 4
    kv = H100.device_memory_bytes * 0.9 - weight_bytes_per_gpu(m, weights="bf16") - act - DOCUMENTED_RUNTIME_RESERVE_BYTES
    assert b.activations == pytest.approx(act, rel=1e-12)
    assert b.kv_bytes_per_token == KV_BYTES_PER_TOKEN
    assert b.blocks == int(kv // (16 * KV_BYTES_PER_TOKEN))
    assert b.tokens == 16 * b.blocks
    # TP 2 halves the KV heads (and the weights), PP 2 the layers of the most loaded stage
    assert kv_budget(LLAMA, H100, tp=2, pp=2, weights="bf16", kv_dtype="bf16", block_size=16,
                     gpu_memory_utilization=0.9, max_tokens=512, max_batch=256).kv_bytes_per_token \
        == KV_BYTES_PER_TOKEN // 4
