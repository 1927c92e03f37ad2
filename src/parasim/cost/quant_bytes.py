"""The bytes a quantized checkpoint really holds: its scales, and which block modules it quantizes.

**Block scales.** A low-bit weight is stored with scale factors that dequantize it; they are read
with the weights by every GEMM and held with them in HBM. Bits per weight element, scales included:

* NVFP4 (`nvfp4`): E2M1 values with one FP8 E4M3 scale per 16 elements (+ one FP32 per tensor,
  negligible): 4 + 8/16 = 4.5 bits (NVIDIA, "Introducing NVFP4 for efficient and accurate
  low-precision inference", 2025; Model Optimizer's NVFP4 `group_size` 16).
* MXFP4 (`mxfp4`): E2M1 values with one E8M0 scale per 32: 4 + 8/32 = 4.25 bits (OCP
  Microscaling Formats (MX) Specification v1.0, 2023, block size 32, shared E8M0 scale).
* AWQ / GPTQ INT4 at group 128 (`group_128`): an FP16 scale and a 4-bit zero point per group of
  128 input elements (AutoAWQ / GPTQ `quantization_config` `group_size: 128`, zeros packed 8 per
  int32 as `qzeros`): 4 + (16 + 4)/128 = 4.156 bits.
* FP8 with 128x128 block scales (`block_128`, DeepSeek-V3/R1, Qwen3-FP8: `weight_block_size
  [128, 128]`): one FP32 per 16,384 elements, 8.002 bits.
* Per-tensor or per-channel scales (`per_tensor`, FP8 and INT8 recipes: Model Optimizer FP8,
  vLLM's dynamic `--quantization fp8`, Meta's FBGEMM row-wise FP8, SmoothQuant INT8): at most one
  FP32 per output row of >= 1,024 elements, under 0.4 % of a weight byte; counted as zero.

The defaults for a format whose checkpoint states no layout are `per_tensor` for fp8 / int8,
`group_128` for int4 and `nvfp4` for fp4 (TensorRT-LLM / Model Optimizer's FP4, the format of
NVIDIA's published FP4 checkpoints); gpt-oss states `mxfp4`.

**Scope.** Published checkpoints leave some block Linears in 16 bits (`quantization_config`'s
`ignore` / `modules_to_not_convert` / `exclude_modules`); `ModelSpec.quantized_modules` says which
block modules the checkpoint quantizes, and applies when the plan serves the checkpoint's own
format (`ModelSpec.quantized_weights`). An engine that quantizes a 16-bit checkpoint itself (vLLM
`--quantization fp8`, Model Optimizer's default recipes) quantizes every block Linear (`all`).
Embedding and LM head stay 16-bit in every case (`cost.memory.weight_bytes_per_gpu`).
"""

from __future__ import annotations

from dataclasses import dataclass

from parasim.cost.dtypes import dtype_bytes
from parasim.specs.model import ModelSpec

#: scale bits per weight element of each block-scale layout (see the module doc for sources)
SCALE_BITS_PER_ELEMENT: dict[str, float] = {
    "per_tensor": 0.0,
    "block_128": 32.0 / (128 * 128),
    "group_128": (16.0 + 4.0) / 128,
    "nvfp4": 8.0 / 16,
    "mxfp4": 8.0 / 32,
}
#: the layout of a format's checkpoint when it states none
DEFAULT_SCALES = {"fp8": "per_tensor", "int8": "per_tensor", "int4": "group_128", "fp4": "nvfp4"}


@dataclass(frozen=True)
class QuantScope:
    """Which block modules run at the low-bit format and at how many bytes per element; the
    others run in 16 bits. `edge_layers_16bit`: the first and last layers are wholly 16-bit."""

    weights: str
    scales: str
    attention: bool = True
    mlp: bool = True  # dense MLP and shared experts
    experts: bool = True  # routed experts
    edge_layers_16bit: bool = False

    @property
    def element_bytes(self) -> float:
        """Bytes per quantized weight element, its scales included."""
        return weight_bytes_per_element(self.weights, self.scales)

    @property
    def is_all(self) -> bool:
        return self.attention and self.mlp and self.experts and not self.edge_layers_16bit

    @property
    def stated(self) -> bool:
        """Whether anything differs from an engine's own quantization of every block Linear."""
        return not self.is_all or self.scales != DEFAULT_SCALES[self.weights]

    def describe(self) -> str:
        """One line for reports: which block modules hold the format, at how many bits."""
        mlps = "MLPs" if self.mlp and self.experts else "routed experts" if self.experts else "dense MLPs"
        parts = (["attention"] if self.attention else []) + [mlps]
        kept = [] if self.attention else ["attention"]
        if not self.mlp:
            kept.append("dense MLPs and shared experts")
        text = f"{self.weights} ({self.scales} scales, {self.element_bytes * 8:g} bits per element) in " + ", ".join(parts)
        if self.edge_layers_16bit:
            text += " of all but the first and last layers"
        if kept:
            text += "; " + ", ".join(kept) + " 16-bit"
        return text + " (the checkpoint's quantization_config; cost.quant_bytes)"


#: ModelSpec.quantized_modules -> (attention, dense MLP and shared experts, routed experts, edge layers 16-bit)
_MODULES = {"all": (True, True, True, False), "mlp": (False, True, True, False),
            "mlp_except_first_last": (False, True, True, True), "experts": (False, False, True, False)}


def weight_bytes_per_element(weights: str, scales: str | None = None) -> float:
    """Bytes per element of a `weights`-format weight with `scales` (None: the format's default)."""
    wb = dtype_bytes(weights, field="weights")
    if wb >= 2.0:
        return wb
    return wb + SCALE_BITS_PER_ELEMENT[scales or DEFAULT_SCALES[weights]] / 8.0


def quant_scope(model: ModelSpec, weights: str) -> QuantScope | None:
    """The scope and scale layout of `model` served at `weights`; None for 16-bit (or wider) weights.

    The checkpoint's own facts apply when `weights` is the format it ships in; otherwise the engine
    quantized every block Linear with the format's default scales."""
    if dtype_bytes(weights, field="weights") >= 2.0:
        return None
    if weights != model.quantized_weights:
        return QuantScope(weights, DEFAULT_SCALES[weights])
    attn, mlp, experts, edges = _MODULES[model.quantized_modules]
    return QuantScope(weights, model.weight_scales or DEFAULT_SCALES[weights], attn, mlp, experts, edges)
