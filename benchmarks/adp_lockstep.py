"""Attention-DP lockstep (serving.lockstep) on TensorRT-LLM tech blog 10's setting, and what it costs the simulator.

Blog 10 ("ADP Balance Strategy", NVIDIA/TensorRT-LLM docs/source/blogs/tech_blog/): DeepSeek-V3 on 8
GB200 with attention DP 8 and EP 8, 16,000 requests of mean 803 input and 3,653 output tokens
(long-tailed), round-robin baseline: 25,664 tokens/s against a balanced ("SOL") 39,552, i.e. the
elapsed time is 0.65 of what it would be balanced, mean balance ratio (mean / max tokens over the
ranks) 54 %. The blog does not give the precision, batch cap or token budget: here FP8 weights, 256
requests per rank, whole prompts (`continuous`, 8,192-token budget), lognormal lengths with those
means, all sent at once. Prints the run in lockstep and as independent replicas (the model before
lockstep): throughput, the balance ratio and blog 10's SOL fraction, and each run's wall time.

Run: `.venv/bin/python benchmarks/adp_lockstep.py [requests]`.
"""

from __future__ import annotations

import importlib
import sys
import time

from parasim.serving import ServingPlan, simulate
from parasim.serving.workload import generate
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

SIM = importlib.import_module("parasim.serving.simulate")


def main(requests: int = 16_000) -> None:
    model = get_model("deepseek-v3")
    cluster = ClusterSpec(accelerator=get_accelerator("gb200"), gpus=8, gpus_per_node=8)
    wl = generate(requests=requests, burst=True, prompt_tokens=803, output_tokens=3653, length_dist="lognormal", seed=1)
    plan = ServingPlan(tp=1, replicas=8, ep=8, weights="fp8", scheduler="continuous", max_batch=256, token_budget=8192)
    for lockstep in (True, False):
        SIM.ADP_LOCKSTEP = lockstep
        t0 = time.perf_counter()
        s = simulate(model, cluster, plan, wl).summary
        wall = time.perf_counter() - t0
        lk = s.get("lockstep") or {}
        extra = (f", balance ratio {lk['balance_ratio_mean']:.2f}, SOL fraction {lk['balanced_time_fraction']:.2f}, "
                 f"{100 * lk['wait_fraction']:.1f} % of rank time waiting, {lk['group_iterations']} group iterations"
                 if lk else "")
        print(f"{'lockstep' if lockstep else 'independent':>11}: {s['output_tokens_per_s']:,.0f} output tokens/s{extra}; "
              f"wall {wall:.1f} s")
    SIM.ADP_LOCKSTEP = True


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 16_000)
