"""What "best" means: each objective turns a plan's metrics into one number to *minimise*.

Objectives are plain records in two string-keyed registries (training, serving). The same
records drive ranking and the Pareto front (`--pareto a,b` takes any two names of the registry).

Training (metrics = `parasim train --json`):
  tokens-per-s   tokens/s of the whole job                      (maximise)
  time-to-train  wall time to train `--tokens` tokens: tokens / tokens/s / goodput
                 (failures, checkpoints, restarts: training/goodput.py), shown in days (minimise)
  cost           $ to train `--tokens` tokens (GPU-hours of that wall time x $/GPU-hour of the catalog)
  mfu            model FLOPs utilisation                         (maximise)
  memory         peak memory per GPU                             (minimise)

Serving (metrics = the `summary` of `parasim serve --json`; plans missing the SLO are not ranked):
  goodput-per-gpu  requests/s that met both SLOs, per GPU        (maximise)
  cost             $ per million output tokens                    (minimise)
  energy           J per output token                             (minimise)
  latency          p99 TTFT + p99 TPOT x mean output tokens        (minimise; a p99-ish end-to-end)
  gpus             GPUs used                                      (minimise)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parasim.errors import InputError

INF = float("inf")


@dataclass(frozen=True)
class Objective:
    name: str
    metric: str  # the metric shown in tables
    maximise: bool
    value: Callable[[dict[str, Any], dict[str, Any]], float]  # (row, options) -> natural value
    unit: str = ""

    def natural(self, row: dict[str, Any], options: dict[str, Any]) -> float | None:
        """The row's value as shown (`objective_value`); None when it has none (a job that cannot
        progress has no time to train) or it is not a finite number."""
        try:
            v = float(self.value(row, options))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None
        return v if math.isfinite(v) else None

    def score(self, row: dict[str, Any], options: dict[str, Any]) -> float:
        """Smaller is better; missing/NaN values rank last."""
        v = self.natural(row, options)
        if v is None:
            return INF
        return -v if self.maximise else v


def _m(row: dict[str, Any], key: str) -> float:
    return float(row["metrics"][key])


def _train_seconds(row: dict[str, Any], opts: dict[str, Any]) -> float:
    """The plan's time_to_train_s (a job that cannot progress has none and ranks last)."""
    return float(row["time_to_train_s"])


TRAIN_OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("tokens-per-s", "tokens_per_s", True, lambda r, o: _m(r, "tokens_per_s"), "tok/s"),
    Objective("time-to-train", "time_to_train_days", False, lambda r, o: _train_seconds(r, o) / 86400, "days"),
    Objective("cost", "cost_usd", False,
              lambda r, o: _train_seconds(r, o) / 3600 * r["gpus"] * float(r["price_usd_per_hour"]), "$"),
    Objective("mfu", "mfu", True, lambda r, o: _m(r, "mfu")),
    Objective("memory", "peak_memory_gib_per_gpu", False, lambda r, o: _m(r, "peak_memory_gib_per_gpu"), "GiB"),
)}


def _s(row: dict[str, Any], key: str) -> float:
    return float(row["metrics"]["summary"][key])


def _latency(row: dict[str, Any], opts: dict[str, Any]) -> float:
    return _s(row, "ttft_p99_s") + _s(row, "tpot_p99_s") * float(opts.get("output_tokens_mean", 0.0))


SERVE_OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("goodput-per-gpu", "goodput_per_gpu", True, lambda r, o: r["goodput_per_gpu"], "req/s/GPU"),
    Objective("cost", "cost_usd_per_m_tokens", False, lambda r, o: _s(r, "cost_usd_per_m_tokens"), "$/M tok"),
    Objective("energy", "energy_j_per_token", False, lambda r, o: _s(r, "energy_j_per_token"), "J/tok"),
    Objective("latency", "latency_s", False, _latency, "s"),
    Objective("gpus", "gpus", False, lambda r, o: r["gpus"]),
)}


def get_objective(name: str, registry: dict[str, Objective], *, field: str = "objective") -> Objective:
    if name not in registry:
        raise InputError(field, f"unknown objective '{name}'; choose one of {', '.join(registry)}")
    return registry[name]


def parse_pareto(spec: str | None, registry: dict[str, Objective]) -> list[Objective]:
    """`a,b` -> two objectives of the registry (or none when spec is empty)."""
    if not spec:
        return []
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if len(names) != 2 or names[0] == names[1]:
        raise InputError("pareto", f"expected two different objectives 'a,b', got {spec!r}; "
                                   f"choose from {', '.join(registry)}")
    return [get_objective(n, registry, field="pareto") for n in names]
