"""Fused attention's achieved rate by sequence length and causal mask, from the kernels' own curves.

The catalog's `attention` efficiency is one point of a published curve: a long, non-causal
sequence, where a flash-attention kernel is fastest. The rate falls at shorter sequences and is
lower again with the causal mask, because every query block pays costs that do not grow with the
keys it attends: loading Q, the softmax rescale and the output epilogue, and under the causal
mask a partly filled diagonal tile (half of a key block computed and thrown away, plus the
masking). Per query row that is a fixed number of key columns' worth of work, `row_keys`, so

    time  ∝  pairs + row_keys * rows                (pairs = query-key pairs, rows = query rows)

A non-causal benchmark at length N (pairs N², rows N) then runs at R · N / (N + row_keys_full),
a causal one (pairs N²/2) at R · N / (N + 2 row_keys_causal), with the same R: the law is
linear in the aggregates a batch already carries (serving's prefill pairs and prefill tokens,
training's micro-batch), so it costs O(1) and treats a chunk after cached context exactly (its
rows pay the per-row cost, its pairs include the cached keys). The rate is normalised to the
point the catalogued figure was measured at, so the catalog is reproduced there (`ref_scale`).

The row costs are least-squares fits of 1/rate = (1 + row_keys·k / N) / R over each curve's six
points (512-16k; causal and non-causal together, one R), hd 128 (the head dim of most models);
`PUBLISHED` keeps every point used, and tests/test_cost_attn_shape.py reproduces them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from parasim.errors import InputError

# Flash-attention backward reaches a lower fraction of peak than the forward (the catalog's
# attention efficiency is a forward measurement): FA2 paper (A100) and FA3 paper (H100) report
# backward TFLOP/s at ~0.75-0.85 of the forward's. (cost.layer charges the backward with it.)
ATTN_BWD_EFF_RATIO = 0.8

#: Published TFLOP/s by sequence length 512, 1k, 2k, 4k, 8k, 16k (batch x seqlen = 16k tokens,
#: hidden 2048), head dim 128: (kernel, GPU, pass, mask) -> rates. None = a bar label hidden.
SEQ_LENS = (512, 1024, 2048, 4096, 8192, 16384)
PUBLISHED: dict[tuple[str, str, str, str], tuple[float | None, ...]] = {
    # FlashAttention-3 paper (Shah et al. 2024, arXiv:2407.08608) Fig. 5c / 5d (FP16 forward, H100 SXM5)
    ("fa3", "h100", "fwd", "full"): (467, 565, 625, 638, 646, 648),
    ("fa3", "h100", "fwd", "causal"): (292, 423, 521, 579, 602, 616),
    # same paper, Fig. 6 (FP16 backward, H100 SXM5, no causal mask; the paper gives no causal backward)
    ("fa3", "h100", "bwd", "full"): (316, 424, 501, 542, 559, 561),
    # same paper, Fig. 5c / 5d, the FlashAttention-2 bars (forward on H100): a cross-check of "fa2"
    ("fa2", "h100", "fwd", "full"): (309, 350, 362, 368, 370, 370),
    ("fa2", "h100", "fwd", "causal"): (191, 260, 298, 319, 333, 335),
    # FlashAttention-2 paper (Dao 2023, arXiv:2307.08691) Fig. 4b / 4d (forward + backward, A100 80GB)
    ("fa2", "a100", "fwd+bwd", "full"): (None, None, 187, 196, 201, 203),
    ("fa2", "a100", "fwd+bwd", "causal"): (99, 133, 155, 173, 182, 189),
    # same figures, the FlashAttention (v1, CUDA) bars: the kernel llm-foundry's Triton FlashAttention
    # (flash_attn/flash_attn_triton.py) measures itself against ("Overall Triton forward + backward is
    # slightly slower than CUDA forward + backward", its header). The figures' "FlashAttention Triton"
    # bars are another kernel (triton.ops.flash_attention, benchmarks/benchmark_flash_attention.py).
    ("fa1", "a100", "fwd+bwd", "full"): (76, 72, 76, 80, 82, 83),
    ("fa1", "a100", "fwd+bwd", "causal"): (55, 62, 69, 76, 80, 83),
}


@dataclass(frozen=True)
class AttnLaw:
    """One kernel's per-query-row costs, in key columns of work, and the catalog's reference length."""

    kernel: str
    fwd_full: float  # forward, a query row's fixed cost without the causal mask
    fwd_causal: float  # forward, with the causal mask's diagonal tile
    bwd_full: float
    bwd_causal: float
    ref_seq: float  # the (non-causal) sequence length the catalogued `attention` figure was measured at
    # a kernel other than the one the catalog measured: its asymptotic rate's time over the catalog's
    # (forward: the catalogued `attention` rate; backward: ATTN_BWD_EFF_RATIO of it). 0 = the same
    # kernel as the catalog's figure, normalised at ref_seq instead.
    fwd_level: float = 0.0
    bwd_level: float = 0.0

    def extra_pairs(self, rows: float, *, backward: bool = False, cp: int = 1) -> float:
        """Key-column work the `rows` query rows add beyond their pairs: one causal (diagonal)
        pass, plus cp - 1 unmasked ring steps when context parallelism splits the keys (each a
        kernel call whose query blocks pay their fixed cost again)."""
        full, causal = (self.bwd_full, self.bwd_causal) if backward else (self.fwd_full, self.fwd_causal)
        return rows * (causal + (cp - 1) * full)

    def ref_scale(self, *, backward: bool = False) -> float:
        """The rate at the reference point over the law's asymptote, N / (N + row_keys_full): the
        catalogued figure already is that fraction of the asymptote, so it is divided back out."""
        level = self.bwd_level if backward else self.fwd_level
        if level > 0:
            return level
        full = self.bwd_full if backward else self.fwd_full
        return self.ref_seq / (self.ref_seq + full)

    def time_scale(self, pairs: float, rows: float, *, backward: bool = False, cp: int = 1) -> float:
        """Compute time of `pairs` causal query-key pairs over `rows` query rows against the
        catalog's rate: 1 at the reference point, above 1 at shorter or causal sequences."""
        if pairs <= 0:
            return 1.0
        extra = self.extra_pairs(rows, backward=backward, cp=cp)
        return (pairs + extra) / pairs * self.ref_scale(backward=backward)


