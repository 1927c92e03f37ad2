"""The profile for software no other profile names: DeepSpeed-FastGen's Dynamic SplitFuse, or
the stall-free chunked rule most current engines default to, with parasim's defaults otherwise."""

from __future__ import annotations

import re

from parasim.engines.profile import ENGINES, EngineContext, EngineProfile

_FASTGEN = re.compile(r"fastgen|deepspeed|\bmii\b", re.IGNORECASE)


@ENGINES.register
class DefaultProfile(EngineProfile):
    """parasim's generic engine: matches any software text (registered last)."""

    name = "default"

    @classmethod
    def matches(cls, software: str) -> bool:
        return True

    def apply(self, ctx: EngineContext) -> None:
        fastgen = bool(_FASTGEN.search(ctx.software))
        sched = ctx.scheduler("splitfuse" if fastgen else "sarathi")
        ctx.kw.update(scheduler=sched, max_batch=ctx.stated.get("max_batch"))
        ctx.choose(f"DeepSpeed-FastGen: Dynamic SplitFuse ({sched}), parasim defaults otherwise" if fastgen else
                   f"unknown software '{ctx.software}': scheduler {sched}, parasim defaults", "scheduler", sched)
