"""What one simulated optimizer step delivers: a plain object that carries its inputs.

MFU/HFU come in two conventions (cost/flops.py): the headline `mfu`/`hfu` count the attention
FLOPs a causal kernel executes, so they cannot pass 100 %; `megatron_mfu`/`megatron_hfu` count the
full s x s score matrix as published TFLOP/s and MFU figures do (validation scores those). A result
that breaks physics (a step time that is not finite and positive, a causal MFU or HFU above 1) is a
bug in the simulator, not an answer: constructing one raises `ImpossibleResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from parasim import __version__
from parasim.units import gib


def flops_per_token(model, plan, ctx: float) -> dict[str, float]:
    """The four FLOP counts a result carries: causal (`ctx` keys per query, as the kernels execute
    them) and Megatron's full s x s, each with and without recomputation."""
    from parasim.cost.flops import training_hardware_flops_per_token as hw
    from parasim.cost.flops import training_model_flops_per_token as mf

    return {"model_flops_per_token": mf(model, ctx), "hardware_flops_per_token": hw(model, ctx, plan.recompute),
            "megatron_model_flops_per_token": mf(model, plan.seq_len),
            "megatron_hardware_flops_per_token": hw(model, plan.seq_len, plan.recompute)}


class ImpossibleResult(RuntimeError):
    """An internal error: the simulator produced a step that cannot happen (never bad input)."""


@dataclass(frozen=True, kw_only=True)
class TrainingResult:
    model: str
    gpu: str
    gpus: int
    plan: dict[str, Any]
    step_time_s: float
    tokens_per_step: int
    model_flops_per_token: float  # 6N + attention as executed (causal pairs)
    hardware_flops_per_token: float  # + recomputation
    megatron_model_flops_per_token: float  # 6N + full s x s attention (PaLM/Megatron/NeMo convention)
    megatron_hardware_flops_per_token: float  # + recomputation, same convention
    peak_flops_per_s: float  # dense peak of the GEMM precision, per GPU (MFU denominator)
    breakdown: dict[str, float]  # seconds on the critical pipeline rank; its terms sum to the step (moe_host: MoE models only)
    details: dict[str, float]
    memory: dict[str, float]
    peak_memory_bytes: float
    fits: bool
    varlen: dict[str, float] = field(default_factory=dict)
    timeline: dict[str, Any] | None = None  # per-stage op intervals, when asked for (training/timeline.py)
    hetero: dict[str, Any] | None = None  # a mixed cluster's placement, split and per-group memory (training/hetero.py)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step_time_s) and self.step_time_s > 0):
            raise ImpossibleResult(f"internal error: simulated step time {self.step_time_s!r} s is not finite and "
                                   f"positive ({self.model} on {self.gpus} x {self.gpu}, plan {self.plan})")
        for name in ("mfu", "hfu"):
            value = getattr(self, name)
            if not value <= 1.0:  # also catches NaN
                raise ImpossibleResult(f"internal error: {name} {value!r} exceeds 1 with causal attention FLOPs "
                                       f"({self.model} on {self.gpus} x {self.gpu}, plan {self.plan})")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_time_s

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.tokens_per_s / self.gpus

    def _tflops_per_gpu(self, flops_per_token: float) -> float:
        return flops_per_token * self.tokens_per_s_per_gpu / 1e12

    def _utilization(self, flops_per_token: float) -> float:
        """Achieved FLOP/s per GPU over the part's peak, for one way of counting the FLOPs."""
        return self._tflops_per_gpu(flops_per_token) * 1e12 / self.peak_flops_per_s

    @property
    def model_tflops_per_gpu(self) -> float:
        return self._tflops_per_gpu(self.model_flops_per_token)

    @property
    def hardware_tflops_per_gpu(self) -> float:
        return self._tflops_per_gpu(self.hardware_flops_per_token)

    @property
    def megatron_model_tflops_per_gpu(self) -> float:
        return self._tflops_per_gpu(self.megatron_model_flops_per_token)

    @property
    def megatron_hardware_tflops_per_gpu(self) -> float:
        return self._tflops_per_gpu(self.megatron_hardware_flops_per_token)

    @property
    def mfu(self) -> float:
        return self._utilization(self.model_flops_per_token)

    @property
    def hfu(self) -> float:
        return self._utilization(self.hardware_flops_per_token)

    @property
    def megatron_mfu(self) -> float:
        return self._utilization(self.megatron_model_flops_per_token)

    @property
    def megatron_hfu(self) -> float:
        return self._utilization(self.megatron_hardware_flops_per_token)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parasim_version": __version__, "model": self.model, "gpu": self.gpu, "gpus": self.gpus,
            "plan": self.plan, **{k: v for k, v in self.plan.items() if k not in ("gpus",)},
            "step_time_s": self.step_time_s, "tokens_per_step": self.tokens_per_step,
            "tokens_per_s": self.tokens_per_s, "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu,
            "model_tflops_per_gpu": self.model_tflops_per_gpu,
            "hardware_tflops_per_gpu": self.hardware_tflops_per_gpu, "mfu": self.mfu, "hfu": self.hfu,
            "megatron_model_tflops_per_gpu": self.megatron_model_tflops_per_gpu,
            "megatron_hardware_tflops_per_gpu": self.megatron_hardware_tflops_per_gpu,
            "megatron_mfu": self.megatron_mfu, "megatron_hfu": self.megatron_hfu,
            "peak_memory_gib_per_gpu": gib(self.peak_memory_bytes), "fits": self.fits,
            "memory": self.memory, "breakdown": self.breakdown, "details": self.details, "varlen": self.varlen,
            **({"hetero": self.hetero} if self.hetero is not None else {}),
            **({"timeline": self.timeline} if self.timeline is not None else {}),
        }
