"""What an accelerator can do: dense peaks per dtype, memory, links, power, price, efficiencies.

Peaks are the vendor's *dense* figures (never the 2:4 sparse ones); link bandwidth is one-way per
GPU. The efficiency constants are what the roofline multiplies peaks by; each carries its source
(a published measurement, or a stated assumption) in the catalog entry's `sources` map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from parasim.errors import InputError
from parasim.units import gib

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")


#: Bytes per datasheet "GB" of HBM. HBM stacks are built from binary-sized DRAM dies, so the
#: capacity on a datasheet is binary: an "80 GB" A100 shows 81920 MiB in nvidia-smi (= 80 GiB),
#: an "80 GB" H100 81559 MiB, and vLLM logs `total_gpu_memory` of about 79.1-79.3 GiB for it. The
#: few hundred MiB the driver keeps are inside the runtime reserve (serving.kvcache).
HBM_GB_BYTES = float(2 ** 30)


@dataclass(frozen=True, kw_only=True)
class Efficiency:
    """Achievable fractions of peak; physically meaningful, catalogued with sources."""

    gemm: float = 0.80  # large, well-shaped GEMM / dense peak
    gemm_fp8: float | None = None  # large FP8 GEMM / FP8 peak, when measured separately
    gemm_fp4: float | None = None  # large FP4 GEMM / FP4 peak, when measured separately (else gemm_fp8)
    gemm_tile_m: int = 128  # tokens per output tile: small-M GEMMs waste the rest of the tile
    gemm_k0: float = 0.0  # per-tile prologue/epilogue cost in K elements (16-bit); 0 = no K dependence
    gemm_ref_k: float = 0.0  # K of the GEMM the `gemm` efficiency was measured at
    gemm_ref_k_fp8: float = 0.0  # K of the GEMM `gemm_fp8` was measured at
    gemm_tile_n: int = 256  # output columns per tile (wave quantisation, with `sms`)
    #: Smooth roofline near the ridge point (cost.roofline.ridge_time_s): a GEMM takes at least the
    #: p-norm (c^p + m^p)^(1/p) of its real rows' MMA time c and its HBM time m, because the kernel's
    #: operand stream and its tensor-core pipeline overlap imperfectly when the two are close.
    #: 0 = the sharp max(c, m) (no measurement). 16-bit and 8-bit units separately.
    gemm_ridge_p: float = 0.0
    gemm_ridge_p_fp8: float = 0.0
    sms: int = 0  # streaming multiprocessors / compute units that run output tiles; 0 = unknown (no wave term)
    attention: float = 0.65  # fused (flash) attention forward / dense peak, the best kernel for the part
    #: FlashAttention-2-generation kernels' rate / the `attention` kernel's (`--attention flash2`).
    #: 1.0 where the catalogued kernel is FA2-generation itself; below 1 where a newer kernel (FA3
    #: on Hopper: wgmma/TMA) set the `attention` figure. An entry that does not say keeps 1.0.
    attention_fa2_ratio: float = 1.0
    memory: float = 0.85  # streaming HBM bandwidth / peak
    nvlink_busbw: float = 0.77  # NCCL bus bandwidth / one-way link peak inside a node
    network_busbw: float = 0.80  # across nodes, bus bandwidth / NIC line rate
    nvlink_latency_s: float = 8e-6  # alpha per collective step inside a node
    network_latency_s: float = 15e-6  # alpha per collective step across nodes
    kernel_overhead_s: float = 4e-6  # launch + tail per kernel, added per operator
    #: spread of sustained compute speed between GPUs of one SKU, as a standard deviation
    #: (training/straggler.py). Sinha et al. SC'22 (arXiv 2208.11035) measure 8 % average
    #: performance variation across the GPUs of a cluster, outliers excluded (box-plot whiskers,
    #: which span ~5.4 sigma of a normal spread): 0.08 / 5.4 = 0.015. Measured on V100 and MI60
    #: clusters; applied to every part until a part-specific measurement exists.
    rank_speed_sigma: float = 0.015
    #: never set in the catalog: a user's calibration profile (specs.profile) adds it to each serving
    #: iteration's host overhead (seconds; may be negative, the total stays >= 0)
    calibrated_iteration_overhead_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("gemm_ridge_p", "gemm_ridge_p_fp8"):
            p = getattr(self, name)
            if p != 0.0 and not p >= 1.0:
                raise InputError(f"efficiency.{name}",
                                 f"must be 0 (sharp roofline) or >= 1 (a p-norm below 1 exceeds the serial sum), got {p}")
        if not 0.0 < self.attention_fa2_ratio <= 1.0:
            raise InputError("efficiency.attention_fa2_ratio",
                             f"must be in (0, 1] (an older kernel is never faster), got {self.attention_fa2_ratio}")


SCALE_UP_KINDS = ("nvlink", "pcie")
#: the host CPU families a part's node runs its framework on (catalog `host_cpu`): x86 (DGX/HGX
#: boards: Xeon or EPYC) or grace (NVIDIA's Arm Neoverse V2 CPU of the GH200 and GB200 superchips).
#: The host's per-kernel issue time differs between them (cost.moe_host.HOST_ISSUE_FACTOR).
HOST_CPUS = ("x86", "grace")
#: Sustained clock under a power cap: a part capped at P (< its rated TDP) runs compute-bound kernels
#: at the clock where idle + (TDP - idle) (f / f_rated)^n = P; memory-bound kernels keep the HBM clock
#: (not scaled). C V^2 f with V rising in step with f would give n = 3, but a GEMM at its rated TDP
#: already runs power-limited below the boost clock, near the voltage floor, where the power grows
#: little faster than the clock. Measured, not assumed: n is the median (1.33; range 1.07-1.47) of the
#: exponents each published capped-GEMM point implies with the catalog's idle rule (13 % of TDP):
#: RTX PRO 6000 Blackwell cuBLAS BF16 and FP8 at 240-480 W of 600 W (1a1a11a/gpu_power,
#: figures/tflops_vs_power.png: BF16 317 -> 218 TFLOP/s at 400 W, FP8 513 -> 369) and GB300 at 500 W
#: of 1400 W (facebookexperimental/triton PR 2023: cuBLAS GEMM ~617 against 1,600-2,174 TFLOP/s).
#: The cube law missed those points by +10 % to +125 %. tests/test_cost_power_law.py checks each one.
POWER_CLOCK_EXPONENT = 1.33


def memory_bound_power_fraction_of(power: object, *, idle_w: float, tdp_w: float, where: str) -> float:
    """The catalog's `power.memory_bound_fraction` checked: a fraction in (0, 1] whose watts
    (fraction x TDP) are at least the idle draw; 1.0 when the group is absent."""
    if power is None:
        return 1.0
    f = power.get("memory_bound_fraction") if isinstance(power, dict) else power
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0.0 < f <= 1.0:
        raise InputError(f"{where}.power.memory_bound_fraction", f"must be a number in (0, 1], got {f!r}")
    if f * tdp_w < idle_w:
        raise InputError(f"{where}.power.memory_bound_fraction",
                         f"{f:g} x TDP {tdp_w:g} W is below the idle draw {idle_w:g} W")
    return float(f)


@dataclass(frozen=True, kw_only=True)
class AcceleratorSpec:
    id: str
    name: str
    vendor: str
    peak_flops_per_s: dict[str, float]  # dtype -> dense peak (FLOP/s or OP/s); missing = no unit
    hbm_bytes: float
    hbm_bw_bytes_per_s: float
    link_bw_bytes_per_s: float  # intra-node scale-up, one way, per GPU
    tdp_w: float
    idle_w: float
    price_usd_per_hour: float  # assumption, user-editable
    efficiency: Efficiency = field(default_factory=Efficiency)
    form_factor: str = ""
    #: the vendor's architecture (hopper, cdna3, ...): parts of one generation share kernels and
    #: efficiencies, so validated errors are grouped by it (validation.category); "" = not stated
    generation: str = ""
    #: how GPUs of one node reach each other: "nvlink" (NVLink/NVSwitch and the other vendors'
    #: dedicated fabrics) or "pcie" (no scale-up links). Serving engines run their custom P2P
    #: all-reduce kernels only over scale-up links and use NCCL over PCIe (serving.itercost).
    scale_up: str = "nvlink"
    #: scale-up links that run point to point, one per peer (a fully connected mesh: AMD Infinity
    #: Fabric joins the 8 GPUs of a node by 7 links, one to each other GPU); 0 = a switched fabric
    #: (NVSwitch), where any number of peers share the whole `link_bw_bytes_per_s`. On a mesh the
    #: GPUs of a smaller group reach each other over fewer links (`scale_up_bw_bytes_per_s`).
    link_peers: int = 0
    #: device memory the CUDA driver reports as the GPU's total (`cudaMemGetInfo`, torch's
    #: `mem_get_info`): what serving engines size their memory split from (vLLM's
    #: "total_gpu_memory", SGLang's free memory before the weights, TensorRT-LLM's free memory after
    #: the engine loads). Below the datasheet's binary size on NVIDIA parts (the driver keeps the
    #: rest). None = not catalogued: `hbm_bytes` is used (`device_memory_bytes`).
    visible_memory_bytes: float | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    #: the TDP the catalog's peaks and efficiencies were measured at (0 = `tdp_w`); a case that
    #: caps the power (`overrides: {tdp_w: ...}`) lowers `tdp_w` only, so the two differ
    rated_tdp_w: float = 0.0
    #: board power while the GPU streams HBM (a saturated memory-bound kernel: LLM decode) as a
    #: fraction of the rated TDP (catalog `power.memory_bound_fraction`); 1.0 = no measurement, so
    #: every busy second is charged the TDP as before (cost.energy)
    memory_bound_power_fraction: float = 1.0
    #: the CPU family the node's framework runs on (HOST_CPUS): what an eager training step's
    #: host issue time per kernel scales with (cost.moe_host); "x86" unless the catalog says
    host_cpu: str = "x86"

    @property
    def device_memory_bytes(self) -> float:
        """The memory a serving engine's split starts from: the CUDA-visible total where the
        catalog has it, else the datasheet size."""
        return self.hbm_bytes if self.visible_memory_bytes is None else self.visible_memory_bytes

    def with_(self, **changes) -> AcceleratorSpec:
        return replace(self, **changes)

    def with_power_limit(self, power_limit_w: float, *, field: str = "power-limit-w") -> AcceleratorSpec:
        """This part capped at `power_limit_w` (`nvidia-smi -pl`): `tdp_w` lowered, `rated_tdp_w` kept
        at the catalog's figure, so `clock_ratio` slows compute as a validation case's `tdp_w`
        override does. The driver takes a limit above idle and up to the board's default only."""
        rated = self.rated_tdp_w or self.tdp_w
        w = float(power_limit_w)
        if not (math.isfinite(w) and self.idle_w < w <= rated):
            raise InputError(field, f"must be a power in W above the {self.id}'s idle draw and at most its rated TDP: "
                                    f"({self.idle_w:g}, {rated:g}], got {power_limit_w!r}")
        return replace(self, tdp_w=w, rated_tdp_w=rated)

    def scale_up_bw_bytes_per_s(self, ranks: int) -> float:
        """One-way scale-up bandwidth a GPU has toward the other `ranks` - 1 GPUs of its group inside
        a node: the whole link bandwidth on a switch, and on a mesh only the links to those peers
        ((ranks - 1) / link_peers of it: a TP2 pair of MI300X shares one 64 GB/s link, not 448)."""
        if self.link_peers <= 0 or ranks - 1 >= self.link_peers:
            return self.link_bw_bytes_per_s
        return self.link_bw_bytes_per_s * max(1, ranks - 1) / self.link_peers

    def peak(self, dtype: str) -> float:
        """Dense peak for a compute dtype; falls back to the widest unit that can run it.

        int4/fp4 weights without a native unit are dequantised and run at bf16/fp16 rate;
        fp8 without a unit runs at bf16 rate (weight-only quantisation).
        """
        p = self.peak_flops_per_s
        if dtype in p and p[dtype]:
            return p[dtype]
        for fallback in {"fp4": ("fp8", "bf16", "fp16"), "int4": ("int8", "bf16", "fp16"),
                         "fp8": ("bf16", "fp16"), "int8": ("bf16", "fp16"), "bf16": ("fp16",),
                         "fp16": ("bf16",)}.get(dtype, ("bf16", "fp16")):
            if p.get(fallback):
                return p[fallback]
        raise KeyError(dtype)

    @property
    def clock_ratio(self) -> float:
        """Sustained compute clock / the rated one under a power cap below the rated TDP
        (POWER_CLOCK_EXPONENT); 1.0 at or above it (a higher limit does not raise the clock)."""
        rated = self.rated_tdp_w or self.tdp_w
        if self.tdp_w >= rated or rated <= self.idle_w:
            return 1.0
        headroom = max(self.tdp_w - self.idle_w, 1e-3 * (rated - self.idle_w))
        return (headroom / (rated - self.idle_w)) ** (1.0 / POWER_CLOCK_EXPONENT)

    def sustained_peak(self, dtype: str) -> float:
        """Dense peak at the clock the part sustains under its power limit (rooflines use this;
        MFU keeps the datasheet `peak`)."""
        return self.peak(dtype) * self.clock_ratio

    def has_unit(self, dtype: str) -> bool:
        return bool(self.peak_flops_per_s.get(dtype))

    def gemm_efficiency(self, dtype: str, k: float = 0.0) -> float:
        """Large-GEMM efficiency, scaled to reduction depth `k` when the catalog gives `gemm_k0`.

        Each output tile pays a fixed prologue/epilogue besides its K-loop, so efficiency grows as
        k / (k + k0) and the catalogued value holds at the measured depth `gemm_ref_k`. An 8-bit
        K-loop runs twice as fast per element, so its k0 (in K elements) is twice the 16-bit one.
        """
        e = self.efficiency
        low = self._low_precision_unit(dtype)
        base = e.gemm_fp8 if low and e.gemm_fp8 else e.gemm
        if dtype in ("fp4", "int4") and self.has_unit(dtype) and e.gemm_fp4:
            base = e.gemm_fp4
        if k <= 0 or e.gemm_k0 <= 0 or e.gemm_ref_k <= 0:
            return base
        k0 = e.gemm_k0 * (2.0 if low else 1.0)
        ref_k = e.gemm_ref_k_fp8 if low and e.gemm_ref_k_fp8 else e.gemm_ref_k
        return base * (k / (k + k0)) / (ref_k / (ref_k + k0))

    def gemm_ridge_p(self, dtype: str) -> float:
        """The smooth-roofline exponent of GEMMs on `dtype`'s unit (0 = sharp max; see Efficiency)."""
        e = self.efficiency
        return e.gemm_ridge_p_fp8 if self._low_precision_unit(dtype) else e.gemm_ridge_p

    def _low_precision_unit(self, dtype: str) -> bool:
        """Whether `dtype`'s GEMMs run on the part's 8/4-bit tensor unit (the `_fp8` efficiencies)."""
        return dtype in ("fp8", "fp4", "int8", "int4") and self.has_unit(dtype)

    def summary(self) -> dict:
        p = self.peak_flops_per_s
        tf = lambda k: (round(p[k] / 1e12, 2) if p.get(k) else None)  # noqa: E731
        return {"id": self.id, "name": self.name, "vendor": self.vendor, "generation": self.generation,
                "bf16_tflops": tf("bf16") or tf("fp16"), "fp16_tflops": tf("fp16"),
                "fp8_tflops": tf("fp8"), "int8_tops": tf("int8"), "fp4_tflops": tf("fp4"),
                "hbm_gib": round(gib(self.hbm_bytes), 1), "hbm_tb_s": round(self.hbm_bw_bytes_per_s / 1e12, 3),
                "link_gb_s_one_way": round(self.link_bw_bytes_per_s / 1e9, 1), "tdp_w": self.tdp_w,
                "idle_w": self.idle_w, "price_usd_per_hour": self.price_usd_per_hour,
                "efficiency": dict(self.efficiency.__dict__),
                "source": "; ".join(f"{k}: {v}" for k, v in self.sources.items())}
