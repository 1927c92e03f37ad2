"""MoE training under Megatron-Core's folded layout: one simulated step of DeepSeek-V3 and of the
folded Qwen3-235B H100 run, and `plan train` over ep x etp for Qwen3-30B-A3B on 64 H100s."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import timeit

from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from parasim.training import TrainingPlan, simulate


def _step_ms(model_name: str, gpus: int, plan: TrainingPlan) -> tuple[float, float]:
    """(simulated step seconds, median wall milliseconds of 10 simulations after a warm-up)."""
    model, cluster = get_model(model_name), cluster_for(get_accelerator("h100-sxm"), gpus)
    step = simulate(model, cluster, plan).step_time_s
    walls = timeit.repeat(lambda: simulate(model, cluster, plan), number=1, repeat=10)
    return step, 1e3 * statistics.median(walls)


def main() -> None:
    dsv3 = TrainingPlan(tp=2, pp=8, dp=64, ep=64, etp=1, virtual_stages=4, schedule="interleaved",
                        sequence_parallel=True, micro_batch=1, global_batch=8192, seq_len=4096, precision="fp8",
                        moe_a2a="deepep", moe_a2a_overlap=True)
    step, ms = _step_ms("deepseek-v3", 1024, dsv3)
    print(f"DeepSeek-V3 on 1,024 H100 (tp2 pp8 v4 ep64 etp1, 8192 x 4096, DeepEP): step {step:.2f} s; "
          f"simulated in {ms:.1f} ms (median of 10)")
    qwen = TrainingPlan(tp=2, pp=8, dp=16, ep=32, etp=1, virtual_stages=4, schedule="interleaved",
                        sequence_parallel=True, micro_batch=1, global_batch=2048, seq_len=4096, precision="fp8")
    step, ms = _step_ms("qwen3-235b-a22b", 256, qwen)
    print(f"Qwen3-235B on 256 H100 (tp2 pp8 v4 ep32 over dp16, folded): step {step:.2f} s; simulated in {ms:.1f} ms")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "parasim", "plan", "train", "--model", "qwen3-30b-a3b", "--gpu", "h100-sxm",
                        "--gpus", "64", "--global-batch", "512", "--seq-len", "4096", "--workers", "2", "--json"],
                       capture_output=True, text=True)
    print(f"plan train qwen3-30b-a3b on 64 H100 (ep x etp searched): exit {r.returncode}, "
          f"{time.perf_counter() - t0:.1f} s wall with 2 workers (process start included)")


if __name__ == "__main__":
    main()
