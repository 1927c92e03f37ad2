"""The requests one run serves, as columns: a `Workload` (and `Request`, one row of it for small
hand-built workloads). Below both the trace reader (`serving.traces`) and the generators
(`serving.workload`), which each return one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from parasim.errors import InputError


@dataclass(frozen=True, kw_only=True)
class Request:
    """One request as a record (for building small workloads by hand and in tests)."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_id: int = -1
    prefix_tokens: int = 0


@dataclass(frozen=True, eq=False)
class Workload:
    arrival_s: np.ndarray  # float64, sorted ascending
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    prefix_id: np.ndarray  # int64, -1 = no shared prefix
    prefix_tokens: np.ndarray  # int64, 0..prompt_tokens
    trace: dict[str, Any] | None = None  # where a trace came from (serving.traces.read_trace)

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @classmethod
    def from_columns(cls, arrival_s: Any, prompt_tokens: Any, output_tokens: Any, prefix_id: Any = None,
                     prefix_tokens: Any = None, *, where: str = "workload") -> Workload:
        a = np.asarray(arrival_s, dtype=np.float64).reshape(-1)
        p = np.asarray(prompt_tokens, dtype=np.int64).reshape(-1)
        o = np.asarray(output_tokens, dtype=np.int64).reshape(-1)
        n = a.shape[0]
        pid = np.full(n, -1, np.int64) if prefix_id is None else np.asarray(prefix_id, dtype=np.int64).reshape(-1)
        pt = np.zeros(n, np.int64) if prefix_tokens is None else np.asarray(prefix_tokens, dtype=np.int64).reshape(-1)
        if n == 0:
            raise InputError(where, "no requests (empty workload)")
        if not (p.shape[0] == o.shape[0] == pid.shape[0] == pt.shape[0] == n):
            raise InputError(where, "columns have different lengths")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise InputError(f"{where}.arrival_s", "must be finite and >= 0")
        if np.any(p < 1):
            raise InputError(f"{where}.prompt_tokens", f"must be >= 1, got {int(p.min())}")
        if np.any(o < 1):
            raise InputError(f"{where}.output_tokens", f"must be >= 1, got {int(o.min())}")
        if np.any(pt < 0) or np.any(pt > p):
            raise InputError(f"{where}.prefix_tokens", "must be between 0 and prompt_tokens")
        pt = np.where(pid >= 0, pt, 0)
        order = np.argsort(a, kind="stable")
        if np.any(order != np.arange(n)):
            a, p, o, pid, pt = a[order], p[order], o[order], pid[order], pt[order]
        return cls(a, p, o, pid, pt)

    @classmethod
    def from_requests(cls, requests: Iterable[Request | Mapping[str, Any]]) -> Workload:
        rows = [r if isinstance(r, Request) else Request(**dict(r)) for r in requests]
        return cls.from_columns([r.arrival_s for r in rows], [r.prompt_tokens for r in rows],
                                [r.output_tokens for r in rows], [r.prefix_id for r in rows],
                                [r.prefix_tokens for r in rows])

    def head(self, n: int) -> Workload:
        return Workload(self.arrival_s[:n], self.prompt_tokens[:n], self.output_tokens[:n],
                        self.prefix_id[:n], self.prefix_tokens[:n], self.trace)

    def summary(self) -> dict[str, Any]:
        span = float(self.arrival_s[-1] - self.arrival_s[0])
        return {"requests": len(self), "prompt_tokens_mean": float(self.prompt_tokens.mean()),
                "output_tokens_mean": float(self.output_tokens.mean()), "arrival_span_s": span,
                "offered_requests_per_s": (len(self) - 1) / span if span > 0 else None,
                "shared_prefix_requests": int((self.prefix_id >= 0).sum())} | (
                    {"trace": self.trace} if self.trace else {})


def as_workload(requests: Workload | Iterable[Request | Mapping[str, Any]]) -> Workload:
    return requests if isinstance(requests, Workload) else Workload.from_requests(requests)
