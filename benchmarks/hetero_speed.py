"""How long a step on a mixed cluster takes to simulate, and `plan train` on one.

Llama-3.1-405B on 8,192 H100 + 8,192 A100 (tp8 pp16 dp128, v2): the balanced split's local moves
simulate the step a few times per round, so a mixed step costs a small multiple of a plain one.
`plan train` on 1,024 H100 + 1,024 A100 for a 70B model: every layout in each placement it allows.
"""

from __future__ import annotations

import time

from parasim.specs.catalog import get_model
from parasim.specs.mixed import from_text
from parasim.training import TrainingPlan
from parasim.training.hetero import simulate_mixed


def _median_ms(fn, n: int = 10) -> tuple[float, object]:
    fn()  # warm caches once
    runs, res = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        res = fn()
        runs.append(time.perf_counter() - t0)
    return 1e3 * sorted(runs)[len(runs) // 2], res


def main() -> None:
    model = get_model("llama-3.1-405b")
    mixed = from_text("h100-sxm:8192,a100-sxm-80gb:8192")
    plan = TrainingPlan(tp=8, pp=16, dp=128, virtual_stages=2, schedule="interleaved", sequence_parallel=True,
                        micro_batch=1, global_batch=2048, seq_len=8192, recompute="full", zero=1)
    for placement, split in (("stages", "even"), ("stages", "balanced"), ("replicas", "balanced")):
        ms, res = _median_ms(lambda: simulate_mixed(model, mixed, plan, placement=placement, split=split))
        print(f"405B on 8,192 H100 + 8,192 A100, {placement}/{split}: step {res.step_time_s:.2f} s; "
              f"simulated in {ms:.1f} ms (median of 10)")
    from parasim.search.plan_train import TrainSearch, run_search

    t0 = time.perf_counter()
    out = run_search(TrainSearch(model="llama-3-70b", gpu=("h100-sxm:1024,a100-sxm-80gb:1024",), gpus=(),
                                 seq_len=8192, global_batch_tokens=4_000_000, workers=2))
    best = out["best"]
    print(f"plan train 70B on 1,024 H100 + 1,024 A100: {out['evaluated']} plans in {time.perf_counter() - t0:.1f} s; "
          f"best {best['mixed_placement']} tp{best['tp']} pp{best['pp']} dp{best['dp']} "
          f"{best['metrics']['tokens_per_s'] / 1e6:.2f} Mtok/s")


if __name__ == "__main__":
    main()
