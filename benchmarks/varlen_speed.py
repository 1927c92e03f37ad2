"""What variable-length balancing adds to one simulated step: Llama-3.1-405B on 16,384 H100s with
long-tailed documents (lognormal, median 2K tokens, sigma 1.5), each strategy of --varlen-balance.
The balancing runs once per plan over the step's document pieces (2,048 sequences of 8K here);
a strategy other than static also simulates static packing for `speedup_vs_static`."""

from __future__ import annotations

import statistics
import timeit

from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan, simulate
from parasim.training.varlen_balance import STRATEGIES


def main() -> None:
    model = get_model("llama-3.1-405b")
    cluster = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=16384)
    base = TrainingPlan(tp=8, pp=16, dp=64, cp=2, virtual_stages=2, schedule="interleaved", sequence_parallel=True,
                        micro_batch=1, global_batch=2048, seq_len=8192, recompute="none", zero=1, precision="bf16",
                        seq_len_dist="lognormal:median=2000,sigma=1.5")
    for name in STRATEGIES.names():
        plan = base.with_(varlen_balance=name)
        res = simulate(model, cluster, plan)  # also warms the caches
        median_s = statistics.median(timeit.repeat(lambda: simulate(model, cluster, plan), number=1, repeat=5))
        gain = res.varlen.get("speedup_vs_static", 1.0)
        print(f"{name:10s} step {res.step_time_s:.3f} s ({gain:.3f}x static); simulated in "
              f"{1e3 * median_s:.0f} ms (median of 5)")


if __name__ == "__main__":
    main()
