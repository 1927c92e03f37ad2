"""Pipeline schedules and the event simulation: bubbles emerge from the op order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.errors import InputError
from parasim.training.memory import peak_activation_units
from parasim.training.schedules import Schedule, get_schedule, register
from parasim.training.step import run_pipeline


def _run(name: str, pp: int, m: int, v: int = 1, f: float = 1.0, b: float = 2.0, p2p: float = 0.0):
    sched = get_schedule(name)
    ops = [sched.ops(r, pp, m, v) for r in range(pp)]
    fwd = [[(f / v, 0.0)] * v for _ in range(pp)]
    bwd = [[(b / v, 0.0)] * v for _ in range(pp)]
    return run_pipeline(ops, pp, v, m, fwd, bwd, p2p), ops


@given(pp=st.integers(1, 8), m=st.integers(1, 24))
@settings(max_examples=40, deadline=None)
def test_1f1b_bubble_fraction_matches_closed_form(pp, m):
    run, _ = _run("1f1b", pp, m)
    step = max(run.end_s)
    bubble = step - (run.busy_compute_s[0] + run.busy_comm_s[0])
    assert bubble / step == pytest.approx((pp - 1) / (m + pp - 1), rel=1e-9, abs=1e-12)


@given(pp=st.integers(2, 6), groups=st.integers(1, 4), v=st.integers(2, 4))
@settings(max_examples=30, deadline=None)
def test_interleaving_shrinks_the_bubble_by_v(pp, groups, v):
    m = pp * groups
    plain, _ = _run("1f1b", pp, m)
    inter, _ = _run("interleaved", pp, m, v)
    idle_plain = max(plain.end_s) - plain.busy_compute_s[0]
    idle_inter = max(inter.end_s) - inter.busy_compute_s[0]
    assert idle_inter == pytest.approx(idle_plain / v, rel=1e-9)


def test_gpipe_has_the_same_bubble_as_1f1b_but_holds_all_microbatches():
    pp, m = 4, 8
    g, gops = _run("gpipe", pp, m)
    o, oops = _run("1f1b", pp, m)
    assert max(g.end_s) == pytest.approx(max(o.end_s))
    assert peak_activation_units(gops[0], [1.0]) == m
    assert peak_activation_units(oops[0], [1.0]) == pp
    assert all(peak_activation_units(oops[r], [1.0]) <= pp for r in range(pp))


def test_every_op_runs_once_and_dependencies_hold():
    pp, m, v = 4, 8, 2
    for name, vv in (("gpipe", 1), ("1f1b", 1), ("interleaved", v)):
        ops = [get_schedule(name).ops(r, pp, m, vv) for r in range(pp)]
        for r in range(pp):
            assert sorted(ops[r]) == sorted({(k, j, c) for k in "FB" for j in range(m) for c in range(vv)})


def test_p2p_latency_adds_to_the_pipeline():
    free, _ = _run("1f1b", 4, 8)
    slow, _ = _run("1f1b", 4, 8, p2p=0.1)
    assert max(slow.end_s) > max(free.end_s)


def test_registry_rejects_duplicates_and_unknown_names():
    class Again(Schedule):
        name = "1f1b"

    with pytest.raises(ValueError):
        register(Again)
    with pytest.raises(InputError) as e:
        get_schedule("zero-bubble")
    assert e.value.field == "schedule"


def _run_p2p(name: str, pp: int, m: int, v: int, p2p: float, blocking: bool):
    sched = get_schedule(name)
    ops = [sched.ops(r, pp, m, v) for r in range(pp)]
    fwd = [[(1.0 / v, 0.0)] * v for _ in range(pp)]
    bwd = [[(2.0 / v, 0.0)] * v for _ in range(pp)]
    return run_pipeline(ops, pp, v, m, fwd, bwd, p2p, p2p_blocking=blocking)


@given(pp=st.integers(2, 6), groups=st.integers(1, 3), v=st.integers(1, 3), p2p=st.floats(0.001, 0.5),
       blocking=st.booleans())
@settings(max_examples=40, deadline=None)
def test_p2p_time_charged_per_send_and_receive(pp, groups, v, p2p, blocking):
    """Every micro-batch crosses pp*v - 1 stage boundaries forward and as many backward. Blocking,
    each crossing holds its sender for the whole transfer; overlapped, it costs the sender and the
    receiver OVERLAP_SLOWDOWN of it. The ranks' comm time adds up to exactly that."""
    overlap_slowdown = 0.15  # docs/training.md, OVERLAP_SLOWDOWN: 15 % of hidden communication is charged
    m = pp * groups
    name = "interleaved" if v > 1 else "1f1b"
    run = _run_p2p(name, pp, m, v, p2p, blocking)
    crossings = 2 * m * (pp * v - 1)
    per_crossing = p2p if blocking else 2 * overlap_slowdown * p2p
    assert sum(run.busy_comm_s) == pytest.approx(crossings * per_crossing, rel=1e-9)


def test_gpipe_two_stages_one_microbatch_blocking_by_hand():
    """pp=2, m=1, f=1, b=2, p2p=c: F0 [0,1], send holds rank 0 to 1+c; F1 [1+c, 2+c]; B1 [2+c, 4+c],
    its send holds rank 1 to 4+2c; B0 [4+2c, 6+2c]."""
    c = 0.25
    run = _run_p2p("gpipe", 2, 1, 1, c, True)
    assert run.end_s == pytest.approx([6 + 2 * c, 4 + 2 * c])
