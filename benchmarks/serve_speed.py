"""Serving simulator speed and memory.

1. 10,000 requests, Llama-3-8B on one H100 (bf16), `sarathi`, Poisson arrivals at about 80 % of
   the plan's capacity (found first with a burst run: saturated request throughput), prompts and
   outputs drawn ShareGPT-like (prompt mean ~ 1,000, output mean ~ 250): simulation wall time.
   Target: <= 1.0 s.
2. 1,000,000 requests of the same workload (same rate): peak resident memory of a fresh process.
   Target: <= 1 GiB.

Run: `.venv/bin/python benchmarks/serve_speed.py` (prints both figures).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import numpy as np

from parasim.serving import ServingPlan, Workload, simulate
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

MODEL, GPU = "llama-3-8b", "h100-sxm"


def workload(n: int, rate: float | None, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    prompt = np.clip(rng.lognormal(np.log(700), 0.8, n), 16, 7000).astype(np.int64)
    output = np.clip(rng.lognormal(np.log(180), 0.8, n), 4, 1500).astype(np.int64)
    if rate is None:
        arrival = np.zeros(n)
    else:
        gaps = rng.exponential(1.0 / rate, n)
        arrival = np.cumsum(gaps) - gaps[0]
    return Workload.from_columns(arrival, prompt, output)


def setup():
    model = get_model(MODEL)
    cluster = ClusterSpec(accelerator=get_accelerator(GPU), gpus=1)
    return model, cluster, ServingPlan(scheduler="sarathi")


def speed() -> float:
    model, cluster, plan = setup()
    burst = simulate(model, cluster, plan, workload(2000, None))
    rate = 0.8 * burst.summary["requests_per_s"]
    wl = workload(10_000, rate)
    simulate(model, cluster, plan, wl.head(200))  # warm imports and caches
    t0 = time.perf_counter()
    res = simulate(model, cluster, plan, wl)
    wall = time.perf_counter() - t0
    s = res.summary
    print(f"10,000 requests at {rate:.2f} req/s (80 % of {burst.summary['requests_per_s']:.2f}): "
          f"{s['iterations']:,} iterations, TTFT p50 {s['ttft_p50_s'] * 1e3:.0f} ms, TPOT p50 {s['tpot_p50_s'] * 1e3:.1f} ms")
    print(f"simulation wall time: {wall:.3f} s (target <= 1.0 s)")
    return rate


def memory(rate: float) -> None:
    model, cluster, plan = setup()
    wl = workload(1_000_000, rate)
    t0 = time.perf_counter()
    res = simulate(model, cluster, plan, wl)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(f"1,000,000 requests: completed {res.summary['completed']:,} in {wall:.1f} s wall; "
          f"peak RSS {rss / 2**30:.3f} GiB (target <= 1 GiB)")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--memory":
        memory(float(sys.argv[2]))
    else:
        r = speed()
        subprocess.run([sys.executable, __file__, "--memory", repr(r)], check=True)
