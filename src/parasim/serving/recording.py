"""What a recorded serving run keeps for its timeline and figures: every iteration of every engine
instance, as columns, with the instance's place in the plan.

Recording is off by default. When on (`simulate(..., record=True)`), each instance appends one
plain tuple at an iteration's start and one at its end (`engine.Instance.rec` / `rec_end`); this
module turns those lists into numpy columns once, after the run, so the loop itself pays one list
append per event. Counters (KV blocks in use, running and waiting requests) are therefore sampled
at iteration boundaries: at a start after admission and allocation, at an end after finishes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

START_COLUMNS = ("t_s", "dt_s", "prefill_tokens", "decode_requests", "preempted", "running", "waiting", "kv_blocks")
END_COLUMNS = ("t_s", "running", "waiting", "kv_blocks")


@dataclass(frozen=True)
class InstanceRecord:
    """One engine instance's iterations. `starts[c]` / `ends[c]` are columns named as
    START_COLUMNS / END_COLUMNS, one row per iteration."""

    idx: int
    replica: int
    role: str  # mixed | prefill | decode
    engine: int  # virtual engine within its replica (pipeline micro-batch slot), 0 without PP
    kv_capacity_blocks: int
    max_batch: int
    starts: dict[str, np.ndarray]
    ends: dict[str, np.ndarray]

    @property
    def iterations(self) -> int:
        return int(self.starts["t_s"].size)


@dataclass(frozen=True)
class Recording:
    instances: list[InstanceRecord]
    pp: int  # pipeline stages per replica (each iteration of an instance is a trip through all of them)

    @property
    def iterations(self) -> int:
        return sum(i.iterations for i in self.instances)


def start(instances) -> None:
    """Turn recording on for these engine instances (before the loop runs)."""
    for inst in instances:
        inst.rec, inst.rec_end = [], []


def _columns(rows: list[tuple], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    a = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    return {n: (a[:, k] if n.endswith("_s") else a[:, k].astype(np.int64)) for k, n in enumerate(names)}


def collect(instances, pp: int, max_batch: int) -> Recording:
    """The recording of a finished run (the instances' lists as columns)."""
    out = []
    seen: dict[tuple[str, int], int] = {}
    for inst in instances:
        key = (inst.role, inst.replica)
        engine = seen.get(key, 0)
        seen[key] = engine + 1
        out.append(InstanceRecord(idx=inst.idx, replica=inst.replica, role=inst.role, engine=engine,
                                  kv_capacity_blocks=inst.kv.capacity, max_batch=max_batch,
                                  starts=_columns(inst.rec or [], START_COLUMNS),
                                  ends=_columns(inst.rec_end or [], END_COLUMNS)))
    return Recording(instances=out, pp=pp)
