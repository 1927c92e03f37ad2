"""Search times of issue 5's two acceptance runs, and the README's `plan serve` example as a user
runs it (prints; asserts nothing about time).

    .venv/bin/python benchmarks/plan_speed.py [--workers N] [--readme-only | --moe]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from parasim.search.plan_serve import ServeSearch
from parasim.search.plan_serve import run_search as run_serve
from parasim.search.plan_train import TrainSearch
from parasim.search.plan_train import run_search as run_train

# Llama 3 paper's 405B layout: interleaved 1F1B over uneven chunks (126 layers; the paper does not
# state the virtual-stage count, v = 2 is the smallest that interleaves and what its pipeline figure draws)
PAPER = {"tp": 8, "pp": 16, "dp": 128, "micro_batch": 1, "recompute": "none", "zero": 2, "sequence_parallel": True,
         "schedule": "interleaved", "virtual_stages": 2}


# the README's example (issue 21: under 2 s on 2 cores, per-phase disaggregated layouts in the space)
README_SERVE = ("plan serve --model llama-3-70b --gpu h100-sxm --max-gpus 16 --rate 10 --prompt-tokens 1000 "
                "--output-tokens 250 --length-dist lognormal --slo-ttft 2 --slo-tpot 0.1")


def readme_example(workers: int | None, repeat: int = 3, bytecode: bool = True) -> None:
    """The README example in a fresh process each time, as a user runs it: wall and CPU (the
    process and its workers) include the interpreter's start, the imports and the worker pool.
    With `bytecode` (a pip install's case) .pyc files are written and read (a first run writes
    them); without, every run compiles parasim's modules (PYTHONDONTWRITEBYTECODE=1 in a shell
    over an editable install)."""
    exe = Path(sys.executable).with_name("parasim")
    cmd = [str(exe), *README_SERVE.split(), "--json"] + (["--workers", str(workers)] if workers else [])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)  # writes the .pyc files
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"README plan serve ({workers or 'default'} workers, {'with' if bytecode else 'no'} bytecode): "
              f"{wall:.2f} s wall, {cpu:.2f} s CPU, search {out['search_wall_s']:.2f} s, "
              f"{out['evaluated']} evaluated, best {out['best']['gpus']} GPUs "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


#: a MoE model's search (docs/planner.md, "Expert parallelism (MoE)"): the README's DeepSeek-V3 row at
#: the default 1000 requests, at 4 requests/s (TP 8 keeps up) and 10 (only EP 8 does); timed with
#: --ep 1 (the space before EP was searched) and with auto
MOE_SERVE = ("plan serve --model deepseek-v3 --gpu h200-sxm --max-gpus 8 --prompt-tokens 1000 "
             "--output-tokens 500 --slo-ttft 5 --slo-tpot 0.1")


def moe_example(workers: int | None, repeat: int = 3) -> None:
    """MOE_SERVE in fresh processes, without and with expert parallelism in the space."""
    exe = Path(sys.executable).with_name("parasim")
    for rate, ep in (("4", "1"), ("4", "auto"), ("10", "1"), ("10", "auto")):
        cmd = [str(exe), *MOE_SERVE.split(), "--rate", rate, "--ep", ep, "--json"] + (
            ["--workers", str(workers)] if workers else [])
        subprocess.run(cmd, stdout=subprocess.DEVNULL)  # writes the .pyc files; exit 1 = nothing meets the SLO
        for _ in range(repeat):
            t = time.perf_counter()
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True).stdout)
            b = out["best"]
            best = (f"best tp{b['tp']} x{b['replicas']} ep{b['ep']} goodput/GPU {b['goodput_per_gpu']:.3f}" if b
                    else "no plan meets the SLO")
            print(f"MoE plan serve --rate {rate} --ep {ep}: {time.perf_counter() - t:.2f} s wall, search {out['search_wall_s']:.2f} s, "
                  f"{out['evaluated']} evaluated, {best} (load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--readme-only", action="store_true", help="only the README example, fresh processes")
    ap.add_argument("--moe", action="store_true", help="only the MoE search, --ep 1 against --ep auto")
    args = ap.parse_args()

    if args.moe:
        moe_example(args.workers)
        return
    readme_example(args.workers)
    readme_example(args.workers, bytecode=False)
    if args.readme_only:
        return

    t = time.perf_counter()
    out = run_train(TrainSearch(model="llama-3.1-405b", gpu=("h100-sxm",), gpus=(16384,), seq_len=8192,
                                global_batch_tokens=16 * 1024 * 1024, reference=PAPER, workers=args.workers))
    wall = time.perf_counter() - t
    b, p = out["best"], out["reference"]
    uneven = sum(1 for r in out["ranked"] if r["virtual_stages"] > 1 and 126 % (r["pp"] * r["virtual_stages"]))
    print(f"plan train llama-3.1-405b on 16384 x h100-sxm, 16M-token batches, seq 8192: "
          f"search {out['search_wall_s']:.2f} s (wall {wall:.2f} s), evaluated {out['evaluated']}, "
          f"raw space {out['space_size']}; {uneven} ranked plans interleave uneven chunks")
    print(f"  best: tp={b['tp']} pp={b['pp']} dp={b['dp']} cp={b['cp']} mb={b['micro_batch']} v={b['virtual_stages']} "
          f"recompute={b['recompute']} zero={b['zero']}: {b['metrics']['tokens_per_s']:.4g} tok/s, "
          f"MFU {b['metrics']['mfu']:.3f} causal ({b['metrics']['megatron_mfu']:.3f} Megatron), step {b['metrics']['step_time_s']:.2f} s")
    print(f"  Llama 3 paper plan (tp8 pp16 dp128 v={p['virtual_stages']} {p['schedule']}): rank {p['rank']} of "
          f"{len(out['ranked'])}, {p['metrics']['tokens_per_s']:.4g} tok/s, MFU {p['metrics']['mfu']:.3f} causal ({p['metrics']['megatron_mfu']:.3f} Megatron), "
          f"step {p['metrics']['step_time_s']:.2f} s (best / paper = "
          f"{b['metrics']['tokens_per_s'] / p['metrics']['tokens_per_s']:.3f}x)")

    out = run_serve(ServeSearch(model="llama-3-70b", gpu=("h100-sxm",), max_gpus=16, slo_ttft=2.0, slo_tpot=0.1,
                                attainment=0.9, rate=10, prompt_tokens=1000, output_tokens=250,
                                length_dist="lognormal", workers=args.workers))
    b = out["best"]
    s = b["metrics"]["summary"]
    print(f"plan serve llama-3-70b on <= 16 x h100-sxm, 10 req/s, lognormal 1000/250, p99 TTFT 2 s, TPOT 100 ms: "
          f"search {out['search_wall_s']:.2f} s, evaluated {out['evaluated']} "
          f"({out['stages']['same_simulation']} of them sharing another plan's run; {out['stages']})")
    print(f"  best: {b['gpus']} GPUs tp={b['tp']} pp={b['pp']} replicas={b['replicas']} {b['scheduler']} "
          f"budget={b['token_budget']} max_batch={b['max_batch']} {b['weights']}/{b['kv_dtype']}: "
          f"TTFT p99 {s['ttft_p99_s']:.3f} s, TPOT p99 {s['tpot_p99_s'] * 1e3:.1f} ms, "
          f"attainment {s['slo_attainment']:.3f}, goodput/GPU {b['goodput_per_gpu']:.3f}")
    print(f"  disaggregated layouts in the space: {_disagg_layouts()} (per-phase TP and PP); pruned: "
          f"{ {k: v for k, v in out['pruned'].items() if k in ('phase_pp_unneeded', 'goodput_bound', 'same_as_screened', 'throughput_bound')} }; "
          f"goodput bound: {out['stages'].get('goodput_bound')}")
    for line in out["explanation"]["text"]:
        print(f"  {line}")


def _disagg_layouts() -> int:
    """Disaggregated layouts the README example's space holds before any pruning."""
    from parasim.search.prune import Pruned
    from parasim.search.space import serve_layouts
    from parasim.specs.catalog import default_cluster, get_model

    cl = default_cluster("h100-sxm", 16)
    return sum(1 for d in serve_layouts(get_model("llama-3-70b"), cl, max_gpus=16, tps=(1, 2, 4, 8), pps=(1, 2),
                                        precisions=(("bf16", "bf16"),), pruned=Pruned(), disagg=("disagg",))
               if "prefill_pp" in d)


if __name__ == "__main__":
    main()
