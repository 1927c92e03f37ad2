"""The API-server process in front of the engine (`frontend_s_per_request`, serving.frontend).

Processor sharing is checked against hand-worked schedules and against the first-come-first-served
queue computed independently here (same busy periods, never earlier departures); the simulator
wiring by where a burst's first tokens can fall and by the compiled loop staying byte-identical."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.errors import InputError
from parasim.serving import ServingPlan, Workload, simulate
from parasim.serving.frontend import processor_sharing_release_s
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

MODEL = get_model("llama-3-8b")
CLUSTER = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=1)


def _fifo_release_s(arrival_s, work_s):
    """A single first-come-first-served server: each request starts when it has arrived and the one
    before it has left."""
    out, free = [], 0.0
    for a in arrival_s:
        free = max(a, free) + work_s
        out.append(free)
    return np.array(out)


def test_one_request_alone_takes_its_work():
    assert processor_sharing_release_s(np.array([2.0]), 0.01)[0] == pytest.approx(2.01)


def test_two_overlapping_requests_by_hand():
    """Work 1: the first is alone for 0.5 (0.5 left), then both share at half speed: the first
    needs 1.0 more wall time (leaves at 1.5), by when the second has had 0.5 and finishes alone at 2.0."""
    out = processor_sharing_release_s(np.array([0.0, 0.5]), 1.0)
    assert out.tolist() == pytest.approx([1.5, 2.0])


def test_a_burst_leaves_together_at_n_times_the_work():
    """N requests sent at once share the CPU evenly, so all finish together at N x work: the engine
    receives the burst late but whole (FCFS would trickle them in one per `work`)."""
    out = processor_sharing_release_s(np.zeros(1000), 0.005)
    assert out.min() == pytest.approx(5.0) and out.max() == pytest.approx(5.0)
    assert _fifo_release_s(np.zeros(1000), 0.005)[0] == pytest.approx(0.005)


def test_no_work_leaves_arrivals_unchanged():
    arr = np.array([0.0, 0.1, 0.1, 3.0])
    assert processor_sharing_release_s(arr, 0.0).tolist() == arr.tolist()


@settings(max_examples=200, deadline=None)
@given(gaps=hst.lists(hst.floats(min_value=0.0, max_value=0.05), min_size=1, max_size=60),
       work=hst.floats(min_value=1e-4, max_value=0.02))
def test_processor_sharing_invariants(gaps, work):
    arr = np.cumsum(gaps)
    ps = processor_sharing_release_s(arr, work)
    fifo = _fifo_release_s(arr, work)
    tol = 1e-9 * max(1.0, float(arr[-1]) + work * len(arr))
    assert np.all(ps >= arr + work - tol)  # nobody leaves before its own work is done
    assert np.all(np.diff(ps) >= -tol)  # equal work: departures in arrival order
    assert np.all(ps >= fifo - tol)  # sharing never lets a request out earlier than FCFS would
    assert ps[-1] == pytest.approx(fifo[-1], abs=tol)  # both work-conserving: the same busy periods


def _burst(n: int, prompt: int = 128, output: int = 4) -> Workload:
    return Workload.from_columns(np.zeros(n), np.full(n, prompt), np.full(n, output))


def test_burst_reaches_the_engine_after_the_api_server_and_ttft_counts_from_the_send():
    n, work = 200, 0.004
    base = simulate(MODEL, CLUSTER, ServingPlan(), _burst(n))
    fe = simulate(MODEL, CLUSTER, ServingPlan(frontend_s_per_request=work), _burst(n))
    ttft = fe.requests["ttft_s"]
    assert np.nanmin(ttft) >= n * work  # no first token before the whole burst has left the API server
    # the engine then sees the same burst, so its own part of each TTFT is unchanged
    assert np.allclose(np.sort(ttft - n * work), np.sort(base.requests["ttft_s"]), rtol=1e-9, atol=1e-9)
    assert fe.requests["arrival_s"].tolist() == [0.0] * n


def test_zero_term_leaves_results_and_mapping_unchanged():
    wl = _burst(50)
    a = simulate(MODEL, CLUSTER, ServingPlan(), wl).to_dict(include_requests=True)
    b = simulate(MODEL, CLUSTER, ServingPlan(frontend_s_per_request=0.0), wl).to_dict(include_requests=True)
    a.pop("sim_wall_s"), b.pop("sim_wall_s")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert "frontend_s_per_request" not in ServingPlan().to_mapping()
    assert ServingPlan(frontend_s_per_request=0.002).to_mapping()["frontend_s_per_request"] == 0.002


def test_compiled_loop_stays_byte_identical():
    from tests.test_serving_fastloop import both, same
    wl = Workload.from_columns(np.linspace(0.0, 2.0, 400), np.full(400, 300), np.full(400, 40))
    slow, fast, ran = both(ServingPlan(frontend_s_per_request=0.006), wl)
    assert ran
    same(slow, fast)


def test_closed_loop_client_is_refused_by_name():
    with pytest.raises(InputError, match="frontend_s_per_request"):
        simulate(MODEL, CLUSTER, ServingPlan(frontend_s_per_request=0.001), _burst(10), max_concurrency=2)


def test_plan_rejects_a_negative_term():
    with pytest.raises(InputError, match="frontend_s_per_request"):
        ServingPlan(frontend_s_per_request=-1.0)

