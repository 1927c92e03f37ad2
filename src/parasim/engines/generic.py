"""The profile for software no other profile names: the stall-free chunked rule most current
engines default to, with parasim's defaults otherwise (DeepSpeed-FastGen has its own profile,
engines/fastgen.py)."""

from __future__ import annotations

from parasim.engines.profile import ENGINES, EngineContext, EngineProfile


@ENGINES.register
class DefaultProfile(EngineProfile):
    """parasim's generic engine: matches any software text (registered last)."""

    name = "default"

    @classmethod
    def matches(cls, software: str) -> bool:
        return True

    def apply(self, ctx: EngineContext) -> None:
        sched = ctx.scheduler("sarathi")
        ctx.kw.update(scheduler=sched, max_batch=ctx.stated.get("max_batch"))
        ctx.choose(f"unknown software '{ctx.software}': scheduler {sched}, parasim defaults", "scheduler", sched)
