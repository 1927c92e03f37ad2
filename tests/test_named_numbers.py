"""#17 item 4: numbers with names and sources, each rule in one place."""

from __future__ import annotations

from dataclasses import replace

import pytest

from parasim.cost.attn_shape import FA2, FA3
from parasim.cost.dtypes import BYTES_PER_ELEMENT, attention_dtype
from parasim.cost.layer import ATTN_BWD_EFF_RATIO, ATTN_BWD_FLOPS_RATIO
from parasim.cost.roofline import attention_time_s
from parasim.errors import InputError
from parasim.search import plan_serve
from parasim.serving.plan import ServingPlan
from parasim.serving.schedulers import SCHEDULERS
from parasim.serving.simulate import plan_pools
from parasim.specs import catalog
from parasim.specs.shipped import load_shipped
from parasim.specs.accelerator import Efficiency
from parasim.specs.catalog import default_cluster, get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan
from parasim.training.step import simulate_step


@pytest.mark.parametrize("dtype", sorted(BYTES_PER_ELEMENT))
def test_attention_runs_in_16_bit_or_wider(dtype):
    """8- and 4-bit formats run attention in bf16; 16- and 32-bit formats keep their own."""
    expected = dtype if dtype in ("fp32", "tf32", "bf16", "fp16") else "bf16"
    assert attention_dtype(dtype) == expected


@pytest.mark.parametrize("low", ["fp8", "int8", "int4", "fp4"])
def test_attention_time_of_8_bit_equals_bf16(low):
    """The roofline applies the rule: an 8-bit attention takes the bf16 time, not the 8-bit peak's."""
    acc = get_accelerator("h100-sxm")
    flops, bytes_ = 3e13, 1e9
    assert acc.peak("fp8") > acc.peak("bf16")  # otherwise the check below could not fail
    assert attention_time_s(flops, bytes_, acc, dtype=low) == attention_time_s(flops, bytes_, acc, dtype="bf16")


# --- FA2-generation attention: a catalog field with its source, not a list of part ids ------------
def _entry(acc_id: str) -> dict:
    return next(dict(a) for a in load_shipped("accelerators.yaml")["accelerators"] if a["id"] == acc_id)


def _attention_s(acc, attention: str) -> float:
    plan = TrainingPlan(tp=1, dp=8, micro_batch=1, global_batch=8, seq_len=4096, attention=attention)
    return simulate_step(get_model("llama-3-8b"), ClusterSpec(accelerator=acc, gpus=8), plan).layer.parts["attention"]


def test_hopper_fa2_ratio_follows_from_the_two_cited_measurements():
    """FA2 paper: 335 TFLOP/s forward + backward on an H100; FA3: 757 TFLOP/s forward [wh-roadmap].
    With the backward's 2.5x FLOPs at 0.8 of the forward's rate, FA2's forward is 394.8 TFLOP/s."""
    fa2_fwd = 335e12 * (1 + ATTN_BWD_FLOPS_RATIO / ATTN_BWD_EFF_RATIO) / (1 + ATTN_BWD_FLOPS_RATIO)
    h100 = get_accelerator("h100-sxm")
    assert h100.efficiency.attention_fa2_ratio == pytest.approx(fa2_fwd / 757e12, rel=1e-5)
    assert "335" in h100.sources["efficiency.attention_fa2_ratio"]
    assert "757" in h100.sources["efficiency.attention_fa2_ratio"]


def test_every_catalog_ratio_below_one_names_its_source():
    for acc in catalog.accelerators().values():
        if acc.efficiency.attention_fa2_ratio != 1.0:
            assert acc.sources.get("efficiency.attention_fa2_ratio"), acc.id


def test_new_part_without_the_field_gets_the_documented_fallback():
    """A new Hopper-class entry that does not give the ratio runs FA2 at its catalogued attention
    rate (1.0), not at a ratio copied from H100 because of its name."""
    d = _entry("h100-sxm")
    d["id"], d["name"] = "h100-next", "Hopper-class newcomer"
    d["efficiency"] = {k: v for k, v in d["efficiency"].items() if k != "attention_fa2_ratio"}
    new = catalog.accelerator_from_mapping(d)
    assert new.efficiency.attention_fa2_ratio == 1.0
    # the two kernels differ only by their own curves' shapes at this 4k causal sequence (cost.attn_shape)
    s, ko = 4096, new.efficiency.kernel_overhead_s
    shape = FA2.time_scale(s * (s + 1) / 2, s) / FA3.time_scale(s * (s + 1) / 2, s)
    assert (_attention_s(new, "flash2") - ko) == pytest.approx((_attention_s(new, "flash") - ko) * shape, rel=1e-12)


def test_flash2_divides_the_attention_time_by_the_catalog_ratio():
    h100 = get_accelerator("h100-sxm")
    ratio = 0.25
    slow = h100.with_(efficiency=replace(h100.efficiency, attention_fa2_ratio=ratio))
    cited = h100.efficiency.attention_fa2_ratio
    assert _attention_s(slow, "flash2") == pytest.approx(_attention_s(h100, "flash2") * cited / ratio, rel=1e-12)
    assert _attention_s(get_accelerator("a100-sxm-80gb"), "flash2") == _attention_s(get_accelerator("a100-sxm-80gb"), "flash")


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_ratio_outside_zero_one_is_refused(bad):
    with pytest.raises(InputError, match="attention_fa2_ratio"):
        Efficiency(attention_fa2_ratio=bad)


# --- the planner's pruner reads the simulator's defaults ------------------------------------------
def _bounds(max_len: int, prompt: float = 1000.0):
    plan_serve._pool_bounds.cache_clear()
    return plan_serve._pool_bounds(get_model("llama-3-8b"), "h100-sxm", 1, 1, "bf16", "bf16", prompt, 200.0, max_len)


def test_pruner_kv_capacity_is_the_simulators():
    """The pruner drops a layout as `memory_kv` exactly when the longest request exceeds the KV
    tokens the simulator gives the default plan on it."""
    pool = plan_pools(get_model("llama-3-8b"), default_cluster("h100-sxm", 1),
                      ServingPlan(weights="bf16", kv_dtype="bf16"))[0][0]
    kv_tokens = pool.blocks * ServingPlan().block_size
    assert _bounds(kv_tokens)[0] is None
    assert _bounds(kv_tokens + 1)[0] == "memory_kv"


def test_pruner_follows_the_default_schedulers_batch(monkeypatch):
    """Lowering the default scheduler's batch limit in the simulator lowers the pruner's throughput
    bound: the pruner does not keep its own copy of the number."""
    policy = SCHEDULERS.get(ServingPlan().scheduler)
    wide = _bounds(8192, prompt=100.0)[2]
    monkeypatch.setattr(policy, "default_max_batch", 4)
    narrow = _bounds(8192, prompt=100.0)[2]
    plan_serve._pool_bounds.cache_clear()
    assert narrow < wide / 2
