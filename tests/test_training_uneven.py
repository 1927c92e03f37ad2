"""Interleaved 1F1B with uneven model chunks: the split, the bubble it costs, memory, the rules kept."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.memory import weight_params_per_gpu
from parasim.cost.partition import chunk_layers, stage_layers, virtual_stage_layers
from parasim.errors import InputError
from parasim.specs.catalog import get_model
from parasim.training import TrainingPlan, simulate
from parasim.training.memory import peak_activation_units
from parasim.training.schedules import get_schedule
from parasim.training.step import run_pipeline

L405 = get_model("llama-3.1-405b")


# --- the split --------------------------------------------------------------------------------------
@given(pp=st.integers(1, 16), v=st.integers(1, 8), extra=st.integers(0, 200))
@settings(max_examples=200, deadline=None)
def test_uneven_interleaved_split_conserves_layers(pp, v, extra):
    layers = pp * v + extra  # at least one layer per chunk
    g = virtual_stage_layers(layers, pp, v)
    per = chunk_layers(layers, pp, v)
    assert sum(g) == layers and sum(map(sum, per)) == layers
    assert len(per) == pp and all(len(row) == v for row in per)
    assert all(per[r][c] == g[c * pp + r] for r in range(pp) for c in range(v))
    assert max(g) - min(g) <= 1 and min(g) >= 1
    n = pp * v
    if n > 2 and layers % n <= n - 2:  # the embedding / LM-head chunks get a spare layer only when all others have one
        assert g[0] == g[-1] == layers // n
    # per-rank totals stay as even as the chunks allow
    totals = [sum(row) for row in per]
    assert max(totals) - min(totals) <= v
    if v == 1:
        assert [row[0] for row in per] == stage_layers(layers, pp)


def test_llama3_405b_split_drops_a_layer_from_the_first_and_last_chunk():
    per = chunk_layers(126, 16, 2)
    assert per[0] == [3, 4] and per[-1] == [4, 3]
    assert all(row == [4, 4] for row in per[1:-1])


@pytest.mark.parametrize("pp,v", [(16, 2), (16, 3), (4, 5), (8, 1)])
def test_rank_parameters_follow_the_chunks_and_add_up(pp, v):
    per_rank = [weight_params_per_gpu(L405, tp=8, pp=pp, stage=r, virtual_stages=v) for r in range(pp)]
    whole = sum(weight_params_per_gpu(L405, tp=8, pp=pp, stage=r) for r in range(pp))
    assert sum(per_rank) == pytest.approx(whole, rel=1e-12)
    assert weight_params_per_gpu(L405, tp=8, pp=pp, virtual_stages=v) == max(per_rank)


# --- the bubble -------------------------------------------------------------------------------------
def _run(pp, m, v, counts, f=1.0, b=2.0):
    sched = get_schedule("interleaved" if v > 1 else "1f1b")
    ops = [sched.ops(r, pp, m, v) for r in range(pp)]
    fwd = [[(f * counts[r][c], 0.0) for c in range(v)] for r in range(pp)]
    bwd = [[(b * counts[r][c], 0.0) for c in range(v)] for r in range(pp)]
    return run_pipeline(ops, pp, v, m, fwd, bwd, 0.0)


@given(pp=st.integers(2, 8), groups=st.integers(1, 4), v=st.integers(2, 5), n=st.integers(1, 4))
@settings(max_examples=40, deadline=None)
def test_equal_chunks_give_megatrons_interleaved_bubble(pp, groups, v, n):
    """Free communication, equal chunks: bubble / step = (p-1) / (v*m + p-1) (Narayanan et al. 2021)."""
    m = pp * groups
    run = _run(pp, m, v, [[n] * v for _ in range(pp)])
    step = max(run.end_s)
    bubble = step - run.busy_compute_s[0]
    assert bubble / step == pytest.approx((pp - 1) / (v * m + pp - 1), rel=1e-9)


@given(pp=st.integers(2, 8), groups=st.integers(1, 3), v=st.integers(2, 4), slow=st.integers(0, 3),
       extra=st.integers(1, 2))
@settings(max_examples=60, deadline=None)
def test_uneven_chunks_cost_the_bubble_of_the_slowest_chunk(pp, groups, v, slow, extra):
    """Every rank holds the same layers but one chunk index is heavier: the fill and drain run at the
    slowest chunk's pace, so the bubble is at least (p-1) x (f+b) of that chunk - more than a closed
    form on the average chunk would say."""
    m, slow, base = pp * groups, slow % v, 2
    counts = [[base + extra * (c == slow) for c in range(v)] for _ in range(pp)]
    run = _run(pp, m, v, counts)
    bubble = max(run.end_s) - run.busy_compute_s[0]
    slowest = (pp - 1) * 3.0 * (base + extra)
    assert bubble >= slowest - 1e-9
    assert bubble > (pp - 1) * 3.0 * (base + extra / v)  # the average chunk's bubble


def test_a_slow_first_chunk_sets_the_bubble_exactly():
    run = _run(4, 8, 2, [[4, 3]] * 4)
    assert max(run.end_s) - run.busy_compute_s[0] == pytest.approx(3 * 3.0 * 4)


# --- whole plans ------------------------------------------------------------------------------------
def _paper(v=2, **kw):
    plan = dict(tp=8, pp=16, dp=128, virtual_stages=v, schedule="interleaved" if v > 1 else "1f1b",
                sequence_parallel=True, micro_batch=1, global_batch=2048, seq_len=8192, recompute="none", zero=2)
    plan.update(kw)
    return TrainingPlan(**plan)


def _cluster():
    from parasim.search.plan_train import cluster_for

    return cluster_for("h100-sxm", 16384)


def test_llama3_paper_plan_runs_interleaved_with_uneven_chunks():
    cluster = _cluster()
    plain = simulate(L405, cluster, _paper(v=1))
    inter = simulate(L405, cluster, _paper(v=2))
    # same work, smaller bubble: interleaving pays off at m = pp = 16
    assert inter.breakdown["compute"] == pytest.approx(plain.breakdown["compute"], rel=1e-9)
    assert inter.breakdown["bubble"] < 0.7 * plain.breakdown["bubble"]
    assert inter.step_time_s < plain.step_time_s


def test_stage0_memory_holds_its_own_chunks_activations():
    """Rank 0 holds chunks of 3 (with the embedding) and 4 layers; the peak walks exactly those."""
    from parasim.cost.memory import activation_bytes_per_layer, embedding_activation_bytes
    from parasim.training.memory import peak_memory

    plan = _paper(v=2).check(L405, 16384)
    per_layer = activation_bytes_per_layer(L405, seq=8192, micro_batch=1, tp=8, sp=True, cp=1, recompute="none",
                                           flash=True)
    emb = embedding_activation_bytes(L405, seq=8192, micro_batch=1, tp=8, sp=True, cp=1)
    ops = [get_schedule("interleaved").ops(r, 16, plan.micro_batches, 2) for r in range(16)]
    counts = chunk_layers(126, 16, 2)
    rank0 = peak_activation_units(ops[0], [3 * per_layer + emb, 4 * per_layer])
    even0 = peak_activation_units(ops[0], [4 * per_layer + emb, 4 * per_layer])
    mem = peak_memory(L405, _cluster(), plan, ops, counts)
    if mem.rank == 0:
        assert mem.activations == pytest.approx(rank0, rel=1e-12)
    else:  # another rank peaks higher than rank 0's own chunks
        assert mem.total >= rank0
    assert rank0 < even0


def test_the_planner_memory_walk_agrees_on_uneven_interleaved_plans():
    from parasim.search.plan_train import peak_memory_bytes

    d = {k: getattr(_paper(v=3), k) for k in ("tp", "pp", "dp", "cp", "ep", "virtual_stages", "sequence_parallel",
                                               "micro_batch", "global_batch", "seq_len", "recompute", "zero",
                                               "precision", "schedule")}
    res = simulate(L405, _cluster(), _paper(v=3))
    assert peak_memory_bytes(L405, d, _cluster().accelerator.generation) == pytest.approx(res.peak_memory_bytes, rel=1e-9)


def test_microbatches_not_a_multiple_of_pp_is_rejected_by_name():
    with pytest.raises(InputError) as e:
        _paper(v=2, global_batch=128 * 24).check(L405, 16384)
    assert e.value.field == "global-batch"
    assert "micro-batches" in e.value.message and "pp=16" in e.value.message and "24" in e.value.message


def test_more_chunks_than_layers_is_still_rejected():
    with pytest.raises(InputError) as e:
        _paper(v=8).check(L405, 16384)
    assert e.value.field == "pp"
