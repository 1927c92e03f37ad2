"""Speculative decoding: a drafter proposes K tokens, the target verifies them in one pass.

Each verify pass runs K + 1 query tokens per decoding sequence (the last accepted token and K
drafts) and emits, on average, e = (1 - a^(K+1)) / (1 - a) tokens, a being the chance a draft
token is accepted given its predecessors were (Leviathan et al. 2023, "Fast Inference from
Transformers via Speculative Decoding", eq. 1; i.i.d. acceptance). vLLM reports a different
figure, the draft acceptance rate = accepted / proposed = (e - 1) / K.

The engine stays a one-token-per-decoder-per-step loop (engine.py's lockstep decoders, O(1) per
iteration): an engine step is 1/e of a real speculative iteration. Its time is the real
iteration's time divided by e: the target's verify pass over C*e prefill tokens and B*(K+1)
verify tokens (B decoders), plus the drafter's K proposal passes and its own prefill of the
prompts. Throughput, TPOT and KV growth are then right on average; the token bursts (several
tokens at once, then a gap) are not drawn, so ITL percentiles are smoother than measured, and a
short prompt that joins a step with decoders may see its TTFT low by up to one real iteration.
An iteration without decoders (prefill only) has nothing to speculate and costs what it costs.

Why the benefit depends on the batch: at small batches the verify pass is bound by reading the
weights, so K + 1 tokens cost about what one does and the step emits e tokens; at large batches
it is bound by FLOPs, K + 1 tokens cost about K + 1 times one, and the speed-up falls below 1.

Drafters: `draft` (a smaller model of the same tokenizer, run K times at the target's TP),
`eagle` (EAGLE-style head: one decoder layer of the target's shape plus the target's LM head,
run K times; Li et al. 2024), `ngram` (prompt lookup: no GPU work).
"""

from __future__ import annotations

from parasim.cost.memory import kv_cache_bytes_per_token_per_gpu, weight_bytes_per_gpu
from parasim.serving.itercost import TOKEN_PARTS, IterationCost
from parasim.serving.plan import MAX_SPECULATIVE_TOKENS, SPEC_METHODS, ServingPlan
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec

#: the token parts an average decoder layer does not carry (cost.layer's edges, the pipeline hand-offs)
_EMBEDDING, _PP_P2P = TOKEN_PARTS.index("embedding"), TOKEN_PARTS.index("pp_p2p")

__all__ = ["MAX_SPECULATIVE_TOKENS", "SPEC_METHODS", "SpecIterationCost", "spec_cost", "spec_memory", "tokens_per_step"]


def tokens_per_step(acceptance: float, k: int) -> float:
    """Expected tokens one verify pass emits per sequence: 1 + a + a^2 + ... + a^K."""
    if acceptance >= 1.0:
        return float(k + 1)
    return (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)


class SpecIterationCost(IterationCost):
    """The target's iteration cost with speculative decoding (see the module docstring); the
    engine calls `time_s` exactly as for plain decoding."""

    def setup_spec(self, method: str, k: int, acceptance: float, draft: IterationCost | None) -> None:
        self.spec_method, self.k, self.acceptance = method, k, acceptance
        self.e = tokens_per_step(acceptance, k)
        self.draft = draft

    def _attention_s(self, tokens: int, prefill_pairs: float, prefill_kv_tokens: float, decode_seqs: int,
                     decode_ctx: float, queries: int | None = None) -> tuple[float, float]:
        """The target's attention with K + 1 queries per decoding sequence (the verify pass),
        unless `queries` says otherwise (the EAGLE head proposes one token at a time)."""
        return super()._attention_s(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx,
                                    self.k + 1 if queries is None else queries)

    def _one_layer_s(self, tokens: int) -> float:
        """An average decoder layer of the target for `tokens` tokens (GEMMs, norms, TP all-reduces)."""
        self._fixed_s(tokens)
        parts = self._parts[tokens]
        return (sum(parts) - parts[_EMBEDDING] - parts[_PP_P2P]) / self.layers

    def draft_s(self, prefill_tokens: int, prefill_pairs: float, decode_seqs: int, decode_ctx: float) -> float:
        """The drafter's work in one real iteration: K proposal passes for the decoders, and its
        own pass over the prompt tokens of the iteration (it keeps its own KV cache / hidden states)."""
        k, b = self.k, decode_seqs
        if self.spec_method == "ngram":
            return 0.0
        if self.spec_method == "eagle":
            _, dec = self._attention_s(b, 0.0, 0.0, b, decode_ctx, 1) if b else (0.0, 0.0)
            propose = (self._one_layer_s(b) + dec + self._lm_head_s(b)) if b else 0.0
            prompt = self._one_layer_s(prefill_tokens) if prefill_tokens else 0.0
            return k * propose + prompt
        d = self.draft
        propose = (d.time_s(b, 0.0, 0.0, b, decode_ctx, b) - d.overhead_s) if b else 0.0
        prompt = (d.time_s(prefill_tokens, prefill_pairs, 0.0, 0, 0.0, 0) - d.overhead_s) if prefill_tokens else 0.0
        return k * propose + prompt

    def time_s(self, tokens: int, prefill_pairs: float, prefill_kv_tokens: float, decode_seqs: int,
               decode_ctx: float, logits: int) -> float:
        b = decode_seqs
        if b <= 0:
            return super().time_s(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx, logits)
        e, q = self.e, self.k + 1
        c = round((tokens - b) * e)  # the real iteration's prefill tokens
        pairs = prefill_pairs * e
        # the verify pass: B*(K+1) query tokens (its attention: K+1 queries per sequence, _attention_s)
        real = super().time_s(c + b * q, pairs, prefill_kv_tokens, b, decode_ctx, logits + b * self.k)
        return (real + self.draft_s(c, pairs, b, decode_ctx)) / e

    def engine_budget(self, budget: int) -> int:
        """The per-engine-step token budget: a real iteration's budget spread over its e steps."""
        return max(1, int(budget / self.e))


