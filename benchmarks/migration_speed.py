"""Live migration's cost in simulator time (`serve --migration llumnix`, serving/migration.py).

20,000 requests, Llama-3-8B on four A100-40GB replicas behind `least_kv` (the event loop either
way), lognormal prompts (mean ~1,000) and Pareto outputs, at 14 and 20 requests/s (the second
overloaded: queues of hundreds per replica, which the policy reads every 50 ms). CPU time of the
simulation without and with migration, best of 3. Without it the loop is the one of before
migration existed; with it, each pairing reads every engine's queue once.

Run: `.venv/bin/python benchmarks/migration_speed.py`.
"""

from __future__ import annotations

import time

import numpy as np

from parasim.serving import ServingPlan, Workload, simulate
from parasim.specs.catalog import cluster_for, get_accelerator, get_model


def workload(n: int, rate: float, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    prompt = np.clip(rng.lognormal(np.log(1000), 0.6, n), 16, 6000).astype(int)
    output = np.clip(rng.pareto(1.2, n) * 200 + 10, 4, 6000).astype(int)
    return Workload.from_columns(arrival, prompt, output)


def cpu_s(plan: ServingPlan, wl: Workload, cluster) -> tuple[float, dict]:
    best, s = float("inf"), {}
    for _ in range(3):
        t0 = time.process_time()
        s = simulate(get_model("llama-3-8b"), cluster, plan, wl).summary
        best = min(best, time.process_time() - t0)
    return best, s


if __name__ == "__main__":
    cluster = cluster_for(get_accelerator("a100-sxm-40gb"), 4)
    for rate in (14.0, 20.0):
        wl = workload(20_000, rate)
        off, s_off = cpu_s(ServingPlan(replicas=4, router="least_kv"), wl, cluster)
        on, s_on = cpu_s(ServingPlan(replicas=4, router="least_kv", migration="llumnix"), wl, cluster)
        print(f"{rate:g} req/s: off {off:.2f} s ({s_off['preemptions']} preemptions), on {on:.2f} s "
              f"({s_on['preemptions']} preemptions, {s_on['migration']['migrations']} migrations)")
