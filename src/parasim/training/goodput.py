"""Time to train, not only step time: failures, checkpoints and restarts as a goodput fraction.

A synchronous job stops when any of its GPUs fails, so failures reach it as a Poisson process
with the job's mean time between failures M = (per-GPU MTBF) / GPUs. The job computes for tau
seconds, then checkpoints, which stops training for C seconds (the write, or with an async save
only the device-to-host snapshot); a failure loses the work since the last durable checkpoint and
costs R (restart, then the checkpoint load) before training resumes. Daly's exponential model
(J. T. Daly, "A higher order estimate of the optimum checkpoint interval for restart dumps",
FGCS 22(3), 2006) gives the expected wall time of one tau-second segment, failures during the
checkpoint and the restart included:

    M * exp(R / M) * (exp((tau + C) / M) - 1)

so goodput = tau / that (in [0, 1]) and time_to_train_s = tokens / tokens_per_s / goodput. The
checkpoint interval is the tau that maximises it, rounded to whole optimizer steps (checkpoints
are taken between steps); Young's sqrt(2 C M) and Daly's higher-order estimate are reported beside
the exact optimum. An async save's write still takes its time after the snapshot: the newest
durable checkpoint is that much older when a failure strikes, which is charged to every failure
(added to R), and saves are never closer than one write apart. Everything here is a pure function
of the model, the job's size, the step time and the stated assumptions (`Reliability`, whose
defaults are the catalog's specs/data/reliability.yaml).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from parasim.cost.memory import training_state_bytes
from parasim.errors import InputError
from parasim.specs import edge, reliability
from parasim.specs.model import ModelSpec

DAY_S = 86400.0
#: the smallest MTBF (GPU-hours) and bandwidth (Gbit/s) taken: below them the job's MTBF or a write
#: time leaves the range of floats, and no real job is near either
MIN_MTBF_GPU_HOURS = 1e-3
MIN_BW_GBPS = 1e-3
#: bisection halvings for the optimum interval: 2**-64 of the job's MTBF is below float resolution
_HALVINGS = 64


@dataclass(frozen=True, kw_only=True)
class Reliability:
    """The assumptions goodput rests on; `from_options` fills what a caller leaves out from the
    catalog. Bandwidths in Gbit/s as `--inter-node-gbps` is (decimal), the snapshot in GB/s."""

    mtbf_gpu_hours: float
    checkpoint_bw_gbps: float  # one node's write (and read) bandwidth to checkpoint storage
    storage_bw_gbps: float  # what the file system takes from the whole job at once
    restart_s: float  # failure -> training again, before the load: detection, rescheduling, init
    async_save: bool
    snapshot_gb_per_s: float  # device-to-host copy of a GPU's shard (async save)
    save_interval: int | None = None  # optimizer steps between checkpoints; None = the optimum

    def __post_init__(self) -> None:
        least = {"mtbf_gpu_hours": MIN_MTBF_GPU_HOURS, "checkpoint_bw_gbps": MIN_BW_GBPS, "storage_bw_gbps": MIN_BW_GBPS,
                 "snapshot_gb_per_s": MIN_BW_GBPS / 8, "restart_s": 0.0}
        for name, lo in least.items():
            value = edge.finite_float(name.replace("_", "-"), getattr(self, name), lo=lo)
            object.__setattr__(self, name, value)  # 600 and 600.0 print alike in the JSON
        edge.boolean("async-save", self.async_save)
        if self.save_interval is not None:
            edge.positive_int("save-interval", self.save_interval)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Reliability:
        """The catalog's assumptions, overridden by the options that are given (not None)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in reliability.defaults().items() if k in names}
        values.update({k: v for k, v in options.items() if k in names and v is not None})
        missing = sorted(names - set(values) - {"save_interval"})
        if missing:  # pragma: no cover - a catalog edit that drops an entry
            raise InputError(missing[0], "has no value in specs/data/reliability.yaml")
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class GoodputEstimate:
    goodput_fraction: float
    job_mtbf_s: float
    interruptions_per_day: float
    checkpoint_bytes: float
    checkpoint_write_s: float
    checkpoint_stall_s: float  # training stopped per checkpoint
    checkpoint_load_s: float
    recovery_s: float  # charged to each failure besides the lost segment: restart + load (+ async lag)
    checkpoint_interval_steps: int
    checkpoint_interval_s: float  # compute seconds between checkpoints
    optimal_interval_s: float  # the exact optimum of the model, before rounding to steps
    young_interval_s: float
    daly_interval_s: float
    lost_work_per_failure_s: float
    assumptions: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the pieces ----------------------------------------------------------------------------------
def checkpoint_bytes(model: ModelSpec, param_state: str = "megatron") -> float:
    """What a checkpoint holds as cost/memory.py holds the state: the weights and the optimizer
    (Megatron: 16-bit weights, fp32 master weights and the two Adam moments; other stacks as
    `param_state` stores them), not the gradients; each byte written once, by whichever GPU owns
    its shard."""
    state = training_state_bytes(float(model.params_total), dp=1, zero=0, param_state=param_state)
    return state.weights + state.optimizer


def storage_bytes_per_s(gpus: int, gpus_per_node: int, r: Reliability) -> float:
    """Every node writes its share at once (Megatron's fully parallel save, torch DCP), up to
    what the file system takes from the whole job."""
    nodes = math.ceil(gpus / gpus_per_node)
    return min(nodes * r.checkpoint_bw_gbps, r.storage_bw_gbps) * 1e9 / 8


