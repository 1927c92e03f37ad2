"""Deciding is separate from applying: a scheduler's schedule() reads the engine and changes
nothing, for every scheduler, on hostile little workloads (tight KV, prefixes, preemptions)."""

from __future__ import annotations

from array import array

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.serving import ServingPlan, Workload, simulate
from parasim.serving.schedulers import SCHEDULERS
from parasim.serving.schedulers.batchllm import prefix_group_order
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

MODEL = get_model("llama-3-8b")
CLUSTER = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=2)


def snapshot(inst) -> tuple:
    """Everything an engine instance holds that a batch decision could touch."""
    kv = inst.kv
    cols = tuple(bytes(v) for v in vars(inst.st).values() if isinstance(v, array))
    return (list(inst.waiting), list(inst.prefilling), inst.n_dec, inst.decode_ctx_sum, inst.decode_step, list(inst.decoders_by_phase),
            list(inst.finishing), list(inst.join_order), list(inst.first_step_pending), inst.outstanding, inst.queue_unordered,
            kv.free, kv.evictable, {k: list(v) for k, v in kv.entries.items()}, list(kv.lru), kv.prefix_hits, cols)


workloads = hst.integers(min_value=2, max_value=14).flatmap(lambda n: hst.tuples(
    hst.lists(hst.floats(min_value=0, max_value=0.05), min_size=n, max_size=n),
    hst.lists(hst.integers(min_value=1, max_value=900), min_size=n, max_size=n),
    hst.lists(hst.integers(min_value=1, max_value=60), min_size=n, max_size=n),
    hst.lists(hst.integers(min_value=-1, max_value=1), min_size=n, max_size=n)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=workloads, sched=hst.sampled_from(sorted(SCHEDULERS)), util=hst.sampled_from([0.203, 0.9]))
def test_schedule_changes_no_engine_state(w, sched, util):
    gaps, prompts, outputs, pids = w
    wl = Workload.from_columns(np.cumsum(gaps), prompts, outputs, pids,
                               [min(p - 1, 200) if g >= 0 else 0 for p, g in zip(prompts, pids)])
    # weights take ~16 GB of 86: util 0.203 leaves ~2,300 tokens of KV cache (preemptions)
    plan = ServingPlan(scheduler=sched, token_budget=512, max_batch=64, gpu_memory_utilization=util,
                       **(dict(prefill_gpus=1, decode_gpus=1) if sched == "disagg" else {}))
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        for cls in set(SCHEDULERS.values()):
            if "schedule" in vars(cls):
                def checked(self, inst, _inner=vars(cls)["schedule"]):
                    before = snapshot(inst)
                    batch = _inner(self, inst)
                    assert snapshot(inst) == before
                    calls.append(1)
                    return batch
                mp.setattr(cls, "schedule", checked)
        s = simulate(MODEL, CLUSTER, plan, wl).summary
    assert calls and s["completed"] + s["dropped"] == len(prompts)


class Columns:
    def __init__(self, prompt, output, prefix, emitted):
        self.prompt_tokens, self.output_tokens, self.prefix_id, self.emitted = prompt, output, prefix, emitted


def test_prefix_group_order_by_hand():
    """Preempted first (as queued); then the larger prefix group, decode-heavy first; then the
    smaller group; requests without a prefix last, in queue order."""
    st = Columns(prompt=[100, 100, 100, 100, 100, 100, 50],
                 output=[10, 10, 50, 30, 10, 10, 10],
                 prefix=[-1, 7, 7, 7, 3, 3, -1],
                 emitted=[0, 0, 0, 0, 0, 0, 4])
    assert prefix_group_order(st, [0, 1, 2, 3, 4, 5, 6]) == [6, 2, 3, 1, 4, 5, 0]
