"""Serving simulator speed and memory.

1. 10,000 requests, Llama-3-8B on one H100 (bf16), `sarathi`, Poisson arrivals at about 80 % of
   the plan's capacity (found first with a burst run: saturated request throughput), prompts and
   outputs drawn ShareGPT-like (prompt mean ~ 1,000, output mean ~ 250): simulation wall and CPU
   time (best of 3). Target: < 0.5 s.
2. The same 10,000 requests with options on: the prefix cache (half the requests share one of 50
   system prompts of 300 tokens), speculative decoding (n-gram, K = 4, acceptance 0.7), and four
   replicas behind the round-robin and the least-outstanding-tokens routers (four times the rate).
3. 1,000,000 requests of the same workload (same rate) in a fresh process: wall and CPU time of
   the simulation, and peak resident memory, for the Python engine (`PARASIM_FASTPATH=0`), the
   compiled loop (serving.fastloop) compiling into an empty numba cache, and the compiled loop
   with its cache (the case the targets are for). Targets: < 5 s, < 1 GiB.
4. What the compiled loop costs before it runs (fresh process, cached): importing numba and the
   module, and a 100-request run that loads the kernel (the reason for
   `simulate.FAST_PATH_MIN_REQUESTS`).

`--no-runs` turns the decode runs off (engine.Instance.decode_run: every iteration decided and
applied one by one) for the before/after figures; the results are the same either way.

Run: `.venv/bin/python benchmarks/serve_speed.py [--no-runs]` (prints every figure).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from parasim.serving import ServingPlan, Workload, simulate
from parasim.serving.engine import Instance
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

MODEL, GPU = "llama-3-8b", "h100-sxm"


def workload(n: int, rate: float | None, seed: int = 0, prefixes: bool = False) -> Workload:
    rng = np.random.default_rng(seed)
    prompt = np.clip(rng.lognormal(np.log(700), 0.8, n), 16, 7000).astype(np.int64)
    output = np.clip(rng.lognormal(np.log(180), 0.8, n), 4, 1500).astype(np.int64)
    if rate is None:
        arrival = np.zeros(n)
    else:
        gaps = rng.exponential(1.0 / rate, n)
        arrival = np.cumsum(gaps) - gaps[0]
    if not prefixes:
        return Workload.from_columns(arrival, prompt, output)
    pid = np.where(rng.random(n) < 0.5, rng.integers(0, 50, n), -1)
    return Workload.from_columns(arrival, prompt, output, pid, np.where(pid >= 0, np.minimum(300, prompt - 1), 0))


def setup(gpus: int = 1, **plan):
    model = get_model(MODEL)
    cluster = ClusterSpec(accelerator=get_accelerator(GPU), gpus=gpus)
    return model, cluster, ServingPlan(**({"scheduler": "sarathi"} | plan))


def timed(model, cluster, plan, wl, repeat: int = 3):
    """(best wall s, best CPU s, result) of simulating `wl`."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        res = simulate(model, cluster, plan, wl)
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu, res


def speed() -> float:
    model, cluster, plan = setup()
    burst = simulate(model, cluster, plan, workload(2000, None))
    rate = 0.8 * burst.summary["requests_per_s"]
    wl = workload(10_000, rate)
    simulate(model, cluster, plan, wl.head(200))  # warm imports and caches
    wall, cpu, res = timed(model, cluster, plan, wl)
    s = res.summary
    print(f"10,000 requests at {rate:.2f} req/s (80 % of {burst.summary['requests_per_s']:.2f}): "
          f"{s['iterations']:,} iterations, TTFT p50 {s['ttft_p50_s'] * 1e3:.0f} ms, TPOT p50 {s['tpot_p50_s'] * 1e3:.1f} ms")
    print(f"simulation: {wall:.3f} s wall, {cpu:.3f} s CPU (best of 3; target < 0.5 s)")
    return rate


def options(rate: float) -> None:
    """The same 10,000 requests with the prefix cache, speculative decoding, or four replicas."""
    cases = [("prefix cache", setup(prefix_cache=True), workload(10_000, rate, prefixes=True)),
             ("speculative ngram K=4 a=0.7", setup(spec_method="ngram", num_speculative_tokens=4, spec_acceptance=0.7),
              workload(10_000, rate)),
             ("4 replicas, round robin", setup(4, replicas=4), workload(10_000, 4 * rate)),
             ("4 replicas, least outstanding tokens", setup(4, replicas=4, router="least_outstanding_tokens"),
              workload(10_000, 4 * rate))]
    for label, (model, cluster, plan), wl in cases:
        wall, cpu, res = timed(model, cluster, plan, wl)
        print(f"  {label}: {wall:.3f} s wall, {cpu:.3f} s CPU ({res.summary['iterations']:,} iterations)")


def million(rate: float) -> None:
    model, cluster, plan = setup()
    wl = workload(1_000_000, rate)
    w0, c0 = time.perf_counter(), time.process_time()
    res = simulate(model, cluster, plan, wl)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    path = {"0": "Python engine", "1": "compiled loop"}.get(os.environ.get("PARASIM_FASTPATH", "auto"), "auto")
    print(f"1,000,000 requests (fresh process, {path}{os.environ.get('FASTLOOP_LABEL', '')}): completed "
          f"{res.summary['completed']:,}, {res.summary['iterations']:,} iterations in {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU (target < 5 s); peak RSS {rss / 2**30:.3f} GiB (target < 1 GiB)")


def load_time() -> None:
    """What the compiled loop costs before it saves anything (fresh process, kernel cached):
    importing numba and the module, and loading the cached kernel on a 100-request run."""
    model, cluster, plan = setup()
    wl = workload(100, 10.0)
    w0, c0 = time.perf_counter(), time.process_time()
    from parasim.serving import fastloop  # noqa: F401 - the import is what is timed
    w1, c1 = time.perf_counter(), time.process_time()
    simulate(model, cluster, plan, wl)
    w2, c2 = time.perf_counter(), time.process_time()
    print(f"compiled loop, fresh process: import {w1 - w0:.2f} s wall ({c1 - c0:.2f} s CPU), "
          f"first 100-request run (kernel load) {w2 - w1:.2f} s wall ({c2 - c1:.2f} s CPU)")


def millions(rate: float, args: list[str]) -> None:
    """The 1M run in fresh processes: the Python engine, then the compiled loop compiling into an
    empty cache (first run), then loading it (cached), then the load time alone."""
    with tempfile.TemporaryDirectory() as cache:
        env = os.environ | {"NUMBA_CACHE_DIR": cache}
        runs = [("0", ""), ("1", ", first run: compiles"), ("1", ", cached")]
        for mode, label in runs:
            subprocess.run([sys.executable, __file__, "--million", repr(rate), *args], check=True,
                           env=env | {"PARASIM_FASTPATH": mode, "FASTLOOP_LABEL": label})
        subprocess.run([sys.executable, __file__, "--load"], check=True, env=env | {"PARASIM_FASTPATH": "1"})


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--no-runs" in args:  # every iteration stepped one by one (the figures before decode runs)
        Instance.decode_run = lambda self, t, until_s, done_cb, end_by_s=None: t
    if args and args[0] == "--million":
        million(float(args[1]))
    elif args and args[0] == "--load":
        load_time()
    else:
        os.environ["PARASIM_FASTPATH"] = "0"  # the 10k figures are the Python engine's (auto takes it below 500k)
        r = speed()
        options(r)
        millions(r, args)
