"""Local and Ray executors give identical rankings (on a local Ray instance)."""

from __future__ import annotations

import pytest

from parasim.search.plan_train import TrainSearch, run_search

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'parasim[ray]')")


def _ranking(out: dict) -> list[tuple]:
    keys = ("tp", "pp", "dp", "cp", "micro_batch", "virtual_stages", "recompute", "zero", "schedule")
    return [(tuple(r[k] for k in keys), r["metrics"]["step_time_s"]) for r in out["ranked"]]


def test_local_and_ray_rankings_are_identical():
    req = dict(model="llama-3.1-8b", gpu=("h100-sxm",), gpus=(32,), seq_len=4096, global_batch=64,
               choices={"micro_batch": (1, 2), "zero": (1, 3)})
    local = run_search(TrainSearch(**req, workers=2))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_search(TrainSearch(**req, executor="ray", workers=2))
    finally:
        ray.shutdown()
    assert local["ranked"] and _ranking(local) == _ranking(remote)
    assert local["pruned"] == remote["pruned"]
