"""What one simulated optimizer step delivers: a plain object that carries its inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parasim import __version__
from parasim.units import gib


@dataclass(frozen=True, kw_only=True)
class TrainingResult:
    model: str
    gpu: str
    gpus: int
    plan: dict[str, Any]
    step_time_s: float
    tokens_per_step: int
    model_flops_per_token: float  # 6N + attention (PaLM/Megatron/NeMo convention)
    hardware_flops_per_token: float  # + recomputation
    peak_flops_per_s: float  # dense peak of the GEMM precision, per GPU (MFU denominator)
    breakdown: dict[str, float]  # seconds on the critical pipeline rank; the four main terms sum to the step
    details: dict[str, float]
    memory: dict[str, float]
    peak_memory_bytes: float
    fits: bool
    varlen: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_time_s

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.tokens_per_s / self.gpus

    @property
    def model_tflops_per_gpu(self) -> float:
        return self.model_flops_per_token * self.tokens_per_s_per_gpu / 1e12

    @property
    def hardware_tflops_per_gpu(self) -> float:
        return self.hardware_flops_per_token * self.tokens_per_s_per_gpu / 1e12

    @property
    def mfu(self) -> float:
        return self.model_tflops_per_gpu * 1e12 / self.peak_flops_per_s

    @property
    def hfu(self) -> float:
        return self.hardware_tflops_per_gpu * 1e12 / self.peak_flops_per_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "parasim_version": __version__, "model": self.model, "gpu": self.gpu, "gpus": self.gpus,
            "plan": self.plan, **{k: v for k, v in self.plan.items() if k not in ("gpus",)},
            "step_time_s": self.step_time_s, "tokens_per_step": self.tokens_per_step,
            "tokens_per_s": self.tokens_per_s, "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu,
            "model_tflops_per_gpu": self.model_tflops_per_gpu,
            "hardware_tflops_per_gpu": self.hardware_tflops_per_gpu, "mfu": self.mfu, "hfu": self.hfu,
            "peak_memory_gib_per_gpu": gib(self.peak_memory_bytes), "fits": self.fits,
            "memory": self.memory, "breakdown": self.breakdown, "details": self.details, "varlen": self.varlen,
        }