def draft_spec(plan: ServingPlan, model: ModelSpec) -> ModelSpec:
    """The draft model of a `draft` plan, checked against the target (same vocabulary: it must
    share the tokenizer)."""
    from parasim.errors import InputError
    from parasim.specs.catalog import get_model

    try:
        d = get_model(str(plan.draft_model), field="draft_model")
    except InputError as e:  # a model file's own errors name "model": this one is the draft model
        if e.field == "draft_model":
            raise
        raise InputError("draft_model", e.message) from None
    if d.vocab != model.vocab:
        raise InputError("draft_model", f"{d.name} (vocab {d.vocab:,}) cannot draft for {model.name} (vocab "
                                        f"{model.vocab:,}): a draft model shares the target's tokenizer")
    return d


def spec_cost(model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan, *, tp: int) -> SpecIterationCost:
    """The iteration cost of a speculative plan's engine (`IterationCost.for_plan` plus the drafter;
    a draft model runs at the target's TP, as vLLM runs it by default)."""
    cost = SpecIterationCost.for_plan(model, cluster, plan, tp=tp)
    draft = None
    if plan.spec_method == "draft":
        d = draft_spec(plan, model)
        draft = IterationCost(d, cluster, tp=tp, pp=1, weights=d.native_weights, kv_dtype=plan.kv,
                              act_dtype=plan.act_dtype, overhead_s=0.0, custom_allreduce=plan.custom_allreduce,
                              attention=plan.attention)
    cost.setup_spec(plan.spec_method, int(plan.num_speculative_tokens), float(plan.spec_acceptance), draft)
    return cost


def spec_memory(model: ModelSpec, plan: ServingPlan, *, tp: int) -> tuple[float, float]:
    """(weight bytes, KV bytes per token) the drafter adds on each GPU: a draft model's weights and
    cache at the target's TP; an EAGLE head's one decoder layer (and its input projection from two
    hidden states) with one layer of cache; nothing for n-gram lookup."""
    if plan.spec_method == "draft":
        d = draft_spec(plan, model)
        kv = kv_cache_bytes_per_token_per_gpu(d, tp=tp, pp=1, kv_bytes=_kv_bytes(plan))
        return weight_bytes_per_gpu(d, tp=tp, pp=1, weights=d.native_weights), kv
    if plan.spec_method == "eagle":
        layer = model.dense_layer_params + 2 * model.hidden * model.hidden  # a 16-bit head, as EAGLE ships
        kv = kv_cache_bytes_per_token_per_gpu(model, tp=tp, pp=1, kv_bytes=_kv_bytes(plan)) / model.layers
        return layer * 2.0 / tp, kv
    return 0.0, 0.0


def _kv_bytes(plan: ServingPlan) -> float:
    from parasim.cost.dtypes import dtype_bytes

    return dtype_bytes(plan.kv, field="kv_dtype")
