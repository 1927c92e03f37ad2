"""Intra-device overlap as NanoFlow runs it (Zhu et al., "NanoFlow: Towards Optimal Large Language
Model Serving Throughput", OSDI'25, arXiv 2408.12757).

NanoFlow splits an iteration's batch into N nano-batches and runs operations of different
nano-batches at once on one GPU, the SMs partitioned between them: compute-bound GEMMs (and
prefill attention) beside memory-bound decode attention and network-bound TP collectives. The
engine loop is unchanged; only an iteration's time is (`OverlapIterationCost.time_s`).

Each decoder layer's work falls in three classes, each timed as the plain model times it but per
nano-batch (N kernels of 1/N of the tokens: smaller GEMMs lose efficiency through the roofline's
tile and wave terms and read the weights N times, every kernel pays its launch overhead):
G (GEMMs and prefill attention), M (decode attention, norms, activations: bandwidth-bound) and
K (TP all-reduces, EP all-to-all, pipeline hand-offs). A class is never cheaper split than whole.

Sharing the SMs (NanoFlow section 4.1.3): a GEMM given a share r of the device runs at r of its
speed (NanoFlow measures every kernel's resource use in GEMM-performance units). A bandwidth- or
link-bound kernel speeds up with its SMs until it saturates its bandwidth at share s and then no
further: decode attention at s = GEMV_SATURATION_SHARE, the all-reduce at its grid's SMs
(ALLREDUCE_BLOCKS / SMs). Running all three for the whole layer with constant shares
r_G + r_M + r_K <= 1 finishes in the shortest time T with G/T + s_M M/T + s_K K/T <= 1 and no class
faster than alone (concave speed curves: no time-varying split beats it), and HBM is one
bandwidth for everything: T_fluid = max(G + s_M M + s_K K, G, M, K, HBM), HBM being the bytes
time of the GEMMs (weights read once per nano-batch) and of the memory-bound kernels. A layer's
N nano-batches form a pipeline: the first starts alone and the last ends alone, so the layer
takes T_fluid + (G + M + K - T_fluid) / N (N = 1 is the sequential time). Embedding, LM head and
the host's per-iteration overhead stay sequential.

Small batches: the GEMMs are bound by reading the weights, so HBM ~ G + M and nothing overlaps;
N nano-batches then read the weights N times. The engine keeps its sequential schedule where
splitting does not pay: each iteration takes the fastest of the sequential schedule and 2 .. N
nano-batches (N = the plan's nano_batches), their sizes whole GEMM tiles picked for the best tile
and wave fill (`_sizes`), as NanoFlow's auto-search picks the count and sizes of its pipeline.

Not modelled: NanoFlow's asynchronous CPU scheduling (the plan's iteration_overhead_s stays),
its KV-cache offload to host/SSD, cache interference beyond the measured SM exchange rate, and
per-operation nano-batch sizes (one N for every class; the paper uses 4 for the QKV/attention part
of a 70B layer and 2 for the later GEMMs).
"""

from __future__ import annotations

from dataclasses import replace

from parasim.cost.layer import op_time_s
from parasim.serving.itercost import TOKEN_PARTS, IterationCost
from parasim.serving.plan import DEFAULT_NANO_BATCHES, ServingPlan
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec

#: Share of the device at which decode attention beside GEMMs runs at its solo speed. NanoFlow
#: section 4.1.3 / Fig. 6: decode attention given R = 0.4 of the resources runs at about 80 % of
#: its solo performance; with speed growing in proportion to the SMs until the bandwidth saturates,
#: 0.4 / 0.8 = 0.5.
GEMV_SATURATION_SHARE = 0.5
#: Thread blocks (one SM each) of the engine's TP all-reduce kernel: vLLM custom_all_reduce.cuh
#: launches at most kMaxBlocks = 36 (NCCL's share is taken to be the same).
ALLREDUCE_BLOCKS = 36
#: SMs assumed when the catalog does not give them (A100's 108)
FALLBACK_SMS = 108

_I = {name: i for i, name in enumerate(TOKEN_PARTS)}
_COMPUTE = tuple(_I[n] for n in ("attn_gemms", "mlp", "moe"))
_MEMORY = tuple(_I[n] for n in ("elementwise", "act_quant"))
_NETWORK = tuple(_I[n] for n in ("tp_comm", "ep_comm", "pp_p2p"))

