"""Autoscaling replicas on a lagged metric, as a Kubernetes HPA (or KServe/Knative) scales a
model server, with the start-up delay of a new replica.

Every `interval_s` the autoscaler reads one number, the requests in flight (queued or running)
over the replicas, and asks for ceil(in flight / target) replicas, clamped to [min, max]. It
scales up at once (HPA's default scale-up stabilization is 0 s) but a new replica takes
`startup_s` (scheduling, image pull, loading the weights, CUDA-graph capture) before the router
may send it work. It scales down only to the highest recommendation of the last
`down_delay_s` (HPA's scale-down stabilization window, default 300 s); a replica removed stops
receiving requests and is released when its last request finishes. The metric is read only at
the ticks and replicas arrive late, so a load step overshoots, queues and, with short windows,
oscillates: the behaviour operators see.

Sources for the defaults: Kubernetes HPA documentation (sync period 15 s,
`--horizontal-pod-autoscaler-sync-period`; `behavior.scaleDown.stabilizationWindowSeconds` 300).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

#: Kubernetes HPA: metrics are evaluated every 15 s (controller sync period default)
HPA_SYNC_PERIOD_S = 15.0
#: Kubernetes HPA: scale-down stabilization window default (the highest recommendation of the last 300 s)
HPA_SCALE_DOWN_WINDOW_S = 300.0


@dataclass
class Autoscaler:
    min_replicas: int
    max_replicas: int
    target: float  # requests in flight per replica
    interval_s: float
    startup_s: float
    down_delay_s: float
    recent: deque = field(default_factory=deque)  # (t, recommendation) within the scale-down window
    ups: int = 0
    downs: int = 0

    def desired(self, t: float, in_flight: int) -> int:
        """Replicas wanted at tick t: the raw recommendation up at once, down only to the highest
        recommendation of the last `down_delay_s`."""
        raw = min(self.max_replicas, max(self.min_replicas, math.ceil(in_flight / self.target)))
        self.recent.append((t, raw))
        while self.recent and self.recent[0][0] < t - self.down_delay_s:
            self.recent.popleft()
        return max(r for _, r in self.recent)


@dataclass
class ReplicaClock:
    """When each replica group was held (started .. released), for GPU-hours, energy and cost."""

    alive_from: list[float | None]
    alive_s: list[float]

    @classmethod
    def start(cls, groups: int, initially: int) -> ReplicaClock:
        return cls([0.0 if g < initially else None for g in range(groups)], [0.0] * groups)

    def up(self, g: int, t: float) -> None:
        self.alive_from[g] = t

    def down(self, g: int, t: float) -> None:
        t0 = self.alive_from[g]
        if t0 is not None:
            self.alive_s[g] += t - t0
            self.alive_from[g] = None

    def close(self, t: float) -> None:
        for g in range(len(self.alive_from)):
            self.down(g, t)
