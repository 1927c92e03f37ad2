"""Serving memory splits start from the memory CUDA reports, not the datasheet size.

vLLM prints the budget it fills as "the current vLLM instance can use total_gpu_memory (79.22GiB)
x gpu_memory_utilization (0.90) = 71.29GiB" on an H100-80G (vllm-project/vllm PR #12126; the same
79.22 GiB in PR #10511's sanity check): torch's `mem_get_info` total, about 0.8 GiB under the
80 GiB of HBM3. The catalog's `memory_visible_gib` carries it (accelerators.yaml, h100-sxm)."""

from __future__ import annotations

import pytest

from parasim.cost.memory import kv_budget
from parasim.errors import InputError
from parasim.specs.catalog import accelerator_from_mapping, get_accelerator, get_model

GIB = 1024 ** 3


def test_vllm_budget_on_h100_is_the_printed_one():
    kvb = kv_budget(get_model("llama-3-8b"), get_accelerator("h100-sxm"), tp=1, pp=1, weights="bf16",
                    kv_dtype="bf16", block_size=16, gpu_memory_utilization=0.90, max_tokens=8192, max_batch=256)
    assert kvb.usable / GIB == pytest.approx(71.29, abs=0.01)
    assert kvb.hbm / GIB == 80.0  # the datasheet size is still what the part is reported as


def test_parts_without_a_figure_use_the_datasheet_size():
    a100 = get_accelerator("a100-sxm-80gb")
    assert a100.visible_memory_bytes is None
    assert a100.device_memory_bytes == a100.hbm_bytes


def test_visible_memory_is_below_the_datasheet_size():
    h100 = get_accelerator("h100-sxm")
    assert 0 < h100.hbm_bytes - h100.device_memory_bytes < 1 * GIB


def _mapping(**extra) -> dict:
    return {"id": "x", "name": "X", "hbm_gb": 80, "hbm_tb_s": 3.0, "link_gb_s": 100, "tdp_w": 500,
            "idle_w": 50, "price_usd_per_hour": 1.0, "peak_tflops": {"bf16": 500}, **extra}


@pytest.mark.parametrize("bad", [81, 0, -1, "79"])
def test_bad_catalog_value_names_the_field(bad):
    with pytest.raises(InputError) as e:
        accelerator_from_mapping(_mapping(memory_visible_gib=bad))
    assert e.value.field.endswith("memory_visible_gib")


def test_case_that_overrides_the_hbm_size_drops_the_catalogued_total():
    from parasim.specs.validation_case import _cluster

    cluster = _cluster({"accelerator": "h100-sxm", "gpus": 1, "overrides": {"hbm_gb": 94}}, "case")
    acc = cluster.accelerator
    assert acc.visible_memory_bytes is None and acc.device_memory_bytes == 94 * GIB
