"""The time of one engine iteration, from the batch's exact composition.

A batch is the aggregates `cost.layer.LayerCost` takes (tokens, prefill query-key pairs, cached
tokens read by prefill chunks, decoding sequences and their summed context) plus the rows that
need logits. Its time is a named breakdown (`PARTS`, `IterationCost.breakdown`) and `time_s` is
the breakdown's sum: the token-count-only parts (GEMMs, norms, TP collectives, embedding,
pipeline hand-offs) are computed once per token count and the LM head once per logit-row count,
the attention parts are linear arithmetic on precomputed coefficients, so an iteration costs
O(1) Python and builds no dict.
With PP the iteration is one micro-batch's trip through every stage (stage times summed, plus
the p2p hand-offs); the stages work on other micro-batches meanwhile (see engine.py).
"""

from __future__ import annotations

from bisect import bisect_left

from parasim.cost.comm import Group, collective_time_s, p2p_all_reduce_s
from parasim.cost.dtypes import attention_dtype
from parasim.cost.layer import EdgeCost, LayerCost, Sharding
from parasim.cost.sampler import sampler_s_per_row
from parasim.cost.quant_bytes import SCALE_BITS_PER_ELEMENT, quant_scope
from parasim.serving.plan import ACT_QUANT, ACT_QUANT_SEPARATE, ServingPlan
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec


#: vLLM's custom all-reduce handles buffers up to 8 MiB (CustomAllreduce max_size); TensorRT-LLM's
#: AllReduce plugin switches to NCCL at a similar size.
CUSTOM_ALLREDUCE_MAX_BYTES = 8 * 1024 * 1024

#: The parts of an iteration that depend on its token count only (whole replica, every layer).
TOKEN_PARTS = ("attn_gemms", "mlp", "moe", "elementwise", "tp_comm", "ep_comm", "act_quant", "embedding", "pp_p2p")
#: Every named part of an iteration's time (`IterationCost.breakdown`); they sum to `time_s`.
#: `eager_host_wait` is the GPU waiting for the host: eager kernel issue, or a Python executor's
#: per-sequence work longer than the GPU's (host_s_per_sequence).
PARTS = (*TOKEN_PARTS, "lm_head", "attn_prefill", "attn_decode", "overhead", "eager_host_wait")


def windowed_pairs_bound(count: float, rows: float, window: int) -> float:
    """Query-key pairs (or cached keys read) of `rows` query rows under a sliding window: each row
    meets at most `window` keys, so min(count, rows x window); with window >= every row's
    context the count itself (full attention, exactly)."""
    cap = rows * window
    return count if count <= cap else cap


