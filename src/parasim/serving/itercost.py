"""The time of one engine iteration, from the batch's exact composition.

A batch is the aggregates `cost.layer.LayerCost` takes (tokens, prefill query-key pairs, cached
tokens read by prefill chunks, decoding sequences and their summed context) plus the rows that
need logits. The token-count-only part (GEMMs, norms, TP collectives, embedding, LM head,
pipeline hand-offs) is cached per (tokens, logit rows); the attention part is linear arithmetic.
With PP the iteration is one micro-batch's trip through every stage (stage times summed, plus
the p2p hand-offs); the stages work on other micro-batches meanwhile (see engine.py).
"""

from __future__ import annotations

from parasim.cost.comm import Group, collective_time_s
from parasim.cost.dtypes import attention_dtype
from parasim.cost.layer import EdgeCost, LayerCost, Sharding
from parasim.serving.plan import ACT_QUANT, ACT_QUANT_INPUTS_PER_LAYER, ServingPlan
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec


#: vLLM's custom all-reduce handles buffers up to 8 MiB (CustomAllreduce max_size); TensorRT-LLM's
#: AllReduce plugin switches to NCCL at a similar size.
CUSTOM_ALLREDUCE_MAX_BYTES = 8 * 1024 * 1024


class IterationCost:
    def __init__(self, model: ModelSpec, cluster: ClusterSpec, *, tp: int, pp: int, weights: str, kv_dtype: str,
                 act_dtype: str, overhead_s: float, eager_prefill_layer_s: float = 0.0,
                 act_quant: str = "fused", custom_allreduce: bool = True, cuda_graph_max_batch: int | None = None,
                 ep: int = 1) -> None:
        self.model, self.cluster, self.tp, self.pp = model, cluster, tp, pp
        # ep > 1: this replica's batch meets ep - 1 others' in the MoE all-to-all (DP attention), so
        # the local experts see ep batches' tokens (the replicas are taken as equally loaded)
        sharding = Sharding(tp=tp, ep=ep, moe_token_sets=ep) if ep > 1 else Sharding(tp=tp)
        self.layer = LayerCost(model, cluster, sharding, weight_dtype=weights, act_dtype=act_dtype,
                               kv_dtype=kv_dtype)
        self.edge = EdgeCost(self.layer)
        self.moe_layers = model.moe_layers
        self.dense_layers = model.layers - model.moe_layers
        self.layers = model.layers
        self.overhead_s = overhead_s
        self.custom_allreduce = custom_allreduce
        # host floor of an iteration that contains prefill work run eagerly (no CUDA graph)
        self.eager_prefill_s = self.layers * float(eager_prefill_layer_s or 0.0)
        # decode batches larger than the largest captured CUDA graph run eagerly as well
        self.graph_max = cuda_graph_max_batch if cuda_graph_max_batch is not None else 1 << 62
        # p2p between stages: one activation tensor per boundary, over NVLink when a stage's TP group
        # and the next share a node
        self._p2p_group = Group.strided(2, tp, cluster)
        # separate activation-quantization kernels before W8A8 GEMMs (plan.ACT_QUANT), per token and fixed
        kernels, reads = ACT_QUANT[act_quant]
        low_precision = self.layer.cdt not in ("bf16", "fp16", "fp32", "tf32")
        self._aq_kernels = kernels * ACT_QUANT_INPUTS_PER_LAYER if low_precision else 0
        self._aq_reads = reads
        self._fixed: dict[int, float] = {}  # tokens -> layers, embedding, p2p, overhead
        self._head: dict[int, float] = {}  # logit rows -> LM head
        # attention_s(), unrolled into coefficients (the same roofline: max(flops, bytes) + overhead;
        # a test checks it against LayerCost.attention_s)
        l, acc = self.layer, cluster.accelerator
        dt = attention_dtype(l.adt)
        inv_flops = 1.0 / (acc.peak(dt) * acc.efficiency.attention)
        inv_bw = 1.0 / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory)
        self._pf = l.prefill_flops_per_pair * inv_flops
        self._pq = l.qkvo_act_per_token * inv_bw
        self._pk = l.kv_bytes_per_token * inv_bw
        self._df = l.decode_flops_per_ctx * inv_flops
        self._ko = acc.efficiency.kernel_overhead_s

    @classmethod
    def for_plan(cls, model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, *, tp: int | None = None,
                 pp: int | None = None, weights: str | None = None) -> IterationCost:
        """The iteration cost of `plan`'s engine (tp / pp / weights override the plan's, e.g. for one
        pool of a disaggregated plan or a planner candidate)."""
        plan = plan.resolved(model)
        return cls(model, cluster, tp=tp or plan.tp, pp=pp or plan.pp, weights=weights or plan.weights,
                   kv_dtype=plan.kv, act_dtype=plan.act_dtype, overhead_s=plan.overhead_s,
                   eager_prefill_layer_s=plan.eager_prefill_layer_s or 0.0, act_quant=plan.act_quant,
                   custom_allreduce=plan.custom_allreduce, cuda_graph_max_batch=plan.cuda_graph_max_batch,
                   ep=plan.ep)

    def tp_allreduce_s(self, size: float) -> float:
        """One TP all-reduce as serving engines run it: inside an NVLink domain and up to
        CUSTOM_ALLREDUCE_MAX_BYTES, a custom one-shot (read every peer's buffer: one latency,
        (n-1) x size over the links) or two-shot (reduce-scatter + all-gather by P2P: two latencies,
        2 (n-1)/n x size) kernel, whichever is faster; NCCL otherwise, and always when the plan
        turns the custom kernel off (vLLM `--disable-custom-all-reduce`) or the GPUs reach each
        other over PCIe only: TensorRT-LLM's AUTO strategy picks NCCL when the peers lack NVLink
        (AllreducePlugin::selectImplementation; the PyTorch backend's allreduceOp falls back to
        NCCL likewise), and vLLM disables its custom all-reduce on more than two PCIe-only GPUs."""
        n = self.tp
        if n <= 1 or size <= 0:
            return 0.0
        l = self.layer
        nccl = collective_time_s("all_reduce", size, l.tp_group, self.cluster)
        acc = self.cluster.accelerator
        if (not self.custom_allreduce or acc.scale_up == "pcie" or l.tp_group.per_node < n
                or size > CUSTOM_ALLREDUCE_MAX_BYTES):
            return nccl
        bw = acc.link_bw_bytes_per_s * acc.efficiency.nvlink_busbw
        a = acc.efficiency.nvlink_latency_s
        one = a + (n - 1) * size / bw
        two = 2 * a + 2 * (n - 1) / n * size / bw
        return min(one, two, nccl)

    def act_quant_s(self, tokens: int, moe: bool) -> float:
        """One layer's separate activation-quantization kernels: each quantized GEMM input is read
        `reads` times at 16 bits and written once at 8 bits, plus the kernels' fixed cost."""
        if not self._aq_kernels or tokens <= 0:
            return 0.0
        m, l, acc = self.model, self.layer, self.cluster.accelerator
        down = (m.moe_ffn_hidden * m.experts_per_token // l.etp) if moe else m.ffn_hidden // self.tp
        width = 2 * m.hidden + m.q_dim // self.tp + down  # QKV and gate/up inputs, output and down inputs
        bytes_moved = tokens * width * (self._aq_reads * l.ab + 1)
        return (bytes_moved / (acc.hbm_bw_bytes_per_s * acc.efficiency.memory)
                + self._aq_kernels * acc.efficiency.kernel_overhead_s)

    def _fixed_s(self, tokens: int) -> float:
        l = self.layer
        t = 0.0
        if self._aq_kernels:
            t += self.dense_layers * self.act_quant_s(tokens, False) + self.moe_layers * self.act_quant_s(tokens, True)
        if self.tp > 1 and tokens > 0 and not l.s.sp:
            # the layer's two TP all-reduces, as the engine runs them (see tp_allreduce_s)
            size = tokens * self.model.hidden * l.ab
            t += self.layers * (2 * self.tp_allreduce_s(size) - l.tp_comm_s(tokens))
        if self.dense_layers:
            t += self.dense_layers * l.forward_total_s(tokens, 0.0, 0.0, 0.0, 0.0, False)
        if self.moe_layers:
            t += self.moe_layers * l.forward_total_s(tokens, 0.0, 0.0, 0.0, 0.0, True)
        # forward_total_s with no attention work still adds nothing for attention (zero pairs/seqs)
        t += self.edge.embedding_s(tokens)
        if self.pp > 1:
            size = tokens * self.model.hidden * l.ab
            t += (self.pp - 1) * collective_time_s("p2p", size, self._p2p_group, self.cluster)
        return t + self.overhead_s

    def time_s(self, tokens: int, prefill_pairs: float, prefill_kv_tokens: float, decode_seqs: int,
               decode_ctx: float, logits: int) -> float:
        """Seconds for one iteration of the whole replica (all stages, one micro-batch)."""
        f = self._fixed.get(tokens)
        if f is None:
            f = self._fixed[tokens] = self._fixed_s(tokens)
        h = self._head.get(logits)
        if h is None:
            h = self._head[logits] = self.edge.lm_head_s(logits)
        f += h
        a = 0.0
        if prefill_pairs > 0:
            c = self._pf * prefill_pairs
            m = (tokens - decode_seqs) * self._pq + prefill_kv_tokens * self._pk
            a = (c if c > m else m) + self._ko
        if decode_seqs > 0:
            c = self._df * decode_ctx
            m = decode_ctx * self._pk + decode_seqs * self._pq
            a += (c if c > m else m) + self._ko
        t = f + self.layers * a
        if self.eager_prefill_s and (prefill_pairs > 0 or decode_seqs > self.graph_max):
            # an eager iteration: the GPU cannot finish before the host has issued every kernel
            gpu = t - self.overhead_s
            if self.eager_prefill_s > gpu:
                t = self.eager_prefill_s + self.overhead_s
        return t

    def breakdown(self, tokens: int, prefill_pairs: float = 0.0, prefill_kv_tokens: float = 0.0,
                  decode_seqs: int = 0, decode_ctx: float = 0.0, logits: int = 0) -> dict[str, float]:
        """Named breakdown (seconds) of one iteration, for reports; `total` equals time_s()."""
        l = self.layer
        out: dict[str, float] = {}
        for n, moe in ((self.dense_layers, False), (self.moe_layers, True)):
            if not n:
                continue
            f = l.forward(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx, moe=moe)
            for k, v in f.items():
                if k not in ("compute", "comm", "total"):
                    out[k] = out.get(k, 0.0) + n * v
        if self.tp > 1 and tokens > 0 and not l.s.sp:
            size = tokens * self.model.hidden * l.ab
            out["tp_comm"] = self.layers * 2 * self.tp_allreduce_s(size)
        out["act_quant"] = (self.dense_layers * self.act_quant_s(tokens, False)
                            + self.moe_layers * self.act_quant_s(tokens, True))
        out["embedding"] = self.edge.embedding_s(tokens)
        out["lm_head"] = self.edge.lm_head_s(logits)
        out["pp_p2p"] = 0.0
        if self.pp > 1:
            size = tokens * self.model.hidden * l.ab
            out["pp_p2p"] = (self.pp - 1) * collective_time_s("p2p", size, self._p2p_group, self.cluster)
        out["overhead"] = self.overhead_s
        gpu = sum(out.values()) - self.overhead_s
        eager = prefill_pairs > 0 or decode_seqs > self.graph_max
        out["eager_host_wait"] = (self.eager_prefill_s - gpu if eager and self.eager_prefill_s > gpu else 0.0)
        out["total"] = sum(out.values())
        return out

    def prefill_alone_s(self, prompt_tokens: int) -> float:
        """One prefill of `prompt_tokens` tokens with nothing else in the batch (a lower bound on TTFT)."""
        c = prompt_tokens
        return self.time_s(c, c * (c + 1) / 2.0, 0.0, 0, 0.0, 1)
