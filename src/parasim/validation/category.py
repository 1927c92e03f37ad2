"""The category of a run, as validated errors are grouped: kind, vendor and GPU generation,
framework, dense or MoE, model size, precision; and the metric class of a measured key.

One mapping per key, used both for the published cases (`of_case`) and for a user's prediction
(`for_training`, `for_serving`), so a prediction is looked up under the same names its cases
were filed under (validation.expected_error). The GPU generation is the catalog's
(`AcceleratorSpec.generation`); the serving engine is the one `engines.lookup` matches.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from parasim.engines.lookup import profile_for
from parasim.specs.accelerator import AcceleratorSpec
from parasim.specs.model import ModelSpec
from parasim.specs.validation_case import Case

#: total parameters below each bound -> bucket (the last bound is open)
SIZE_BUCKETS = ((10e9, "<10B"), (100e9, "10-100B"), (float("inf"), ">100B"))
#: bf16 and fp16 run on the same 16-bit units at the same rate: one class
DTYPE_CLASS = {"bf16": "16-bit", "fp16": "16-bit"}
#: training frameworks by how they shard: Megatron-style (TP/PP/DP with a distributed optimizer:
#: Megatron-LM, Megatron-Core, NeMo, Megatron-DeepSpeed) or FSDP-style (ZeRO-3 full shard:
#: llm-foundry/Composer, torchtitan, PyTorch FSDP); matched in this order, anything else "other"
TRAINING_FRAMEWORKS = ((re.compile(r"megatron|nemo", re.IGNORECASE), "megatron"),
                       (re.compile(r"foundry|composer|torchtitan|fsdp", re.IGNORECASE), "fsdp"))
#: the generic engine profile matches any text: its cases are filed as "other"
GENERIC_ENGINE = "default"
OTHER = "other"

#: serving metric classes by key prefix; any rate (`*_per_s*`) is throughput
_SERVING_CLASSES = (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "tpot"), ("e2e", "e2e"), ("queueing", "queueing"))


@dataclass(frozen=True)
class Category:
    """What a prediction is filed under; None = not known for this prediction (matches any)."""

    kind: str
    vendor: str
    generation: str
    framework: str | None
    moe: str  # "moe" | "dense"
    size: str
    dtype: str

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def size_bucket(model: ModelSpec) -> str:
    return next(name for bound, name in SIZE_BUCKETS if model.params_total < bound)


def dtype_class(dtype: str) -> str:
    return DTYPE_CLASS.get(dtype, dtype)


def training_framework(software: str) -> str:
    return next((name for rx, name in TRAINING_FRAMEWORKS if rx.search(software)), OTHER)


def serving_engine(software: str) -> str:
    name = profile_for(software).name
    return OTHER if name == GENERIC_ENGINE else name


def _category(kind: str, model: ModelSpec, acc: AcceleratorSpec, framework: str | None, dtype: str) -> Category:
    return Category(kind=kind, vendor=acc.vendor or OTHER, generation=acc.generation or OTHER, framework=framework,
                    moe="moe" if model.is_moe else "dense", size=size_bucket(model), dtype=dtype_class(dtype))


def for_training(model: ModelSpec, acc: AcceleratorSpec, *, zero: int, precision: str) -> Category:
    """A `parasim train` plan: FSDP-style when it shards everything (ZeRO-3), else Megatron-style
    (the stack parasim's training defaults follow)."""
    return _category("training", model, acc, "fsdp" if int(zero) == 3 else "megatron", precision)


def for_serving(model: ModelSpec, acc: AcceleratorSpec, *, weights: str, software: str | None = None) -> Category:
    """A `parasim serve` plan: the engine only when one is named (`--engine`), else unknown."""
    return _category("serving", model, acc, serving_engine(software) if software else None, weights)


def of_case(case: Case) -> Category:
    if case.kind == "training":
        fw = training_framework(case.software)
        dtype = str(case.plan.get("precision") or "bf16")
    else:
        fw = serving_engine(case.software)
        dtype = str(case.plan.get("weights") or "bf16")  # the case format's default (validation.serving)
    return _category(case.kind, case.model, case.cluster.accelerator, fw, dtype)


def metric_class(kind: str, key: str) -> str:
    """throughput | ttft | tpot | e2e | queueing | memory | other. Every training time or rate
    (step time, TFLOP/s, MFU, tokens/s) measures the same speed: throughput."""
    if "memory" in key or key == "fits":
        return "memory"
    if kind == "training":
        return "throughput"
    for prefix, cls in _SERVING_CLASSES:
        if key.startswith(prefix):
            return cls
    return "throughput" if "_per_s" in key else OTHER
