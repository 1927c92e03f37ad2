"""Schedulers, registered by name. Adding one: write a small class, add it to `_BUILTIN`."""

from __future__ import annotations

import difflib

from parasim.errors import InputError
from parasim.serving.schedulers.base import Batch, Scheduler
from parasim.serving.schedulers.batchllm import BatchLLM
from parasim.serving.schedulers.disagg import Disagg
from parasim.serving.schedulers.policies import Continuous, SGLang, Sarathi, SplitFuse, Static, VLLM


class Registry(dict):
    """name -> class; rejects duplicates, and unknown names with the close matches."""

    def register(self, cls: type[Scheduler]) -> type[Scheduler]:
        if cls.name in self:
            raise ValueError(f"scheduler '{cls.name}' registered twice")
        self[cls.name] = cls
        return cls

    def unknown(self, name: str) -> InputError:
        close = difflib.get_close_matches(str(name).lower(), list(self), n=2, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return InputError("scheduler", f"unknown scheduler '{name}'{hint}; choose one of {', '.join(self)}")

    def get_cls(self, name: str) -> type[Scheduler]:
        if name not in self:
            raise self.unknown(name)
        return self[name]


SCHEDULERS = Registry()
_BUILTIN = (Static, Continuous, VLLM, Sarathi, SplitFuse, SGLang, Disagg, BatchLLM)
for _cls in _BUILTIN:
    SCHEDULERS.register(_cls)

__all__ = ["SCHEDULERS", "Batch", "Scheduler", "Registry"]
