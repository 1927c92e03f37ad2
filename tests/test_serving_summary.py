"""The serving summary is one typed record (serving/summary.py) for a run and for a plan that
cannot run: the same keys either way, each documented in docs/metrics.md, every value a plain
JSON type."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.serving import SLO, ServingPlan, generate, simulate
from parasim.serving.summary import ServingSummary
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

L8, L70 = get_model("llama-3-8b"), get_model("llama-3-70b")
H100 = get_accelerator("h100-sxm")
FIELDS = [f.name for f in fields(ServingSummary)]
JSON_TYPES = (type(None), bool, int, float, str)  # exact types: numpy scalars are not JSON values


def documented_summary_keys() -> set[str]:
    """Keys of the `summary` table in docs/metrics.md, with `x_{a,b}_s` and `x_{…}_s` expanded."""
    text = (Path(__file__).parents[1] / "docs" / "metrics.md").read_text()
    section = text.split("## `summary`", 1)[1].split("\n## ", 1)[0]
    stats = ("mean", "p50", "p90", "p99")
    keys = set()
    for cell in re.findall(r"^\| (`[^|]+`) \|", section, flags=re.M):
        for key in re.findall(r"`([^`]+)`", cell):
            m = re.fullmatch(r"(\w*)\{([^}]*)\}(\w*)", key)
            alts = stats if m and m.group(2) == "…" else (m.group(2).split(",") if m else None)
            keys |= {f"{m.group(1)}{a}{m.group(3)}" for a in alts} if m else {key}
    return keys


def test_every_documented_key_is_a_field_and_every_field_is_documented():
    documented = documented_summary_keys()
    # `capacity_requests_per_s` is added by `serve --capacity` beside the run's own summary
    assert documented - {"capacity_requests_per_s"} == set(FIELDS)
    assert {"ttft_p90_s", "slo_ratio_itl", "unservable"} <= documented  # the expansion worked


def test_an_infeasible_plan_and_a_run_have_the_same_keys_in_the_same_order():
    cl = ClusterSpec(accelerator=H100, gpus=2)
    wl = generate(requests=20, rate=5, prompt_tokens=4096, output_tokens=512)
    slo = SLO(ttft_s=1.0, tpot_s=0.05)
    bad = simulate(L70, cl, ServingPlan(tp=2, gpu_memory_utilization=0.84), wl, slo=slo)
    good = simulate(L8, cl, ServingPlan(tp=1), wl, slo=slo)
    assert not bad.feasible and good.feasible
    assert list(bad.summary) == list(good.summary) == FIELDS
    # nothing ran: every request unserved, attainment and goodput 0 with a per-request SLO
    s = bad.summary
    assert (s["completed"], s["dropped"], s["unservable"], s["gpus"]) == (0, 20, 20, 2)
    assert s["slo_attainment"] == 0.0 and s["slo_met"] is False and s["ttft_p99_s"] is None


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tp=hst.sampled_from([1, 2]), replicas=hst.integers(1, 2),
       scheduler=hst.sampled_from(["vllm", "sarathi", "static", "continuous"]),
       requests=hst.integers(1, 30), rate=hst.floats(0.5, 50), prompt=hst.integers(1, 2000),
       output=hst.integers(1, 300), slo_ttft=hst.one_of(hst.none(), hst.floats(0.01, 5)),
       slo_itl=hst.one_of(hst.none(), hst.floats(0.001, 1)))
def test_summary_values_are_plain_json_types(tp, replicas, scheduler, requests, rate, prompt, output, slo_ttft,
                                             slo_itl):
    wl = generate(requests=requests, rate=rate, prompt_tokens=prompt, output_tokens=output)
    res = simulate(L8, ClusterSpec(accelerator=H100, gpus=tp * replicas),
                   ServingPlan(tp=tp, replicas=replicas, scheduler=scheduler), wl,
                   slo=SLO(ttft_s=slo_ttft, itl_s=slo_itl))
    assert list(res.summary) == FIELDS
    odd = {k: type(v).__name__ for k, v in res.summary.items() if type(v) not in JSON_TYPES}
    assert not odd
    assert res.summary["dropped"] >= res.summary["unservable"]
    assert res.summary["completed"] + res.summary["dropped"] <= res.summary["requests"] == requests
