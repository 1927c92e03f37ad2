"""Schedulers, registered by name. Adding one: a small class in its own file, plus its import and
`SCHEDULERS.register` line here."""

from __future__ import annotations

from parasim.registry import Registry
from parasim.serving.schedulers.base import Batch, Scheduler
from parasim.serving.schedulers.batchllm import BatchLLM
from parasim.serving.schedulers.disagg import Disagg
from parasim.serving.schedulers.policies import Continuous, SGLang, Sarathi, SplitFuse, Static, VLLM

SCHEDULERS: Registry[type[Scheduler]] = Registry("scheduler")
for _cls in (Static, Continuous, VLLM, Sarathi, SplitFuse, SGLang, Disagg, BatchLLM):
    SCHEDULERS.register(_cls)

__all__ = ["SCHEDULERS", "Batch", "Scheduler"]