__all__ = ["ALLREDUCE_BLOCKS", "GEMV_SATURATION_SHARE", "OverlapIterationCost", "fluid_layer_s", "overlap_cost"]


def fluid_layer_s(g: float, m: float, k: float, hbm: float, s_mem: float, s_net: float, n: int) -> float:
    """Seconds of N nano-batches' compute (g), memory (m) and network (k) work overlapped on one
    device (the module docstring's T_fluid plus the pipeline's fill and drain)."""
    fluid = max(g + s_mem * m + s_net * k, g, m, k, hbm)
    serial = g + m + k
    return fluid + (serial - fluid) / n


class OverlapIterationCost(IterationCost):
    """The iteration cost with NanoFlow's nano-batch overlap (module docstring); the engine calls
    `time_s` exactly as for the plain schedule."""

    def setup_overlap(self, nano_batches: int) -> None:
        self.n = int(nano_batches)  # the most nano-batches the schedule may use
        self.s_mem = GEMV_SATURATION_SHARE
        self.s_net = min(1.0, ALLREDUCE_BLOCKS / (self.cluster.accelerator.efficiency.sms or FALLBACK_SMS))
        acc = self.cluster.accelerator
        self._inv_bw = 1.0 / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory)
        self._classes: dict[int, tuple[tuple[float, ...], ...]] = {}  # tokens -> _token_classes()
        self._tile = acc.efficiency.gemm_tile_m or 128
        self._table: list[list[tuple[float, int]]] = []  # _partition_table
        self._flops: dict[int, float] = {}  # tokens -> _flop_s()
        self._hbm: dict[int, float] = {}  # tokens -> _gemm_hbm_s()

    def _class_sums(self, tokens: int) -> tuple[float, float, float]:
        """(compute, memory, network) seconds of the token parts for `tokens` tokens, whole replica."""
        if tokens <= 0:
            return 0.0, 0.0, 0.0
        self._fixed_s(tokens)
        p = self._parts[tokens]
        return sum(p[i] for i in _COMPUTE), sum(p[i] for i in _MEMORY), sum(p[i] for i in _NETWORK)

    def _gemm_hbm_s(self, tokens: int) -> float:
        """Seconds the layers' GEMMs keep HBM busy for `tokens` tokens (weights and activations)."""
        h = self._hbm.get(tokens)
        if h is None:
            total = 0.0
            for n, moe in ((self.dense_layers, False), (self.moe_layers, True)):
                if n and tokens > 0:
                    total += n * sum(o.bytes for o in self.layer.token_ops(tokens, moe) if o.kind == "gemm")
            h = self._hbm[tokens] = total * self._inv_bw
        return h

    def _flop_s(self, tokens: int) -> float:
        """Seconds of the layers' GEMMs for `tokens` rows at the device's compute rate (their tile
        and wave fill and launches, not their bytes): what the nano-batch sizes are chosen by, so
        that the choice does not depend on the bandwidths."""
        f = self._flops.get(tokens)
        if f is None:
            f, acc = 0.0, self.cluster.accelerator
            for n, moe in ((self.dense_layers, False), (self.moe_layers, True)):
                if n and tokens > 0:
                    # each GEMM as the layer prices it (cost.layer.op_time_s), with no bytes to move
                    f += n * sum(op_time_s(replace(o, bytes=0.0), acc)
                                 for o in self.layer.token_ops(tokens, moe) if o.kind == "gemm")
            self._flops[tokens] = f
        return f

    def _sizes(self, tokens: int, n: int) -> list[int]:
        """The N nano-batch sizes for `tokens` tokens: whole GEMM tiles (gemm_tile_m rows, as
        NanoFlow's configs use 128-row multiples), one part also taking the rows past the last whole
        tile, split so that the nano-GEMMs fill their tiles and waves best (NanoFlow's auto-search
        picks the sizes); an even split when there are fewer tiles than nano-batches."""
        tile = self._tile
        units, rest = divmod(tokens, tile)
        if units < n:
            q, r = divmod(tokens, n)
            return [q + 1] * r + [q] * (n - r)
        table = self._partition_table(units)
        _, j = min((table[n - 1][units - j][0] + self._flop_s(j * tile + rest), j)
                   for j in range(0 if rest else 1, units - n + 2))
        sizes, u = [j * tile + rest], units - j
        for k in range(n - 1, 0, -1):
            part = table[k][u][1]
            sizes.append(part * tile)
            u -= part
        return sorted(sizes)

    def _partition_table(self, units: int) -> list[list[tuple[float, int]]]:
        """table[k][u] = (least `_flop_s` of u whole tiles' rows in k nano-batches, the tiles of the
        last one): a dynamic programme, grown as larger batches come."""
        t = self._table
        if t and len(t[1]) > units:
            return t
        grow = max(units + 1, 2 * len(t[1]) if t else 0)
        cost = [0.0] + [self._flop_s(u * self._tile) for u in range(1, grow)]
        inf = (float("inf"), 0)
        t[:] = [[(0.0, 0)] + [inf] * (grow - 1), [inf] + [(cost[u], u) for u in range(1, grow)]]
        for _ in range(2, self.n + 1):
            prev = t[-1]
            t.append([min(((prev[u - j][0] + cost[j], j) for j in range(1, u)), default=inf) for u in range(grow)])
        return t

    def _token_classes(self, tokens: int) -> tuple[tuple[float, ...], ...]:
        """Per token count, computed once: the classes' seconds whole (N = 1) with the least HBM
        seconds of any split, then for every N from 2 to the plan's nano_batches the classes over N
        nano-batches (`_sizes`) and the nano-GEMMs' HBM seconds (each reads the weights)."""
        c = self._classes.get(tokens)
        if c is None:
            out = []
            for n in range(2, min(self.n, tokens) + 1):
                sizes = self._sizes(tokens, n)
                parts = [self._class_sums(q) for q in sizes]
                out.append((n, *(sum(x) for x in zip(*parts)), sum(self._gemm_hbm_s(q) for q in sizes)))
            floor = min(hbm_g + m_n for _, _, m_n, _, hbm_g in out)
            c = self._classes[tokens] = ((1, *self._class_sums(tokens), floor), *out)
        return c

    def time_s(self, tokens: int, prefill_pairs: float, prefill_kv_tokens: float, decode_seqs: int,
               decode_ctx: float, logits: int) -> float:
        plain = super().time_s(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx, logits)
        if tokens < 2:
            return plain
        whole, *splits = self._token_classes(tokens)
        _, g_1, m_1, k_1, hbm_floor = whole
        layers, ko = self.layers, self._ko
        pre, dec = self._attention_s(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx)
        attn_hbm = 0.0
        if prefill_pairs > 0:
            attn_hbm += (tokens - decode_seqs) * self._pq + prefill_kv_tokens * self._pk
        if decode_seqs > 0:
            attn_hbm += decode_ctx * self._pkd + decode_seqs * self._pq
        edge = self._parts[tokens][_I["embedding"]] + self._lm_head_s(logits) + self.overhead_s
        best = plain - edge
        g_1 += layers * pre
        m_1 += layers * dec
        attn_hbm *= layers
        if max(g_1, m_1, k_1, hbm_floor + attn_hbm) >= best:  # no split can beat the plain schedule
            return plain
        for n, g_n, m_n, k_n, hbm_g in splits:
            # attention is linear in its work: N nano-kernels cost the whole one plus N - 1 launch overheads
            g = g_n + layers * (pre + (min(n, tokens - decode_seqs) - 1) * ko) if prefill_pairs > 0 else g_n
            m = m_n + layers * (dec + (min(n, decode_seqs) - 1) * ko) if decode_seqs > 0 else m_n
            t = fluid_layer_s(g if g > g_1 else g_1, m if m > m_1 else m_1, k_n if k_n > k_1 else k_1,
                              hbm_g + m_n + attn_hbm, self.s_mem, self.s_net, n)
            if t < best:
                best = t
        t = best + edge
        host = self.eager_prefill_s
        if host and host > t - self.overhead_s and self._eager(prefill_pairs, decode_seqs):
            t = host + self.overhead_s
        if self.seq_host_s and self.seq_host_s * logits > t - self.overhead_s:
            t = self.seq_host_s * logits + self.overhead_s  # as IterationCost.time_s: the host floor stays
        if self.serial_host_s:
            t += self.serial_host_s * logits  # as IterationCost.time_s: host work in series stays
        return t if t < plain else plain


def overlap_cost(model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, *, tp: int) -> OverlapIterationCost:
    """The iteration cost of a `--overlap nanoflow` plan's engine."""
    cost = OverlapIterationCost.for_plan(model, cluster, plan, tp=tp)
    cost.setup_overlap(plan.nano_batches or DEFAULT_NANO_BATCHES)
    return cost
