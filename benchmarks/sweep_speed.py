"""Load-sweep speed: `serve --sweep-rate 10:60:6` on Llama-3-8B / one H100 (sarathi, 1,000 and
10,000 requests of 512 + 128 tokens, TTFT 1 s / TPOT 50 ms SLOs), in process, on 1 and 2 worker
processes: wall time of the sweep (6 rates + the burst run), and the same JSON either way.

Run: `.venv/bin/python benchmarks/sweep_speed.py`.
"""

from __future__ import annotations

import json
import time

from parasim.search.sweep import SweepContext, sweep, sweep_rates
from parasim.serving.metrics import SLO
from parasim.serving.plan import ServingPlan
from parasim.specs.catalog import cluster_for, get_accelerator, get_model


def main() -> None:
    model, acc = get_model("llama-3-8b"), get_accelerator("h100-sxm")
    plan = ServingPlan.from_mapping({"scheduler": "sarathi"})
    for n in (1000, 10_000):
        ctx = SweepContext(model=model, cluster=cluster_for(acc, 1), plan=plan, slo=SLO(ttft_s=1.0, tpot_s=0.05),
                           seed=0, generate_kw={"requests": n, "prompt_tokens": 512, "output_tokens": 128},
                           max_concurrency=None)
        texts = []
        for workers in (1, 2):
            t0 = time.perf_counter()
            res = sweep(ctx, sweep_rates(10, 60, 6), workers=workers)
            dt = time.perf_counter() - t0
            texts.append(json.dumps(res["points"], sort_keys=True, default=str))
            print(f"{n:>6} requests x 7 runs, -j {workers}: {dt:.2f} s (knee {res['knee']['rate_requests_per_s']} req/s)")
        print(f"        -j 1 and -j 2 points identical: {texts[0] == texts[1]}")


if __name__ == "__main__":
    main()
