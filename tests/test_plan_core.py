"""Planner building blocks: Pareto fronts, pruning counts, the cached memory walk, executors."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.search import executors
from parasim.search.pareto import dominates, pareto_front
from parasim.search.plan_train import cluster_for, peak_memory_bytes
from parasim.search.prune import REASONS, Pruned
from parasim.search.space import default_train_choices, enumerate_train
from parasim.specs.catalog import get_model


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=40))
def test_pareto_front_is_exactly_the_non_dominated_points(points):
    front = pareto_front(points, [lambda p: p[0], lambda p: p[1]])
    for p in points:
        dominated = any(dominates(q, p) for q in points)
        assert (p in front) != dominated or (not dominated and p in front)
        if dominated:
            assert p not in front
    for p in front:
        assert not any(dominates(q, p) for q in points)
    assert len(set(front)) == len(front)


def test_train_space_counts_add_up_to_the_raw_space():
    model = get_model("llama-3-70b")
    cluster = cluster_for("h100-sxm", 512)
    choices = default_train_choices(model, cluster, 4096)
    pruned = Pruned()
    found = list(enumerate_train(model, cluster, global_batch=512, seq_len=4096, choices=choices, pruned=pruned))
    assert found
    assert len(found) + sum(pruned.values()) == choices.size
    assert set(pruned) <= set(REASONS)
    for d in found:
        assert d["tp"] * d["pp"] * d["cp"] * d["dp"] == 512
        assert d["global_batch"] % (d["dp"] * d["micro_batch"]) == 0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_cached_memory_walk_matches_the_training_simulator(i):
    """The planner's memory screen must agree with `parasim.training` to the byte."""
    from parasim.training import TrainingPlan, simulate

    model = get_model("llama-3.1-8b")
    cluster = cluster_for("h100-sxm", 64)
    choices = default_train_choices(model, cluster, 4096)
    cands = list(enumerate_train(model, cluster, global_batch=128, seq_len=4096, choices=choices, pruned=Pruned()))
    d = cands[i % len(cands)]
    res = simulate(model, cluster, TrainingPlan.from_mapping(d, gpus=64))
    assert peak_memory_bytes(model, d) == pytest.approx(res.peak_memory_bytes, rel=1e-9)


def _square(ctx, x):
    return ctx * x * x


def test_executors_return_results_in_item_order():
    items = list(range(50))
    random.Random(0).shuffle(items)
    serial = executors.run(_square, 3, items, workers=1).results
    pool = executors.run(_square, 3, items, workers=2).results
    assert serial == pool == [3 * x * x for x in items]


def test_unknown_executor_is_an_input_error():
    from parasim.errors import InputError

    with pytest.raises(InputError):
        executors.run(_square, 1, [1], executor="slurm")