def goodput_fraction(interval_s: float, stall_s: float, recovery_s: float, mtbf_s: float) -> float:
    """Useful over expected wall time of one segment (Daly's exponential model), in log space so a
    job that cannot progress (restart far beyond its MTBF) reads 0.0 rather than overflowing."""
    if interval_s <= 0:
        return 0.0
    x = (interval_s + stall_s) / mtbf_s
    log_expm1 = x + math.log(-math.expm1(-x))  # log(e^x - 1) without overflow
    log_g = math.log(interval_s / mtbf_s) - recovery_s / mtbf_s - log_expm1
    return min(1.0, math.exp(log_g)) if math.isfinite(log_g) else 0.0


def optimal_interval_s(stall_s: float, mtbf_s: float) -> float:
    """The tau that maximises `goodput_fraction` (R only scales it): u = tau/M solves
    u + C/M + log(1 - u) = 0, whose left side falls monotonically from C/M at u = 0."""
    c = stall_s / mtbf_s
    lo, hi = 0.0, 1.0
    for _ in range(_HALVINGS):
        mid = (lo + hi) / 2
        if mid >= 1.0:  # C far beyond M: the root is 1 - e^-(1+C/M), 1 to float precision
            break
        if mid + c + math.log1p(-mid) > 0:
            lo = mid
        else:
            hi = mid
    return lo * mtbf_s


def young_interval_s(stall_s: float, mtbf_s: float) -> float:
    """Young (CACM 17(9), 1974): the first-order optimum sqrt(2 C M)."""
    return math.sqrt(2 * stall_s * mtbf_s)


def daly_interval_s(stall_s: float, mtbf_s: float) -> float:
    """Daly (2006), eq. 37: the higher-order estimate, M itself once C reaches 2M."""
    if stall_s >= 2 * mtbf_s:
        return mtbf_s
    k = math.sqrt(stall_s / (2 * mtbf_s))
    return math.sqrt(2 * stall_s * mtbf_s) * (1 + k / 3 + k * k / 9) - stall_s


def lost_work_s(segment_s: float, mtbf_s: float) -> float:
    """Expected time into a segment when a failure strikes within it (about half the segment)."""
    y = segment_s / mtbf_s
    if y > 700:  # the segment never completes: a failure comes after M on average
        return mtbf_s
    return mtbf_s - segment_s / math.expm1(y) if y > 1e-9 else segment_s / 2


def time_to_train_s(tokens: float, tokens_per_s: float, goodput: float) -> float | None:
    """Wall seconds to train `tokens`; None when the job cannot progress (goodput 0 or next to it)."""
    wall = tokens / tokens_per_s / goodput if goodput > 0 else math.inf
    return wall if math.isfinite(wall) else None


# --- one plan --------------------------------------------------------------------------------------
def estimate(model: ModelSpec, *, gpus: int, gpus_per_node: int, step_time_s: float,
             r: Reliability, param_state: str = "megatron") -> GoodputEstimate:
    """Goodput of `gpus` GPUs training `model` at `step_time_s` per step, checkpointing every
    `r.save_interval` steps or at the best whole-step interval."""
    mtbf = r.mtbf_gpu_hours * 3600 / gpus
    size = checkpoint_bytes(model, param_state)
    write = size / storage_bytes_per_s(gpus, gpus_per_node, r)
    snapshot = size / gpus / (r.snapshot_gb_per_s * 1e9)
    lag = write if r.async_save else 0.0
    recovery = r.restart_s + write + lag  # the load reads what the write wrote, at the same rate
    base_stall = snapshot if r.async_save else write
    tau_opt = optimal_interval_s(base_stall, mtbf)

    def stall(k: int) -> float:  # an async save waits for the previous write to finish
        return base_stall + (max(0.0, write - k * step_time_s) if r.async_save else 0.0)

    if r.save_interval is not None:
        k = r.save_interval
    else:
        least = max(1, math.ceil(lag / step_time_s - 1e-9)) if r.async_save else 1
        k0 = tau_opt / step_time_s
        cands = sorted({max(least, math.floor(k0)), max(least, math.ceil(k0))})
        k = max(cands, key=lambda n: (goodput_fraction(n * step_time_s, stall(n), recovery, mtbf), -n))
    tau = k * step_time_s
    return GoodputEstimate(
        goodput_fraction=goodput_fraction(tau, stall(k), recovery, mtbf), job_mtbf_s=mtbf,
        interruptions_per_day=DAY_S / mtbf, checkpoint_bytes=size, checkpoint_write_s=write,
        checkpoint_stall_s=stall(k), checkpoint_load_s=write, recovery_s=recovery,
        checkpoint_interval_steps=k, checkpoint_interval_s=tau, optimal_interval_s=tau_opt,
        young_interval_s=young_interval_s(base_stall, mtbf), daly_interval_s=daly_interval_s(base_stall, mtbf),
        lost_work_per_failure_s=lost_work_s(tau + stall(k), mtbf) + lag, assumptions=asdict(r))


def result_keys(model: ModelSpec, *, gpus: int, gpus_per_node: int, step_time_s: float, tokens_per_s: float,
                r: Reliability, tokens: float | None, param_state: str = "megatron") -> dict[str, Any]:
    """The keys a training result carries (`train --json`, each `plan train` row's metrics): the
    goodput block, its fraction, the token budget and the time to train it (None without one)."""
    est = estimate(model, gpus=gpus, gpus_per_node=gpus_per_node, step_time_s=step_time_s, r=r,
                   param_state=param_state)
    return {"goodput": est.to_dict(), "goodput_fraction": est.goodput_fraction, "tokens": tokens,
            "time_to_train_s": time_to_train_s(float(tokens), tokens_per_s, est.goodput_fraction) if tokens else None}
