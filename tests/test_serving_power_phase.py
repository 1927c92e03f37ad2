"""Board power by what the GPU does (cost.energy, serving.power_phase): compute-saturated busy time
draws the TDP, memory-bound busy time the part's catalogued streaming power, idle time the idle draw.

Checked against the H200 decode measurement the catalog cites (Ma et al., arXiv:2605.11999: decode
draws 137-300 W of 700 W), by a hand formula from the run's FLOPs, by invariants (power within
[idle, TDP], a larger memory-bound share never raises it, the three energy parts add up), and
through the CLI."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_accelerator, run_cli
from parasim.cost.energy import busy_activity, energy_by_phase_j, energy_j, power_w
from parasim.errors import InputError
from parasim.serving.plan import ServingPlan
from parasim.serving.simulate import simulate
from parasim.serving.workload import generate
from parasim.specs.accelerator import memory_bound_power_fraction_of
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

H200 = get_accelerator("h200-sxm")
A100 = get_accelerator("a100-sxm-80gb")
L8 = get_model("llama-3-8b")

parts = st.builds(lambda tdp, idle_frac, f: make_accelerator(tdp_w=tdp, idle_w=tdp * idle_frac,
                                                             memory_bound_power_fraction=f),
                  st.floats(100, 1500), st.floats(0.01, 0.4), st.floats(0.41, 1.0))
share = st.floats(0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(acc=parts, u=st.floats(-1.0, 2.0), c=st.floats(-1.0, 2.0))
def test_power_lies_between_idle_and_tdp(acc, u, c):
    p = power_w(acc, u, c)
    assert acc.idle_w - 1e-9 <= p <= acc.tdp_w + 1e-9


@settings(max_examples=200, deadline=None)
@given(acc=parts, u=st.floats(0.0, 1.0), c1=share, c2=share)
def test_a_larger_memory_bound_share_never_raises_power(acc, u, c1, c2):
    lo, hi = sorted((c1, c2))  # hi: more of the busy time compute-saturated, less memory-bound
    assert power_w(acc, u, lo) <= power_w(acc, u, hi) + 1e-9


@settings(max_examples=200, deadline=None)
@given(acc=parts, gpus=st.integers(1, 64), wall=st.floats(1e-3, 1e5), u=st.floats(0.0, 1.0), c=share)
def test_the_three_parts_add_up_to_the_energy(acc, gpus, wall, u, c):
    total = energy_j(acc, gpus, wall, u, c)
    idle = energy_j(acc, gpus, wall, 0.0)
    p = energy_by_phase_j(acc, total, idle, c)
    assert p["idle"] == pytest.approx(gpus * wall * acc.idle_w)
    assert min(p.values()) >= -1e-9 * total
    assert sum(p.values()) == pytest.approx(total, rel=1e-12)
    # the compute part is the TDP's dynamic share of the compute-saturated busy seconds, by hand
    assert p["compute_bound"] == pytest.approx(gpus * wall * u * min(max(c, 0), 1) * (acc.tdp_w - acc.idle_w),
                                               rel=1e-9, abs=1e-9 * total)


@settings(max_examples=100, deadline=None)
@given(u=st.floats(0.0, 1.0), c=share)
def test_a_part_without_a_streaming_figure_draws_the_tdp_when_busy(u, c):
    assert A100.memory_bound_power_fraction == 1.0
    assert busy_activity(A100, c) == 1.0
    assert power_w(A100, u, c) == A100.idle_w + (A100.tdp_w - A100.idle_w) * u


def test_a_streaming_second_draws_the_catalogued_watts():
    """A fully busy, fully memory-bound H200 draws fraction x 700 W: the measurement's 300 W."""
    assert power_w(H200, 1.0, 0.0) == pytest.approx(H200.memory_bound_power_fraction * H200.tdp_w)
    assert power_w(H200, 1.0, 0.0) == pytest.approx(300.0, rel=0.01)
    assert power_w(H200, 1.0, 1.0) == H200.tdp_w


@pytest.mark.parametrize("bad", [0, 0.0, -0.2, 1.5, float("nan"), float("inf"), "0.4", True, [0.4]])
def test_the_catalog_field_refuses_what_is_not_a_fraction(bad):
    with pytest.raises(InputError, match="memory_bound_fraction"):
        memory_bound_power_fraction_of({"memory_bound_fraction": bad}, idle_w=90, tdp_w=700, where="x")


def test_the_catalog_field_refuses_streaming_watts_below_idle_and_defaults_to_one():
    with pytest.raises(InputError, match="below the idle draw"):
        memory_bound_power_fraction_of({"memory_bound_fraction": 0.1}, idle_w=90, tdp_w=700, where="x")
    assert memory_bound_power_fraction_of(None, idle_w=90, tdp_w=700, where="x") == 1.0