class IterationCost:
    """One engine's iteration time as a function of its batch's aggregates, precomputed for a
    model, cluster and plan so that each iteration costs O(1) Python."""

    def __init__(self, model: ModelSpec, cluster: ClusterSpec, *, tp: int, pp: int, weights: str, kv_dtype: str,
                 act_dtype: str, overhead_s: float, eager_prefill_layer_s: float = 0.0,
                 act_quant: str = "fused", custom_allreduce: bool = True, cuda_graph_max_batch: int | None = None,
                 ep: int = 1, attention: str = "flash", host_s_per_context_token: float = 0.0,
                 host_s_per_sequence: float = 0.0, decode_attention: str = "grouped", moe_gemm: str = "cutlass",
                 serial_host_s_per_sequence: float = 0.0, attention_window: str = "model",
                 cuda_graph_batch_sizes: tuple[int, ...] | None = None, expert_padding: str = "none",
                 sampler: str = "none") -> None:
        self.model, self.cluster, self.tp, self.pp = model, cluster, tp, pp
        # ep > 1: this replica's batch meets ep - 1 others' in the MoE all-to-all (DP attention), so
        # the local experts see ep batches' tokens (equal batches; cost.routing charges the busiest rank)
        sharding = Sharding(tp=tp, ep=ep, moe_token_sets=ep) if ep > 1 else Sharding(tp=tp)
        # what a quantized checkpoint holds: its scales, and the block modules it keeps 16-bit
        self.quant = quant_scope(model, weights)
        # expert_padding "marlin": the routed experts run vLLM's Marlin MoE kernel (cost.quant.marlin_runs)
        self.marlin_moe = expert_padding == "marlin"
        self.layer = LayerCost(model, cluster, sharding, weight_dtype=weights, act_dtype=act_dtype,
                              kv_dtype=kv_dtype, moe_gemm=moe_gemm, quant=self.quant, attention_kernel=attention,
                              marlin_moe=self.marlin_moe)
        self.edge = EdgeCost(self.layer)
        self.moe_layers = model.moe_layers
        self.dense_layers = model.layers - model.moe_layers
        self.layers = model.layers
        self._groups = self._layer_groups(sharding, act_dtype, kv_dtype, moe_gemm)
        # a calibration profile's additive host overhead rides on the accelerator (specs.profile)
        self.overhead_s = max(0.0, overhead_s + cluster.accelerator.efficiency.calibrated_iteration_overhead_s)
        self.custom_allreduce = custom_allreduce
        # host floor of an iteration that contains prefill work run eagerly (no CUDA graph)
        self.eager_prefill_s = self.layers * float(eager_prefill_layer_s or 0.0)
        # decode batches larger than the largest captured CUDA graph run eagerly as well
        self.graph_max = cuda_graph_max_batch if cuda_graph_max_batch is not None else 1 << 62
        # host work per token of the scheduled sequences' histories (ServingPlan.host_s_per_context_token)
        self.ctx_host_s = float(host_s_per_context_token or 0.0)
        # host work per sampling sequence, overlapped with the GPU (ServingPlan.host_s_per_sequence)
        self.seq_host_s = float(host_s_per_sequence or 0.0)
        # host work per sampling sequence in series with the GPU (ServingPlan.serial_host_s_per_sequence)
        self.serial_host_s = float(serial_host_s_per_sequence or 0.0)
        # CUDA-graph padding (ServingPlan.cuda_graph_batch_sizes): the captured decode batch sizes
        self.graph_pad = tuple(cuda_graph_batch_sizes or ())
        # the sampler's memory-bound passes per sampled row (ServingPlan.sampler, cost.sampler),
        # charged with the LM head: per logit row, so per-count cached like it
        self.sampler_row_s = sampler_s_per_row(sampler, model.vocab, cluster.accelerator)
        # p2p between stages: one activation tensor per boundary, over NVLink when a stage's TP group
        # and the next share a node
        self._p2p_group = Group.strided(2, tp, cluster)
        self._act_quant_setup(act_quant)
        self._parts: dict[int, tuple[float, ...]] = {}  # tokens -> _token_parts()
        self._fixed: dict[int, float] = {}  # tokens -> _fixed_s()
        self._head: dict[int, float] = {}  # logit rows -> LM head
        # LayerCost.attention_s, unrolled into coefficients for _attention_s
        l, acc = self.layer, cluster.accelerator
        dt = attention_dtype(l.adt)
        inv_flops = 1.0 / (acc.sustained_peak(dt) * acc.efficiency.attention)
        inv_bw = 1.0 / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory)
        # prefill by a FlashAttention-2-generation kernel runs at attention_fa2_ratio of the catalog's rate
        fa2 = acc.efficiency.attention_fa2_ratio if attention == "flash2" else 1.0
        self._pf = l.prefill_flops_per_pair * inv_flops / fa2
        # the kernel's rate by sequence length and mask (cost.attn_shape): each prefill query row
        # adds its fixed cost in key columns, the asymptote is the catalog's point scaled back out
        self._pr = 0.0
        if l.attn_law is not None:
            self._pf *= l.attn_law.ref_scale()
            self._pr = self._pf * l.attn_law.extra_pairs(1.0)
        self._pq = l.qkvo_act_per_token * inv_bw
        self._pk = l.kv_bytes_per_token * inv_bw
        # decode reads of the cache: once per KV head (grouped), or once per query head of its group
        # (per_query_head: masked MHA's thread block per query head; plan.DECODE_ATTENTION)
        self.kv_reads = l.heads // l.kv_heads if decode_attention == "per_query_head" and not model.mla else 1
        self._pkd = self._pk * self.kv_reads
        self._df = l.decode_flops_per_ctx * inv_flops
        self._ko = acc.efficiency.kernel_overhead_s
        # sliding-window layers (ModelSpec.sliding_window): their queries see at most `window` keys,
        # when the engine's kernel applies the window (plan.ATTENTION_WINDOW; 0 = every layer full)
        self.window = model.sliding_window if attention_window == "model" and model.windowed_layers else 0
        self._wl = model.windowed_layers if self.window else 0

    def _act_quant_setup(self, act_quant: str) -> None:
        """Separate activation-quantization kernels before low-precision GEMMs (plan.ACT_QUANT): which
        inputs the mode quantizes in kernels of their own, how many launches and what each moves."""
        kernels, reads = ACT_QUANT[act_quant]
        low_precision = self.layer.cdt not in ("bf16", "fp16", "fp32", "tf32")
        self._aq_attn = self.quant is None or self.quant.attention  # a scope may keep attention 16-bit
        # the separately quantized inputs of this mode (plan.ACT_QUANT_SEPARATE) the scope quantizes
        self._aq_inputs = tuple(i for i in ACT_QUANT_SEPARATE[act_quant] if self._aq_attn or i in ("gate_up", "down"))
        self._aq_kernels = kernels * len(self._aq_inputs) if low_precision else 0
        self._aq_reads = reads
        # bytes written per quantized element: 8-bit units one, NVFP4 half a byte plus its E4M3 scale per 16
        # (cost.quant_bytes; TensorRT-LLM's fp4_quantize writes the block scales with the values)
        self._aq_out_b = (0.5 + SCALE_BITS_PER_ELEMENT["nvfp4"] / 8.0) if self.layer.cdt == "fp4" else 1.0

    def _layer_groups(self, sharding: Sharding, act_dtype: str, kv_dtype: str,
                      moe_gemm: str) -> tuple[tuple[int, bool, LayerCost, bool], ...]:
        """(layers, MoE?, their LayerCost, activation quantization?) of every kind of layer: dense,
        MoE, and, for a checkpoint that keeps its first and last layers 16-bit, those two."""
        model, q = self.model, self.quant
        groups = [(self.dense_layers, False, self.layer, True), (self.moe_layers, True, self.layer, True)]
        if q is None or not q.edge_layers_16bit:
            return tuple(groups)
        edge = LayerCost(model, self.cluster, sharding, weight_dtype=act_dtype, act_dtype=act_dtype,
                         kv_dtype=kv_dtype, moe_gemm=moe_gemm)
        n_edge = len({0, model.layers - 1})  # a dense model's (ModelSpec refuses the scope on MoE ones)
        return ((self.dense_layers - n_edge, False, self.layer, True), (self.moe_layers, True, self.layer, True),
                (n_edge, False, edge, False))

    @classmethod
    def for_plan(cls, model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, *, tp: int | None = None,
                 pp: int | None = None, weights: str | None = None) -> IterationCost:
        """The iteration cost of `plan`'s engine (tp / pp / weights override the plan's, e.g. for one
        pool of a disaggregated plan or a planner candidate)."""
        return cls(model, cluster, **cls.plan_args(model, plan, tp=tp, pp=pp, weights=weights))

    @staticmethod
    def plan_args(model: ModelSpec, plan: ServingPlan, *, tp: int | None = None, pp: int | None = None,
                  weights: str | None = None) -> dict:
        """Every plan-derived argument of the constructor: what `for_plan` passes, and so the whole
        key under which two plans' costs are the same object (`serving.simulate.iteration_cost`)."""
        plan = plan.resolved(model)
        return dict(tp=tp or plan.tp, pp=pp or plan.pp, weights=weights or plan.weights,
                    kv_dtype=plan.kv, act_dtype=plan.act_dtype, overhead_s=plan.overhead_s,
                    eager_prefill_layer_s=plan.eager_prefill_layer_s or 0.0, act_quant=plan.act_quant,
                    custom_allreduce=plan.custom_allreduce, cuda_graph_max_batch=plan.cuda_graph_max_batch,
                    ep=plan.ep, attention=plan.attention,
                    host_s_per_context_token=plan.host_s_per_context_token,
                    host_s_per_sequence=plan.host_s_per_sequence, decode_attention=plan.decode_attention,
                    moe_gemm=plan.moe_gemm, serial_host_s_per_sequence=plan.serial_host_s_per_sequence,
                    attention_window=plan.attention_window, cuda_graph_batch_sizes=plan.cuda_graph_batch_sizes,
                    expert_padding=plan.expert_padding, sampler=plan.sampler)

    def tp_allreduce_s(self, size: float) -> float:
        """One TP all-reduce as serving engines run it: inside an NVLink domain and up to
        CUSTOM_ALLREDUCE_MAX_BYTES, the engine's custom one-shot or two-shot P2P kernel
        (`cost.comm.p2p_all_reduce_s`), which the engines run whenever it applies (vLLM's
        should_custom_ar, TensorRT-LLM's AUTO strategy below its workspace size), even at the few
        kilobytes where NCCL's LL protocol would be as fast; NCCL otherwise, and always when the plan
        turns the custom kernel off (vLLM `--disable-custom-all-reduce`) or the GPUs reach each
        other over PCIe only: TensorRT-LLM's AUTO strategy picks NCCL when the peers lack NVLink
        (AllreducePlugin::selectImplementation; the PyTorch backend's allreduceOp falls back to
        NCCL likewise), and vLLM disables its custom all-reduce on more than two PCIe-only GPUs."""
        n = self.tp
        if n <= 1 or size <= 0:
            return 0.0
        group = self.layer.tp_group
        if (not self.custom_allreduce or self.cluster.accelerator.scale_up == "pcie" or group.per_node < n
                or size > CUSTOM_ALLREDUCE_MAX_BYTES):
            return collective_time_s("all_reduce", size, group, self.cluster)
        return p2p_all_reduce_s(size, n, self.cluster)

    def act_quant_s(self, tokens: int, moe: bool) -> float:
        """One layer's separate activation-quantization kernels: each quantized GEMM input is read
        `reads` times at 16 bits and written once at 8 bits, plus the kernels' fixed cost."""
        if not self._aq_kernels or tokens <= 0:
            return 0.0
        m, l, acc = self.model, self.layer, self.cluster.accelerator
        down = (m.moe_ffn_hidden * m.experts_per_token // l.etp) if moe else m.ffn_hidden // self.tp
        # each input's width: QKV and gate/up read the hidden state, the output projection the heads,
        # down the MLP's intermediate (16-bit attention projections: only the MLP's inputs, _aq_inputs)
        widths = {"qkv": m.hidden, "o": m.q_dim // self.tp, "gate_up": m.hidden, "down": down}
        width = sum(widths[i] for i in self._aq_inputs)
        bytes_moved = tokens * width * (self._aq_reads * l.ab + self._aq_out_b)
        return (bytes_moved / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory)
                + self._aq_kernels * acc.efficiency.kernel_overhead_s)

    def _token_parts(self, tokens: int) -> tuple[float, ...]:
        """Seconds of the TOKEN_PARTS, in that order, over the whole replica: the parts of an
        iteration that depend on its token count only (cached per count by `_fixed_s`)."""
        if tokens <= 0:
            return (0.0,) * len(TOKEN_PARTS)
        l, tp = self.layer, self.tp
        attn_gemms = mlp = moe = elementwise = ep_comm = act_quant = 0.0
        for n, is_moe, lc, quantized in self._groups:
            if n:
                f = lc.forward(tokens, moe=is_moe)
                attn_gemms += n * f["attn_gemms"]
                elementwise += n * f["elementwise"]
                ep_comm += n * f["ep_comm"]
                if quantized:
                    act_quant += n * self.act_quant_s(tokens, is_moe)
                if is_moe:
                    moe += n * f["moe"]
                else:
                    mlp += n * f["mlp"]
        size = tokens * self.model.hidden * l.ab
        # the layer's two TP all-reduces as the engine runs them (tp_allreduce_s)
        per_layer_tp = l.tp_comm_s(tokens) if l.s.sp else 2 * self.tp_allreduce_s(size)
        pp_p2p = (self.pp - 1) * collective_time_s("p2p", size, self._p2p_group, self.cluster) if self.pp > 1 else 0.0
        return (attn_gemms, mlp, moe, elementwise, self.layers * per_layer_tp if tp > 1 else 0.0, ep_comm,
                act_quant, self.edge.embedding_s(tokens), pp_p2p)

    def _fixed_s(self, tokens: int) -> float:
        """The TOKEN_PARTS' sum plus the fixed overhead for `tokens`, computed once per count."""
        f = self._fixed.get(tokens)
        if f is None:
            self._parts[tokens] = parts = self._token_parts(tokens)
            f = self._fixed[tokens] = sum(parts) + self.overhead_s
        return f

    def _lm_head_s(self, logits: int) -> float:
        """The LM head for `logits` rows, computed once per count."""
        h = self._head.get(logits)
        if h is None:
            h = self.edge.lm_head_s(logits)
            if self.sampler_row_s:
                h += self.sampler_row_s * logits  # the sampler's passes over each sampled row's vocabulary
            self._head[logits] = h
        return h

    def _attention_s(self, tokens: int, prefill_pairs: float, prefill_kv_tokens: float, decode_seqs: int,
                     decode_ctx: float, queries: int = 1) -> tuple[float, float]:
        """(prefill, decode) attention of the average layer: LayerCost.attention_s unrolled into the
        coefficients precomputed in __init__ (roofline max(flops, bytes) + kernel overhead).
        `queries` per decoding sequence read its cached KV once: FLOPs grow with them, KV bytes do not.
        A model with sliding-window layers averages its full and windowed layers (`_windowed_s`)."""
        if self.window:
            return self._windowed_s(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx, queries)
        return self._layer_attention_s(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx, queries)

    def _windowed_s(self, tokens: int, prefill_pairs: float, prefill_kv_tokens: float, decode_seqs: int,
                    decode_ctx: float, queries: int) -> tuple[float, float]:
        """The layer average of a model whose `_wl` layers attend to the last `window` tokens only:
        a windowed layer's query meets at most `window` keys, so its prefill pairs and cached-KV reads
        are at most window x prefill tokens and its decode reads at most window x decoding sequences
        (`windowed_pairs_bound`): exact when every query is past the window (gpt-oss's 128 tokens
        after the first 128 of a prompt) or every one is inside it (the whole context under the
        window, where the bound is the full count); between the two it charges a little too much.
        O(1): the batch's aggregates are all it needs."""
        w = self.window
        rows = tokens - decode_seqs
        pre_f, dec_f = self._layer_attention_s(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx,
                                               queries)
        pre_w, dec_w = self._layer_attention_s(tokens, windowed_pairs_bound(prefill_pairs, rows, w),
                                               windowed_pairs_bound(prefill_kv_tokens, rows, w), decode_seqs,
                                               windowed_pairs_bound(decode_ctx, decode_seqs, w), queries)
        full, wl = self.layers - self._wl, self._wl
        return (full * pre_f + wl * pre_w) / self.layers, (full * dec_f + wl * dec_w) / self.layers

    def _layer_attention_s(self, tokens: int, prefill_pairs: float, prefill_kv_tokens: float, decode_seqs: int,
                           decode_ctx: float, queries: int = 1) -> tuple[float, float]:
        """(prefill, decode) attention of one layer that sees these aggregates."""
        pre = dec = 0.0
        if prefill_pairs > 0:
            c = self._pf * prefill_pairs + self._pr * (tokens - decode_seqs)
            m = (tokens - decode_seqs) * self._pq + prefill_kv_tokens * self._pk
            pre = (c if c > m else m) + self._ko
        if decode_seqs > 0:
            c = self._df * decode_ctx * queries
            m = decode_ctx * self._pkd + decode_seqs * queries * self._pq
            dec = (c if c > m else m) + self._ko
        return pre, dec

    def _eager(self, prefill_pairs: float, decode_seqs: int) -> bool:
        """An iteration the host issues kernel by kernel (prefill work, or a decode batch past the
        largest CUDA graph): its GPU time cannot be shorter than the host's issue time."""
        return prefill_pairs > 0 or decode_seqs > self.graph_max

    def padded(self, tokens: int, prefill_pairs: float, decode_seqs: int) -> int:
        """The decode batch a CUDA-graph-padded engine runs for this iteration: the smallest captured
        size >= `decode_seqs` for a decode-only iteration within the captured sizes, else the batch
        itself (mixed iterations run eagerly, unpadded; TensorRT-LLM's
        `_filter_cuda_graph_batch_sizes` / `_get_padded_batch`)."""
        pad = self.graph_pad
        if not pad or prefill_pairs > 0 or tokens != decode_seqs or not 0 < decode_seqs <= pad[-1]:
            return decode_seqs
        return pad[bisect_left(pad, decode_seqs)]

    def time_s(self, tokens: int, prefill_pairs: float, prefill_kv_tokens: float, decode_seqs: int,
               decode_ctx: float, logits: int) -> float:
        """Seconds for one iteration of the whole replica (all stages, one micro-batch): the sum of
        `breakdown`'s parts, without building it (the hot path). A padded decode batch (`padded`)
        runs its GEMMs, LM head and attention over the dummy slots too (one cached token each); the
        executor's per-sequence host work stays with the real sequences."""
        g_tokens, g_seqs, g_ctx, g_logits = tokens, decode_seqs, decode_ctx, logits  # what the GPU runs
        if self.graph_pad:
            p = self.padded(tokens, prefill_pairs, decode_seqs)
            if p != decode_seqs:
                g_tokens = g_seqs = g_logits = p
                g_ctx = decode_ctx + (p - decode_seqs)
        pre, dec = self._attention_s(g_tokens, prefill_pairs, prefill_kv_tokens, g_seqs, g_ctx)
        f = self._fixed.get(g_tokens)  # the caches read inline: this runs once per simulated iteration
        h = self._head.get(g_logits)
        t = ((self._fixed_s(g_tokens) if f is None else f) + (self._lm_head_s(g_logits) if h is None else h)
             + self.layers * (pre + dec))
        host = self.eager_prefill_s
        if host and host > t - self.overhead_s and self._eager(prefill_pairs, g_seqs):
            t = host + self.overhead_s  # the GPU waits for the host's last kernel
        if self.seq_host_s and self.seq_host_s * logits > t - self.overhead_s:
            t = self.seq_host_s * logits + self.overhead_s  # the GPU waits for the executor's per-sequence work
        if self.ctx_host_s:
            t += self._ctx_host(tokens, prefill_kv_tokens, decode_seqs, decode_ctx)
        if self.serial_host_s:
            t += self.serial_host_s * logits  # the GPU idles while the host walks the (real) batch
        return t

    def _ctx_host(self, tokens: int, prefill_kv_tokens: float, decode_seqs: int, decode_ctx: float) -> float:
        """Host time to ship every scheduled sequence's history (its cached and new tokens, one new
        token per decode) to the workers before the launch (`ServingPlan.host_s_per_context_token`)."""
        return self.ctx_host_s * (decode_ctx + prefill_kv_tokens + tokens - decode_seqs)

    def breakdown(self, tokens: int, prefill_pairs: float = 0.0, prefill_kv_tokens: float = 0.0,
                  decode_seqs: int = 0, decode_ctx: float = 0.0, logits: int = 0) -> dict[str, float]:
        """Named breakdown (seconds, the PARTS) of one iteration; `total` is their sum, which is
        time_s() (the same cached parts and attention arithmetic; a padded decode batch's parts at
        its padded size, `padded`)."""
        ctx_host = self._ctx_host(tokens, prefill_kv_tokens, decode_seqs, decode_ctx)
        p = self.padded(tokens, prefill_pairs, decode_seqs)
        if p != decode_seqs:
            tokens, decode_ctx, decode_seqs, gpu_logits = p, decode_ctx + (p - decode_seqs), p, p
        else:
            gpu_logits = logits
        pre, dec = self._attention_s(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx)
        self._fixed_s(tokens)  # fills self._parts[tokens]
        out = dict(zip(TOKEN_PARTS, self._parts[tokens]))
        host = ctx_host + self.serial_host_s * logits
        out.update(lm_head=self._lm_head_s(gpu_logits), attn_prefill=self.layers * pre, attn_decode=self.layers * dec,
                   overhead=self.overhead_s + host, eager_host_wait=0.0)
        gpu = sum(out.values()) - self.overhead_s - host
        if self.eager_prefill_s > gpu and self._eager(prefill_pairs, decode_seqs):
            out["eager_host_wait"] = self.eager_prefill_s - gpu
        if self.seq_host_s * logits > gpu + out["eager_host_wait"]:
            out["eager_host_wait"] = self.seq_host_s * logits - gpu
        out["total"] = sum(out.values())
        return out

    def decode_step_s(self, n: int):
        """`time_s` of a decode-only iteration of `n` sequences (n tokens, n logits, no prefill)
        as a function of their summed context, with what depends on `n` alone bound once: a
        decode run steps it once per iteration with `n` fixed. The same float operations as
        `time_s` (the prefill attention term is 0.0, and 0.0 + x is x). A subclass that
        re-prices an iteration gets its own `time_s` back."""
        fns = self.__dict__.setdefault("_decode_fns", {})  # n -> its function, built once
        fn = fns.get(n)
        if fn is None:
            fn = fns[n] = self._decode_step_fn(n)
        return fn

    def _decode_step_fn(self, n: int):
        cls = type(self)
        if (cls.time_s is not IterationCost.time_s or cls._attention_s is not IterationCost._attention_s
                or self.window  # windowed layers: time_s's own arithmetic
                or self.padded(n, 0.0, n) != n):
            return lambda ctx: self.time_s(n, 0.0, 0.0, n, ctx, n)
        base = self._fixed_s(n) + self._lm_head_s(n)
        layers, df, pk, npq, ko = self.layers, self._df, self._pkd, n * self._pq, self._ko
        host = self.eager_prefill_s if self._eager(0.0, n) else 0.0
        ov, ch, sh, serial = self.overhead_s, self.ctx_host_s, self.seq_host_s * n, self.serial_host_s

        def step_s(ctx: float) -> float:
            c = df * ctx
            m = ctx * pk + npq
            t = base + layers * ((c if c > m else m) + ko)
            if host and host > t - ov:
                t = host + ov
            if sh and sh > t - ov:
                t = sh + ov
            if ch:
                t += self._ctx_host(n, 0.0, n, ctx)
            if serial:
                t += serial * n
            return t
        return step_s

    def prefill_alone_s(self, prompt_tokens: int) -> float:
        """One prefill of `prompt_tokens` tokens with nothing else in the batch (a lower bound on TTFT)."""
        c = prompt_tokens
        return self.time_s(c, c * (c + 1) / 2.0, 0.0, 0, 0.0, 1)
