"""`plan serve` runs a simulation once for plans that simulate the same run (`same_simulation`:
SplitFuse is Sarathi with another default budget, so with the same budget and batch given they
are one run), and keeps one worker pool for a search's stages: neither may change an answer."""

from __future__ import annotations

import itertools
import json

import pytest

from parasim.search import plan_serve as ps

REQ = dict(model="llama-3-8b", gpu=("h100-sxm",), max_gpus=2, rate=6.0, prompt_tokens=800, output_tokens=150,
           slo_ttft=2.0, slo_tpot=0.1, requests=200, screen_requests=100, schedulers=("sarathi", "splitfuse"),
           pp=(1,), precisions=(("bf16", None),), token_budgets=(512, 2048), max_batches=(128,))


def _comparable(out: dict) -> str:
    """The result without wall times and without the count of shared runs."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if "wall" not in k and k != "same_simulation"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return json.dumps(strip({k: v for k, v in out.items() if not k.startswith("_")}), sort_keys=True)


def test_a_simulation_of_another_scheduler_name_is_the_same_run():
    """Run both: the results differ in the echoed scheduler name alone (and wall time)."""
    from parasim.search.plan_serve import _prepare

    run = _prepare(ps.ServeSearch(**REQ))
    ctx = {"model": run.model, "workload": run.wl, "slo": run.slo, "seed": 0, "queueing_limit_s": 2.0,
           "offered_rps": 6.0}
    item = {"gpu": "h100-sxm", "tp": 1, "pp": 1, "replicas": 2, "weights": "bf16", "kv_dtype": "bf16",
            "token_budget": 512, "max_batch": 128, "requests": 100}
    a, b = (ps.evaluate(ctx, {**item, "scheduler": s}) for s in ("sarathi", "splitfuse"))
    assert ps.same_simulation(run.model, {**item, "scheduler": "sarathi"}) == \
        ps.same_simulation(run.model, {**item, "scheduler": "splitfuse"})
    for r in (a, b):
        r["metrics"].pop("sim_wall_s")
    assert ps.renamed(a, "splitfuse") == b
    # the defaults differ (512 vs 768 tokens): not the same run
    assert ps.same_simulation(run.model, {**item, "token_budget": None, "scheduler": "sarathi"}) != \
        ps.same_simulation(run.model, {**item, "token_budget": None, "scheduler": "splitfuse"})
    # another scheduler policy is never the same run
    assert ps.same_simulation(run.model, {**item, "scheduler": "vllm"}) != \
        ps.same_simulation(run.model, {**item, "scheduler": "sarathi"})


@pytest.mark.parametrize("workers", [1, 2])
def test_shared_runs_and_one_pool_give_the_answer_of_running_every_plan(monkeypatch, workers):
    shared = ps.run_search(ps.ServeSearch(**REQ, workers=workers))
    assert shared["stages"]["same_simulation"] > 0
    unique = itertools.count()
    monkeypatch.setattr(ps, "same_simulation", lambda model, item: (next(unique),))  # every plan its own run
    alone = ps.run_search(ps.ServeSearch(**REQ, workers=workers))
    assert alone["stages"]["same_simulation"] == 0
    assert _comparable(shared) == _comparable(alone)
