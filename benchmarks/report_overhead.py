"""What `--report FILE.html` adds to a run's wall time at the README's sizes (prints; asserts nothing).

Each README tour command of train, serve, plan train and plan serve runs as a user runs it (a fresh
process: imports included), without `--report`, with it, and with it drawn in process
(`PARASIM_REPORT_WORKER=0`: the path before the drawing process forked at CLI start, and the one
where fork is missing), alternately, best of `--repeat` runs each. On a shared machine those walls
are noisy, so the report's own cost in process is also timed alone, in a fresh process from the
saved result, with what the command itself has imported by then already loaded: importing the
report modules and matplotlib, drawing the figures and writing the page. The load average is
printed with the figures: with another process busy on a 2-core machine the forked worker has no
core of its own and the overlap it buys shrinks.

    .venv/bin/python benchmarks/report_overhead.py [--repeat 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

README_RUNS = {  # the README tour's commands (its plan train is the 16384-GPU search: --quick swaps in a small one)
    "train": "train --model llama-3-70b --gpu h100-sxm --gpus 64 --tp 8 --pp 2 --global-batch 128 --seq-len 8192",
    "serve": "serve --model llama-3-8b --gpu h100-sxm --scheduler sarathi --rate 20 --requests 2000 --slo-ttft 1 --slo-tpot 0.05",
    "plan train": "plan train --model llama-3.1-405b --gpu h100-sxm --gpus 16384 --global-batch-tokens 16000000 --seq-len 8192",
    "plan serve": "plan serve --model llama-3-70b --gpu h100-sxm --max-gpus 16 --rate 10 --prompt-tokens 1000 "
                  "--output-tokens 250 --length-dist lognormal --slo-ttft 2 --slo-tpot 0.1",
}
QUICK_PLAN_TRAIN = "plan train --model llama-3-8b --gpu h100-sxm --gpus 64 --global-batch-tokens 1048576 --seq-len 4096"


COST = """
import json, sys, time
from parasim.cli.main import _register
from parasim.cli.outputs import write_report
import parasim.validation.expected_error  # every command has these loaded before it writes a file
_register()
result = json.loads(open(sys.argv[1]).read())
t = time.perf_counter()
from parasim.report.figures import figures_for
write_report(sys.argv[2], [result])
print(time.perf_counter() - t, len(figures_for(result)))
"""


def wall(args: list[str], in_process: bool = False) -> float:
    env = {**os.environ, "PARASIM_REPORT_WORKER": "0"} if in_process else None
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "parasim", *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"parasim {' '.join(args)} failed: {r.stderr[-500:]}")
    return time.perf_counter() - t


def report_cost(js: Path, html: Path) -> tuple[float, int]:
    """Seconds to import the report modules, draw the figures and write the page, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", COST, str(js), str(html)], capture_output=True, text=True, check=True)
    secs, figs = out.stdout.split()
    return float(secs), int(figs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a small plan train instead of the README's 16384-GPU one")
    args = ap.parse_args()
    runs = dict(README_RUNS, **({"plan train": QUICK_PLAN_TRAIN} if args.quick else {}))
    with tempfile.TemporaryDirectory() as tmp:
        for kind, cmd in runs.items():
            js, html = Path(tmp) / "r.json", Path(tmp) / "r.html"
            base = [*cmd.split(), "--json-out", str(js)]
            plain, with_report, here = [], [], []
            for _ in range(args.repeat):
                plain.append(wall(base))
                with_report.append(wall([*base, "--report", str(html)]))
                here.append(wall([*base, "--report", str(html)], in_process=True))
            cost, figs = min(report_cost(js, html) for _ in range(args.repeat))
            p, w, h = min(plain), min(with_report), min(here)
            print(f"{kind:11s} {p:7.2f} s plain, {w:7.2f} s with --report ({100 * (w - p) / p:+5.1f} %), "
                  f"{h:7.2f} s drawn in process ({100 * (h - p) / p:+5.1f} %); the report alone in process "
                  f"{cost:.3f} s ({figs} figures, {html.stat().st_size / 1024:.0f} KiB); "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