#: FlashAttention-3 on Hopper: forward from Fig. 5c/5d (fit 199 / 311, every point within 3.7 %);
#: backward 427 from Fig. 6 (within 2.8 %), its causal cost the forward's diagonal-tile difference
#: (311 - 199 = 112, a tile-geometry term; the paper has no causal backward) added: 539. Reference:
#: the catalogued 757 TFLOP/s is the figure's best bar (756, non-causal, 16k).
FA3 = AttnLaw("fa3", fwd_full=199.0, fwd_causal=311.0, bwd_full=427.0, bwd_causal=539.0, ref_seq=16384.0)
#: FlashAttention-2: forward + backward on A100, Fig. 4b/4d of the FA2 paper (fit 84 / 259, every
#: point within 3.0 %), used for both passes (the paper's per-pass figures were not retrieved). The
#: FA2 forward on H100 (FA3 paper's FA2 bars) fits 75 / 230: the same kernel's costs on another GPU.
FA2 = AttnLaw("fa2", fwd_full=84.0, fwd_causal=259.0, bwd_full=84.0, bwd_causal=259.0, ref_seq=16384.0)
#: The Ampere / Ada catalog figure: FA2 at batch 2, seq 8,192 (Azure's A100 run; mask not stated,
#: taken as the benchmark script's non-causal default).
FA2_AT_8K = replace(FA2, ref_seq=8192.0)
#: llm-foundry's Triton FlashAttention (attn_impl: triton, 2022-23): the FlashAttention-1 tiling it was
#: written from, so the row costs of the FA1 CUDA kernel's A100 forward + backward curve in the FA2
#: paper's Fig. 4b/4d (the same least-squares fit: 52 / 128, every point within 6.6 %), used for both
#: passes. Its level stays TRITON_FA_SLOWDOWN below FA2 at the catalogued point (training/step.py):
#: the law moves only its short and causal sequences.
TRITON_FA1 = AttnLaw("triton", fwd_full=52.0, fwd_causal=128.0, bwd_full=52.0, bwd_causal=128.0, ref_seq=16384.0)
TRITON_FA1_AT_8K = replace(TRITON_FA1, ref_seq=8192.0)

