"""What `serve --timeline` adds to a run's wall time, at the README's serve example: Llama-3-8B on
one H100, `sarathi`, 2,000 requests at 20 req/s (512-token prompts, 128-token outputs).

1. In process: `simulate` alone vs `simulate(record=True)` plus everything the flag adds (the
   result's `series` and `distributions`, the trace events, the file's text), best of 5 each. The
   simulation itself is fast (about 6 µs per iteration), so this ratio is well above the command's.
2. The command as a user runs it (a fresh process: imports, the simulation, the table,
   --json-out), with and without `--timeline`, best of 3 each.
Target: the command's ratio < 1.20 (issue #19: writing a timeline adds less than 20 % to a run's
wall time). Times are CPU seconds (user + system): on a shared machine wall time follows the load.

Run: `.venv/bin/python benchmarks/serve_timeline_overhead.py`.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from parasim.report.serve_trace import trace_events
from parasim.report.tables import dumps
from parasim.report.trace import dumps_trace
from parasim.serving import ServingPlan, generate, simulate
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

README = ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--scheduler", "sarathi", "--rate", "20",
          "--requests", "2000", "--slo-ttft", "1", "--slo-tpot", "0.05"]


def cpu_s() -> float:
    """CPU time of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = cpu_s()
        fn()
        times.append(cpu_s() - t0)
    return min(times)


def in_process() -> None:
    model, cluster = get_model("llama-3-8b"), ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=1)
    plan, wl = ServingPlan(scheduler="sarathi"), generate(requests=2000, rate=20.0, seed=0)
    slo = {"ttft_s": 1.0, "tpot_s": 0.05}

    def plain():
        dumps(simulate(model, cluster, plan, wl, slo=slo).to_dict())

    def recorded():
        res = simulate(model, cluster, plan, wl, slo=slo, record=True)
        dumps(res.to_dict())
        dumps_trace(trace_events(res.recording, res.requests))

    plain()  # warm imports and caches
    off, on = best(plain, 5), best(recorded, 5)
    res = simulate(model, cluster, plan, wl, slo=slo, record=True)
    print(f"README serve example: {res.summary['iterations']:,} iterations; simulate + JSON {off:.3f} s, "
          f"with recording, series, distributions and the trace {on:.3f} s: ratio {on / off:.2f} (target < 1.20)")


def cli() -> None:
    with tempfile.TemporaryDirectory() as d:
        def run(extra):
            subprocess.run([sys.executable, "-m", "parasim", *README, "--json-out", str(Path(d) / "r.json"), *extra],
                           check=True, capture_output=True)

        off = best(lambda: run([]), 3)
        on = best(lambda: run(["--timeline", str(Path(d) / "t.json")]), 3)
        size = (Path(d) / "t.json").stat().st_size
    print(f"`parasim serve` (README example, fresh process): {off:.2f} s, with --timeline {on:.2f} s: "
          f"ratio {on / off:.2f} (target < 1.20); trace file {size / 1e6:.1f} MB")


if __name__ == "__main__":
    in_process()
    cli()
