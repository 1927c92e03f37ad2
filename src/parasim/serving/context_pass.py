"""An iteration whose prompts run as a forward of their own (`ServingPlan.context_pass` separate).

The first TurboMind (LMDeploy up to v0.1.0a1) runs a loop pass as two forwards in series:
`LlamaBatch::ContextDecode` runs the newly admitted prompts through the context decoder **less each
one's last token** ("subtract input/context len by 1 to skip last input token (will process with
decoder later)", src/turbomind/models/llama/LlamaBatch.cc at v0.1.0a1; a one-token prompt skips it),
then the decoder step runs every active sequence, the new ones' last prompt token included, and
samples. So a new request's first token comes out after both forwards, the weights are read twice in
such a pass, and a one-token prompt costs a plain decode step. Engines that fuse prefill and decode
in one forward (TurboMind from PR #775, v0.1.0a2; vLLM, SGLang, TensorRT-LLM) keep `joint`.
"""

from __future__ import annotations

from parasim.serving.itercost import IterationCost


class SeparateContextCost(IterationCost):
    """`time_s` / `breakdown` of an iteration as the context forward, then the decode forward; the
    per-iteration host overhead is charged once (one loop pass). An iteration with no prompt tokens
    is the plain one."""

    def _passes(self, tokens: int, prefill_pairs: float, prefill_kv_tokens: float, decode_seqs: int,
                decode_ctx: float, logits: int) -> list[tuple] | None:
        """The forwards' `time_s` arguments, or None when the iteration holds no prompt tokens.
        `logits` - `decode_seqs` prompts complete here; each hands its last token to the decode
        forward, whose context it joins with its whole prompt, and whose attention row (its whole
        length) leaves the context forward's pairs. Exact for whole prompts, the only kind the
        engines with this pass run (the lengths summed: the cached part `prefill_kv_tokens` plus
        this pass's tokens)."""
        prompt = tokens - decode_seqs
        if prompt <= 0:
            return None
        done = logits - decode_seqs
        ctx_tokens = prompt - done
        seqs = decode_seqs + done
        joined = prefill_kv_tokens + prompt if done else 0.0
        passes = []
        if ctx_tokens > 0:
            passes.append((ctx_tokens, max(prefill_pairs - joined, 0.0), prefill_kv_tokens, 0, 0.0, 0))
        if seqs > 0:
            passes.append((seqs, 0.0, 0.0, seqs, decode_ctx + joined, seqs))
        return passes

    def time_s(self, tokens: int, prefill_pairs: float, prefill_kv_tokens: float, decode_seqs: int,
               decode_ctx: float, logits: int) -> float:
        passes = self._passes(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx, logits)
        if passes is None:
            return IterationCost.time_s(self, tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx,
                                        logits)
        t = sum(IterationCost.time_s(self, *a) for a in passes)
        return t - self.overhead_s * (len(passes) - 1)

    def breakdown(self, tokens: int, prefill_pairs: float = 0.0, prefill_kv_tokens: float = 0.0,
                  decode_seqs: int = 0, decode_ctx: float = 0.0, logits: int = 0) -> dict[str, float]:
        passes = self._passes(tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx, logits)
        if passes is None:
            return IterationCost.breakdown(self, tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx,
                                           logits)
        parts = [IterationCost.breakdown(self, *a) for a in passes]
        out = {k: sum(p[k] for p in parts) for k in parts[0]}
        extra = self.overhead_s * (len(parts) - 1)
        out["overhead"] -= extra
        out["total"] -= extra
        return out