#: cuDNN's fused attention (SDPA) on B200, version 9.13: NVIDIA/cudnn-frontend
#: benchmark/sdpa_benchmark_training/artifacts/sdpa_bf16_benchmark_results_NVIDIA_B200.csv (commit
#: cb560b92; the run log beside it: torch 2.9 nv25.09, cuDNN 91300), backend pyt_cudnn, BF16, causal
#: (FLOPs halved), batch 1, 128 query / 8 KV heads, head dim 128. TFLOP/s by sequence length:
CUDNN_B200_SEQ_LENS = (1024, 2048, 4096, 8192, 16384, 32768)
CUDNN_B200_CAUSAL = {
    "fwd": (254.501, 478.921, 855.678, 1171.278, 1332.415, 1419.000),
    "bwd": (308.529, 371.486, 701.265, 942.509, 1074.776, 1108.688),
}
#: FlashAttention-4's best B200 forward (arXiv:2603.05451 abstract), the catalog's b200 `attention`
#: (0.717 of 2,250); the cuDNN law's level is stated against it, so GB200 keeps its own catalog ratio.
FA4_B200_FWD_TFLOPS = 1613.0
#: The same least-squares fit of 1/rate = (1 + 2 row_keys / N) / R over the 4k-32k points (the
#: sequence lengths the Blackwell training rows run; every point within 3.4 %; the 2k points sit
#: 26 / 36 % and the 1k forward 46 % under the law, short kernels at batch 1): forward R 1,600
#: TFLOP/s, row cost 1,696; backward R 1,251, row cost 1,521. Its asymptote is FA4's (1,600 against 1,613); the 1.3x FA4 claims over
#: cuDNN 9.13 is the row term (at 8k causal the law gives 1,131). The unmasked row cost is not in
#: the file: the causal one less FA3's diagonal-tile term (311 - 199 = 112, the same 128-key tiles);
#: it prices only context-parallel ring steps.


def _cudnn_law(fwd_r: float, fwd_row: float, bwd_r: float, bwd_row: float) -> AttnLaw:
    """A cuDNN law from its B200 asymptotes (TFLOP/s) and causal row costs (key columns), its level
    stated against the catalog's FA4 figure; the unmasked row cost is the causal one less FA3's
    diagonal-tile term (112)."""
    return AttnLaw("cudnn", fwd_full=fwd_row - 112.0, fwd_causal=fwd_row, bwd_full=bwd_row - 112.0,
                   bwd_causal=bwd_row, ref_seq=32768.0, fwd_level=FA4_B200_FWD_TFLOPS / fwd_r,
                   bwd_level=FA4_B200_FWD_TFLOPS * ATTN_BWD_EFF_RATIO / bwd_r)


CUDNN_B200 = _cudnn_law(1600.0, 1696.0, 1251.0, 1521.0)


#: GB200's rate over B200's for the same kernel: the catalog's ratio (specs/data/accelerators.yaml
#: gb200 `efficiency.attention`: the MAMF matmul rates 1,822 / 1,745 TFLOP/s). The newer cuDNN curves
#: below were published on GB200 only; their asymptotes are divided by it to state them on B200.
GB200_OVER_B200 = 1822.0 / 1745.0
#: The same repository's later GB200 runs, BF16, causal (top_left), head dim 128, 64 query / 8 KV
#: heads, non-deterministic backward; TFLOP/s at 2k, 4k, 8k, 16k, 32k:
#: cuDNN 9.18.1 (cudnn_backend_version 91801): results/gb200_918_only_cudnn/llama3.1_20260126_110503.csv
#: (commit b8c06560, batch 1); cuDNN 9.22 (92200): results/llama3.1/gb200/llama3.1_20260424_100750.csv
#: (commit 3929da2, batch 2; its 32k points fall below its 16k ones).
CUDNN_GB200_SEQ_LENS = (2048, 4096, 8192, 16384, 32768)
CUDNN_GB200_CAUSAL = {
    ("9.18", "fwd"): (1022.0, 1297.0, 1563.0, 1646.0, 1686.0),
    ("9.18", "bwd"): (824.0, 1105.0, 1279.0, 1371.0, 1441.0),
    ("9.22", "fwd"): (1097.0, 1408.0, 1574.0, 1708.0, 1622.0),
    ("9.22", "bwd"): (885.0, 1148.0, 1332.0, 1328.0, 1226.0),
}


