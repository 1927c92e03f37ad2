"""What `train --timeline` adds to a run, at the README example's size (Llama-3-70B on 64 H100s,
tp 8, pp 2, global batch 128 of 8192 tokens: 32 micro-batches). The target (< 20 % more wall
time) is on the command as a user runs it: `parasim train ... --json-out` with and without
`--timeline`, each a fresh process. In process, the simulation alone is a fraction of a
millisecond, so the recording's and the trace's own costs are printed as well."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parasim.report.train_trace import dumps
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from parasim.training import TrainingPlan, simulate

RUNS = 30
CLI_RUNS = 7
README = ["train", "--model", "llama-3-70b", "--gpu", "h100-sxm", "--gpus", "64", "--tp", "8", "--pp", "2",
          "--global-batch", "128", "--seq-len", "8192"]


def _median(fn, runs: int = RUNS) -> float:
    fn()  # warm caches once
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[runs // 2]


def _cli_median(extra: list[str]) -> float:
    def run() -> None:
        subprocess.run([sys.executable, "-m", "parasim", *README, *extra], check=True, capture_output=True)

    return _median(run, CLI_RUNS)


def main() -> None:
    model = get_model("llama-3-70b")
    cluster = cluster_for(get_accelerator("h100-sxm"), 64)
    plan = TrainingPlan(tp=8, pp=2, dp=4, sequence_parallel=True, micro_batch=1, global_batch=128, seq_len=8192)
    out = Path(tempfile.mkdtemp()) / "step.json"

    def traced() -> None:
        res = simulate(model, cluster, plan, timeline=True)
        out.write_text(dumps({"command": "train", **res.to_dict()}))

    plain = _median(lambda: simulate(model, cluster, plan))
    recorded = _median(lambda: simulate(model, cluster, plan, timeline=True))
    written = _median(traced)
    print(f"README train example (70B, 64 x H100, tp8 pp2 dp4, 32 micro-batches), median of {RUNS}:")
    print(f"  simulate                     {1e3 * plain:7.2f} ms")
    print(f"  simulate + record timeline   {1e3 * recorded:7.2f} ms  ({recorded / plain:.3f}x)")
    print(f"  ... + write the trace file   {1e3 * written:7.2f} ms  ({written / plain:.3f}x, "
          f"{out.stat().st_size / 1024:.0f} KiB)")
    base = _cli_median(["--json-out", str(out.with_name("r0.json"))])
    with_tl = _cli_median(["--json-out", str(out.with_name("r1.json")), "--timeline", str(out)])
    print(f"`parasim train` as a command, median of {CLI_RUNS} fresh processes:")
    print(f"  --json-out                   {1e3 * base:7.0f} ms")
    print(f"  --json-out --timeline        {1e3 * with_tl:7.0f} ms  ({with_tl / base:.3f}x)")


if __name__ == "__main__":
    main()