def _run(acc, concurrency, prompt, output, requests=120):
    wl = generate(requests=requests, burst=True, prompt_tokens=prompt, output_tokens=output)
    return simulate(L8, ClusterSpec(accelerator=acc, gpus=1), ServingPlan(tp=1), wl,
                    max_concurrency=concurrency).summary


def test_h200_decode_power_by_hand_and_against_the_measurement():
    """Decode-dominated Llama-3-8B on one H200 (prompt 128, output 1024, 32 at a time). By hand:
    the compute-saturated GPU-seconds are the run's FLOPs, 2 x matmul weights per prompt token and
    per decode token plus causal prefill attention, at the sustained BF16 GEMM / attention rates;
    the rest of the busy time draws the streaming power. The paper measures decode on an H200 at
    137-300 W; the old model charged a busy GPU 700 W."""
    s = _run(H200, 32, 128, 1024)
    n = s["completed"]
    tokens = n * (128 + 1023)
    pairs = n * 128 * 129 / 2
    gemm = 2 * L8.matmul_params_active * tokens / (H200.sustained_peak("bf16") * H200.gemm_efficiency("bf16"))
    attn = (2 * L8.heads * (L8.qk_head_dim + L8.v_head_dim) * L8.layers * pairs
            / (H200.sustained_peak("bf16") * H200.efficiency.attention))
    busy_s = s["busy_fraction"] * s["makespan_s"]
    c = (gemm + attn) / busy_s
    assert 0.0 < c < 0.5  # decode: most of the busy time is not compute-saturated
    m = (H200.memory_bound_power_fraction * H200.tdp_w - H200.idle_w) / (H200.tdp_w - H200.idle_w)
    watts = H200.idle_w + (H200.tdp_w - H200.idle_w) * s["busy_fraction"] * (c + m * (1 - c))
    assert s["energy_j"] / s["makespan_s"] == pytest.approx(watts, rel=1e-9)
    # against the paper: at most a quarter above its 300 W top, far below the 700 W of the old model
    assert 137.0 <= watts <= 1.25 * 300.0
    assert s["energy_idle_j"] + s["energy_compute_bound_j"] + s["energy_memory_bound_j"] == pytest.approx(s["energy_j"])


def test_prefill_heavy_serving_draws_more_than_decode_heavy():
    """Compute-bound prefill runs the tensor cores: nearer the TDP than memory-bound decode."""
    decode = _run(H200, 32, 128, 1024)
    prefill = _run(H200, 32, 8000, 8)
    assert prefill["busy_fraction"] > 0.9 and decode["busy_fraction"] > 0.9
    w = lambda s: s["energy_j"] / s["makespan_s"]  # noqa: E731
    assert w(decode) < w(prefill) <= H200.tdp_w
    assert prefill["energy_compute_bound_j"] / prefill["energy_j"] > decode["energy_compute_bound_j"] / decode["energy_j"]


def test_cli_energy_keys_move_as_documented():
    """Through the CLI: on an H100 (a streaming figure) the energy is below the busy-fraction x TDP
    formula of the old model and splits into three parts adding up to it; on an A100 (no figure)
    it is that formula exactly and the parts are null."""
    args = ("serve", "--model", "llama-3-8b", "--burst", "--max-concurrency", "16", "--requests", "64",
            "--prompt-tokens", "256", "--output-tokens", "512", "--json")
    out = {}
    for gpu in ("h100-sxm", "a100-sxm-80gb"):
        r = run_cli(*args, "--gpu", gpu)
        assert r.returncode == 0, r.stderr
        out[gpu] = json.loads(r.stdout)["summary"]
    for gpu, acc in (("h100-sxm", get_accelerator("h100-sxm")), ("a100-sxm-80gb", A100)):
        s = out[gpu]
        old = s["gpus"] * s["makespan_s"] * (acc.idle_w + (acc.tdp_w - acc.idle_w) * s["busy_fraction"])
        if gpu == "a100-sxm-80gb":
            assert s["energy_j"] == pytest.approx(old, rel=1e-12)
            assert s["energy_idle_j"] is None and s["energy_memory_bound_j"] is None
        else:
            assert s["energy_j"] < 0.6 * old
            total = s["energy_idle_j"] + s["energy_compute_bound_j"] + s["energy_memory_bound_j"]
            assert math.isclose(total, s["energy_j"], rel_tol=1e-12)
            assert s["energy_j_per_token"] == pytest.approx(s["energy_j"] / s["output_tokens"])


def test_multimodel_totals_carry_the_three_parts():
    r = run_cli("serve", "--models", "examples/multimodel/two-models.yaml", "--gpu", "h100-sxm", "--gpus", "4", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)["summary"]
    keys = ("energy_idle_j", "energy_compute_bound_j", "energy_memory_bound_j")
    for k in keys:
        assert s[k] == pytest.approx(sum(m[k] for m in s["models"].values()))
    assert sum(s[k] for k in keys) == pytest.approx(s["energy_j"], rel=1e-12)