#: cuDNN 9.18 and 9.22, the 9.13 law's least-squares fit over 4k-32k of the GB200 curves; asymptotes
#: divided by GB200_OVER_B200. 9.18: forward R 1,792 on GB200 (1,716 on B200), row cost 738, every point
#: within 2.9 %; backward 1,502 (1,438), 733, within 0.6 %. 9.22: forward 1,734 (1,661), 449, within
#: 4.1 %; backward 1,329 (1,273), 240, within 6.9 % (the falling 32k points pull its asymptote below 9.18's).
CUDNN_918_B200 = _cudnn_law(1792.0 / GB200_OVER_B200, 738.0, 1502.0 / GB200_OVER_B200, 733.0)
CUDNN_922_B200 = _cudnn_law(1734.0 / GB200_OVER_B200, 449.0, 1329.0 / GB200_OVER_B200, 240.0)
#: (major, minor) of each published curve, ascending: a run takes the newest at or below its version
#: (older than 9.13: the 9.13 curve, an upper bound on those releases' speed)
CUDNN_LAWS: tuple[tuple[tuple[int, int], AttnLaw], ...] = (
    ((9, 13), CUDNN_B200), ((9, 18), CUDNN_918_B200), ((9, 22), CUDNN_922_B200))
#: with no version known: the newest published curve (a current container's)
CUDNN_DEFAULT = CUDNN_LAWS[-1][0]


def assumed_cudnn_version(generation: str | None, te_fused: bool, stated: str | None) -> str | None:
    """The cuDNN release a run is priced at without saying so: Transformer Engine's fused attention
    (`te_fused`) on Blackwell with no release `stated` takes CUDNN_DEFAULT's curve, which `train` and
    `plan train` name among their defaults; None where no curve was assumed."""
    if stated is not None or not te_fused or generation != "blackwell":
        return None
    return ".".join(str(x) for x in CUDNN_DEFAULT)
_CUDNN_TEXT = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)?(?:-\d+)?")


def parse_cudnn_version(text: object, *, field: str = "cudnn-version") -> tuple[int, int]:
    """'9.18', '9.18.1' or '9.20.0.48-1' -> (9, 18); anything else an input error naming `field`.
    Only cuDNN 9 is accepted: the Blackwell fused-attention curves are all cuDNN 9."""
    m = _CUDNN_TEXT.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None or int(m.group(1)) != 9 or int(m.group(2)) > 99:
        raise InputError(field, f"must be a cuDNN 9 version such as 9.18 or 9.18.1, got {text!r}")
    return 9, int(m.group(2))


def cudnn_law(version: tuple[int, int] | None) -> AttnLaw:
    """The Blackwell cuDNN fused-attention law of a cuDNN version (None: CUDNN_DEFAULT)."""
    version = CUDNN_DEFAULT if version is None else version
    law = CUDNN_LAWS[0][1]
    for at, candidate in CUDNN_LAWS:
        if at <= version:
            law = candidate
    return law


def law_for(generation: str, kernel: str) -> AttnLaw | None:
    """The shape law of the fused-attention `kernel` ("flash" = the part's best, "flash2";
    "te_fused" = Transformer Engine's fused attention, which Megatron-Core / NeMo train through) on a
    part of `generation`, or None where no curve of that kernel was retrieved (Blackwell's FA4 and
    TensorRT-LLM / FlashInfer kernels, AMD's aiter, Volta, Triton FlashAttention, TPUs, Gaudi): there
    the catalog's constant stays. Transformer Engine picks cuDNN's fused attention over FlashAttention
    from compute capability 9.0 (dot_product_attention/utils.py get_attention_backend, "give
    FusedAttention preference on Hopper+"): on Blackwell that is the cuDNN law; on the other parts
    it keeps the "flash" law the catalog was built with. "te_fused@9.18" names the cuDNN version
    that ran (`cudnn_law`); bare "te_fused" takes CUDNN_DEFAULT."""
    kernel, _, cudnn = kernel.partition("@")
    if generation == "blackwell" and kernel == "te_fused":
        return cudnn_law(parse_cudnn_version(cudnn) if cudnn else None)
    if kernel == "te_fused":
        kernel = "flash"
    if generation == "hopper":
        return {"flash": FA3, "flash2": FA2, "triton": TRITON_FA1}.get(kernel)
    if generation in ("ampere", "ada") and kernel in ("flash", "flash2"):
        return FA2_AT_8K
    if generation in ("ampere", "ada") and kernel == "triton":
        return TRITON_FA1_AT_8K
    return None
