"""`serve --overlap nanoflow`: what the nano-batch schedule costs the simulator.

10,000 requests of serve_speed.py's workload (Llama-3-8B on one H100, `sarathi`, ShareGPT-like
lengths, Poisson at 80 % of the plain plan's saturated rate), simulated with `--overlap none` and
with `--overlap nanoflow` (default 4 nano-batches): wall time of each (best of 3) and the
throughput each predicts. The nanoflow iteration evaluates the sequential schedule and one
overlapped schedule per nano-batch count (2 .. 4), their per-token-count parts cached.

Run: `.venv/bin/python benchmarks/overlap_speed.py`.
"""

from __future__ import annotations

import time

from serve_speed import setup, workload

from parasim.serving import simulate


def main() -> None:
    model, cluster, plan = setup()
    burst = simulate(model, cluster, plan, workload(2000, None))
    rate = 0.8 * burst.summary["requests_per_s"]
    wl = workload(10_000, rate)
    for overlap in ("none", "nanoflow"):
        p = plan.with_(overlap=overlap)
        simulate(model, cluster, p, wl.head(200))  # warm imports
        best, res = float("inf"), None
        for _ in range(3):
            t0 = time.perf_counter()
            res = simulate(model, cluster, p, wl)
            best = min(best, time.perf_counter() - t0)
        s = res.summary
        print(f"--overlap {overlap:8s}: {best:.3f} s wall for 10,000 requests ({s['iterations']:,} iterations); "
              f"{s['total_tokens_per_s']:,.0f} tokens/s, TPOT p50 {s['tpot_p50_s'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
