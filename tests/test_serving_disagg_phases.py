"""Disaggregation with each phase's own parallelism (DistServe): per-phase PP in the plan, the
pools, launch commands and the planner's space; the interference colocation causes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from parasim.cost.memory import kv_budget
from parasim.engines.launch import launch_for
from parasim.errors import InputError
from parasim.search.prune import Pruned
from parasim.search.space import serve_layouts
from parasim.serving.plan import ServingPlan
from parasim.serving.simulate import plan_pools, simulate
from parasim.serving.workload import generate
from parasim.specs.catalog import default_cluster, get_model

MODEL = "llama-3-8b"


def _disagg(**kw) -> ServingPlan:
    return ServingPlan(scheduler="disagg", **kw)


def test_each_pool_takes_its_own_pp():
    """A prefill pool of 2-stage instances and a decode pool of 1-stage ones: instance counts are
    the pool's GPUs over tp*pp, and each stage's KV share is its own pool's memory model."""
    model, cluster = get_model(MODEL), default_cluster("h100-sxm", 8)
    plan = _disagg(prefill_gpus=4, prefill_tp=1, prefill_pp=2, decode_gpus=4, decode_tp=2, decode_pp=1)
    (pre, dec), gpus = plan_pools(model, cluster, plan)
    assert gpus == 8
    assert (pre.tp, pre.pp, pre.replicas) == (1, 2, 2)
    assert (dec.tp, dec.pp, dec.replicas) == (2, 1, 2)
    r = plan.resolved(model)
    kvb = kv_budget(model, cluster.accelerator, tp=1, pp=2, weights=r.weights, kv_dtype=r.kv,
                    block_size=r.block_size, gpu_memory_utilization=r.gpu_memory_utilization,
                    max_tokens=pre.token_budget, max_batch=pre.max_batch, act_bytes=2)
    assert pre.blocks == kvb.blocks // 2


def test_phase_pp_defaults_to_pp():
    model, cluster = get_model(MODEL), default_cluster("h100-sxm", 8)
    (pre, dec), _ = plan_pools(model, cluster, _disagg(pp=2, tp=1, prefill_gpus=4, decode_gpus=4))
    assert pre.pp == dec.pp == 2


@pytest.mark.parametrize("kw, field", [
    ({"prefill_gpus": 3, "prefill_tp": 1, "prefill_pp": 2, "decode_gpus": 4}, "prefill_gpus"),
    ({"prefill_gpus": 4, "decode_gpus": 2, "decode_tp": 2, "decode_pp": 2}, "decode_gpus"),
])
def test_a_pool_must_divide_into_its_instances(kw, field):
    with pytest.raises(InputError) as e:
        plan_pools(get_model(MODEL), default_cluster("h100-sxm", 8), _disagg(**kw))
    assert e.value.field == field


def test_phase_pp_needs_the_disagg_scheduler():
    with pytest.raises(InputError) as e:
        ServingPlan(prefill_pp=2)
    assert e.value.field == "prefill_pp"


def test_plans_without_phase_pp_map_as_before():
    """Byte-identical JSON for every plan that does not use the new fields."""
    assert "prefill_pp" not in ServingPlan().to_mapping()
    assert _disagg(prefill_pp=2).to_mapping()["prefill_pp"] == 2


def test_vllm_launch_gives_each_pool_its_own_pp():
    model, cluster = get_model(MODEL), default_cluster("h100-sxm", 8)
    plan = _disagg(prefill_gpus=4, prefill_tp=2, prefill_pp=2, decode_gpus=4, decode_tp=4, decode_pp=1)
    cmds = [c for c in launch_for("vllm", model, cluster, plan).commands if "vllm serve" in c]
    pre = [c for c in cmds if "--pipeline-parallel-size 2" in c]
    assert len(pre) == 1 and "--tensor-parallel-size 2" in pre[0]
    assert any("--tensor-parallel-size 4" in c and "--pipeline-parallel-size" not in c for c in cmds)


def test_planner_space_has_per_phase_pp():
    model, cluster = get_model(MODEL), default_cluster("h100-sxm", 8)
    lay = list(serve_layouts(model, cluster, max_gpus=8, tps=(1, 2), pps=(1, 2), precisions=(("bf16", "bf16"),),
                             pruned=Pruned(), disagg=("disagg",)))
    pairs = {(d["prefill_pp"], d["decode_pp"]) for d in lay if "prefill_pp" in d}
    assert pairs == {(1, 1), (1, 2), (2, 1), (2, 2)}
    for d in lay:
        if "prefill_pp" in d:  # every split divides into whole instances
            assert d["prefill_gpus"] % (d["prefill_tp"] * d["prefill_pp"]) == 0
            assert d["decode_gpus"] % (d["decode_tp"] * d["decode_pp"]) == 0
            assert d["prefill_gpus"] + d["decode_gpus"] <= 8


def test_cli_phase_pp_in_json_and_bad_input_exits_2():
    base = [sys.executable, "-m", "parasim", "serve", "--model", MODEL, "--gpu", "h100-sxm", "--gpus", "8",
            "--rate", "2", "--prompt-tokens", "500", "--output-tokens", "50", "--requests", "40", "--json"]
    ok = subprocess.run(base + ["--scheduler", "disagg", "--prefill-gpus", "4", "--prefill-tp", "1", "--prefill-pp",
                                "2", "--decode-gpus", "4"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["inputs"]["plan"]["prefill_pp"] == 2
    bad = subprocess.run(base + ["--prefill-pp", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "prefill_pp" in bad.stderr and "Traceback" not in bad.stderr


def test_colocation_interference_shows_in_itl_tail():
    """DistServe's motivation: in a colocated engine a prefill iteration stretches the decode
    steps it joins, so the inter-token gaps' tail is longer than in a decode-only pool on the same
    GPUs and load, whose gaps are decode steps only (near its median TPOT)."""
    model, cluster = get_model("opt-13b"), default_cluster("a100-sxm-80gb", 2)
    wl = generate(requests=300, rate=4.0, seed=0, prompt_tokens=161, output_tokens=338, length_dist="lognormal",
                  length_sigma=0.5, max_total_tokens=model.max_seq_len)
    colo = simulate(model, cluster, ServingPlan(scheduler="vllm", replicas=2), wl).summary
    dis = simulate(model, cluster, _disagg(prefill_gpus=1, decode_gpus=1), wl).summary
    assert colo["itl_p99_s"] > dis["itl_p99_s"]
    assert dis["itl_p99_s"] < 1.5 * dis["tpot_p50_s"]
