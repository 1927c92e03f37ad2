"""One interface for every serving engine's defaults: `EngineProfile`, its registry `ENGINES`,
and the `EngineContext` a profile fills.

A profile turns "this engine, this release, these stated flags" into ServingPlan fields. It is
handed the plan fields decided so far (`ctx.kw`), the software text and the source text where
flags may be stated, and it records every default it takes as a `Choice` (the plan field, the
value, and the sentence the validation report prints). The same profiles serve validation cases
(`parasim.validation.serving.case_plan`) and `parasim serve --engine NAME[==VERSION]`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from parasim.cost.memory import (MAX_ACTIVATION_TOKENS, RUNTIME_RESERVED_BYTES, activation_workspace_bytes,
                                 weight_bytes_per_gpu)
from parasim.registry import Registry
from parasim.serving.plan import ServingPlan
from parasim.serving.workload import Workload
from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.model import ModelSpec


class Choice(str):
    """A default a profile chose: the sentence the report prints, carrying the plan `field` it
    decides and the `value` taken, so callers and tests read the data, not the English."""

    field: str
    value: Any

    def __new__(cls, text: str, field: str = "", value: Any = None) -> Choice:
        self = super().__new__(cls, text)
        self.field, self.value = field, value
        return self

    def __reduce__(self):  # process pools pickle case results
        return (Choice, (str(self), self.field, self.value))


@dataclass
class EngineContext:
    """What a profile reads (the engine's software text, a source that may state flags, the model,
    the GPU, the plan fields a user or case stated) and what it fills (`kw`, `choices`)."""

    software: str
    source: str
    model: ModelSpec
    acc: AcceleratorSpec
    stated: dict[str, Any]  # plan fields given explicitly (None = open); names as ServingPlan's
    kw: dict[str, Any]  # ServingPlan fields decided so far
    workload: Callable[[], Workload]  # the run's requests (built on demand: some defaults depend on lengths)
    server_tp: int = 1  # the engine's own --tp, which some defaults follow (kw's tp may become 1 under DP attention)
    choices: list[Choice] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Where a source states engine flags: the source and the software text."""
        return self.source + " " + self.software

    def choose(self, text: str, field: str = "", value: Any = None) -> None:
        self.choices.append(Choice(text, field, value))

    def scheduler(self, engine_rule: str) -> str:
        """The engine's own scheduling rule, unless a scheduler other than the format's default
        `continuous` was stated (e.g. the static batching of the pre-0.10 TensorRT-LLM pages)."""
        stated = self.stated.get("scheduler")
        return engine_rule if not stated or stated == "continuous" else stated

    def kv_dtype_of(self, kv_dtype: str | None = None) -> str:
        """The cache precision a plan with these weights and `kv_dtype` (default: kw's) runs."""
        return ServingPlan(weights=self.kw["weights"], kv_dtype=kv_dtype if kv_dtype else self.kw.get("kv_dtype")).kv

    def utilization_leaving(self, kv_bytes: float) -> float:
        """The gpu_memory_utilization under which the simulator's memory split (weights, activations
        of a `token_budget` forward with `max_batch` logit rows, runtime reserve) leaves `kv_bytes`
        of KV per GPU: how an engine that sizes its KV pool its own way is handed to the simulator."""
        kw = self.kw
        w = weight_bytes_per_gpu(self.model, tp=kw["tp"], pp=kw["pp"], weights=kw["weights"], ep=kw.get("ep", 1))
        act = activation_workspace_bytes(self.model, tp=kw["tp"], tokens=min(kw["token_budget"], MAX_ACTIVATION_TOKENS),
                                         logit_rows=kw["max_batch"], act_bytes=2.0)
        return min(1.0, (kv_bytes + w + act + RUNTIME_RESERVED_BYTES) / self.acc.device_memory_bytes)

    def auto_kv_dtype(self, engine: str) -> str:
        """--kv-cache-dtype auto (vLLM's and SGLang's default) stores the cache in the model's dtype,
        whatever the weights' quantization; an FP8 cache has to be asked for."""
        fp8 = bool(_FP8_KV.search(self.text))
        dtype = "fp8" if fp8 else ServingPlan(weights=self.kw["weights"]).act_dtype
        self.choose(f"kv_cache {dtype} (" + ("--kv-cache-dtype fp8 in the source)" if fp8 else
                                             f"{engine}'s --kv-cache-dtype auto: the model's dtype; not in the source)"),
                    "kv_dtype", dtype)
        return dtype


_FP8_KV = re.compile(r"kv[-_]cache[-_]dtype\s*[=:]?\s*fp8", re.IGNORECASE)


class EngineProfile:
    """One serving engine's defaults. Subclasses set `name` (the registry key and `--engine` name),
    `pattern` (how a case's free-text `software` names it) and `releases` (the (major, minor)
    range whose defaults the module knows), and implement `apply`."""

    name: ClassVar[str] = ""
    pattern: ClassVar[re.Pattern[str] | None] = None
    releases: ClassVar[tuple[tuple[int, int], tuple[int, int]] | None] = None
    #: an unstated cache is fp8 with fp8 weights (TensorRT-LLM's FP8 configs quantize it too);
    #: engines whose --kv-cache-dtype auto keeps the model's dtype set this False
    fp8_cache_with_fp8_weights: ClassVar[bool] = True
    #: the mean TPOT a source that does not say is read as: "token" (a /metrics histogram) or "request"
    tpot_basis: ClassVar[str] = "request"

    @classmethod
    def matches(cls, software: str) -> bool:
        return cls.pattern is not None and bool(cls.pattern.search(software))

    @classmethod
    def attention_dp(cls, text: str, tp: int, software: str = "") -> tuple[int, int] | None:
        """(DP ranks, the GPUs they span) when `text` states data-parallel attention; None if not.
        `software` is the case's software text alone (a release may change what a flag implies)."""
        return None

    def apply(self, ctx: EngineContext) -> None:
        raise NotImplementedError


#: every engine profile, in the order a case's software text is matched against them
ENGINES: Registry[type[EngineProfile]] = Registry("engine")


def triton_moe_gemm(ctx: EngineContext) -> None:
    """vLLM's and SGLang's routed experts run the Triton fused_moe kernel, whose row tile shrinks
    while the batch's tokens are no more than the rank's experts (cost.moe_tile)."""
    if ctx.model.is_moe and not ctx.stated.get("moe_gemm"):
        ctx.kw["moe_gemm"] = "triton"
        ctx.choose("routed experts by the Triton fused_moe kernel: small row tiles (16 rows at 16 bits, 64 at "
                   "fp8) while the batch's tokens are at most the rank's experts", "moe_gemm", "triton")
