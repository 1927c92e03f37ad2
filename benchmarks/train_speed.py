"""How long one simulated training step takes: Llama-3.1-405B on 16,384 H100s (target <= 50 ms),
and the same layout under the zero-bubble schedules ZB-V and DualPipe (target < 10 ms; #20)."""

from __future__ import annotations

import time

from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan, simulate
from parasim.training.goodput import Reliability, estimate


def _median_ms(model, cluster, plan) -> tuple[float, float, object]:
    """(median, worst) ms of 20 simulations after one that warms the caches, and the result."""
    simulate(model, cluster, plan)
    runs = []
    for _ in range(20):
        t0 = time.perf_counter()
        res = simulate(model, cluster, plan)
        runs.append(time.perf_counter() - t0)
    runs.sort()
    return 1e3 * runs[len(runs) // 2], 1e3 * runs[-1], res


def zero_bubble() -> None:
    model = get_model("llama-3.1-405b")
    cluster = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=16384)
    # DualPipe needs at least 2*pp micro-batches per pipeline: 32 at pp 16, so 4096 sequences over dp 128
    for name, batch in (("zb-v", 2048), ("dualpipe", 4096)):
        plan = TrainingPlan(tp=8, pp=16, dp=128, virtual_stages=2, schedule=name, sequence_parallel=True,
                            micro_batch=1, global_batch=batch, seq_len=8192, recompute="none", zero=1, precision="bf16")
        med, worst, res = _median_ms(model, cluster, plan)
        print(f"405B on 16,384 H100 (tp8 pp16 dp128, {name}, {batch} x 8192 tokens): step {res.step_time_s:.2f} s, "
              f"MFU {100 * res.mfu:.1f} %; "
              f"simulated in {med:.1f} ms (median of 20), {worst:.1f} ms worst")


def main() -> None:
    model = get_model("llama-3.1-405b")
    cluster = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=16384)
    # Llama 3 paper's 16K-GPU layout: TP 8, PP 16, DP 128, 16M-token batches of 8K sequences, interleaved
    # 1F1B over uneven chunks (126 layers; v = 2 assumed, the paper does not state it)
    plan = TrainingPlan(tp=8, pp=16, dp=128, virtual_stages=2, schedule="interleaved", sequence_parallel=True,
                        micro_batch=1, global_batch=2048, seq_len=8192, recompute="none", zero=1, precision="bf16")
    med, worst, res = _median_ms(model, cluster, plan)
    print(f"405B on 16,384 H100 (tp8 pp16 v2 dp128, 2048 x 8192 tokens): step {res.step_time_s:.2f} s, "
          f"MFU {100 * res.mfu:.1f} %; simulated in {med:.1f} ms (median of 20), {worst:.1f} ms worst")
    # the goodput of that step (training/goodput.py): what `train` and every `plan train` plan add
    rel = Reliability.from_options({})
    good = []
    for _ in range(200):
        t0 = time.perf_counter()
        est = estimate(model, gpus=cluster.gpus, gpus_per_node=cluster.gpus_per_node, step_time_s=res.step_time_s, r=rel)
        good.append(time.perf_counter() - t0)
    good.sort()
    print(f"goodput {100 * est.goodput_fraction:.1f} % (checkpoint every {est.checkpoint_interval_steps} steps) "
          f"estimated in {1e6 * good[len(good) // 2]:.0f} us (median of 200)")


if __name__ == "__main__":
    main()
    zero_bubble()
