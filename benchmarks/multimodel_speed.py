"""Times of `serve --models` and `plan serve --models` (prints; asserts nothing about time).

    .venv/bin/python benchmarks/multimodel_speed.py [--workers N]

A multi-model run is one simulation per model, so its time is the sum of the models' own runs;
the planner is one `plan serve` search per model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from parasim.search.plan_multimodel import plan_models
from parasim.search.plan_serve import ServeSearch
from parasim.serving.multimodel import read_models, simulate_models
from parasim.specs.catalog import get_accelerator

REPO = Path(__file__).resolve().parents[1]
SLO = {"slo_ttft": 1.0, "slo_tpot": 0.05}
THREE = {"models": [
    {"name": "chat", "model": "llama-3-8b", "rate": 40, "requests": 20000, "prompt_tokens": 1000, "output_tokens": 250,
     "gpus": 4, **SLO},
    {"name": "code", "model": "mistral-7b", "rate": 20, "requests": 10000, "prompt_tokens": 500, "output_tokens": 200,
     "gpus": 2, **SLO},
    {"name": "big", "model": "llama-3-70b", "rate": 2, "requests": 1000, "prompt_tokens": 1000, "output_tokens": 250,
     "gpus": 4, "tp": 4, "slo_ttft": 2.0, "slo_tpot": 0.1},
]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    h100 = get_accelerator("h100-sxm")
    example = read_models(REPO / "examples" / "multimodel" / "two-models.yaml")
    best = min(simulate_models(example, h100, 4)["sim_wall_s"] for _ in range(3))
    print(f"serve --models examples/multimodel/two-models.yaml (500 requests, 2 models): {best:.3f} s (best of 3)")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "three.yaml"
        path.write_text(yaml.safe_dump(THREE))
        out = simulate_models(read_models(path), h100, 10)
        print(f"serve --models, 3 models, {out['summary']['requests']:,} requests: {out['sim_wall_s']:.2f} s")
    t = time.perf_counter()
    plan = plan_models(example, ServeSearch(model="", gpu=("h100-sxm",), max_gpus=8, workers=args.workers))
    print(f"plan serve --models examples/multimodel/two-models.yaml --max-gpus 8: {time.perf_counter() - t:.2f} s, "
          f"{plan['evaluated']} plans simulated, placement {plan['totals']['gpus']} GPUs "
          f"(even split needs {plan['even_split']['gpus_needed']})")


if __name__ == "__main__":
    main()
