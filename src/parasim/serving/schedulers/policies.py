"""The colocated schedulers: static, continuous (Orca), vLLM, Sarathi-Serve, SplitFuse, SGLang.

Each differs from the others in one or two knobs of the same rule (see base.fill_prefill):

| name        | mixes prefill with decode | splits prompts | admits while running | default budget        |
|-------------|---------------------------|----------------|----------------------|-----------------------|
| static      | no                        | no             | no (request-level)   | unlimited             |
| continuous  | yes (Orca selective)      | no             | yes                  | max(max_seq_len,2048) |
| vllm        | no (prefill first)        | no             | yes                  | max(max_seq_len,2048) |
| sarathi     | yes (stall-free)          | yes            | yes                  | 512                   |
| splitfuse   | yes                       | yes            | yes                  | 768                   |
| sglang      | no (prefill first)        | yes            | yes                  | 8192                  |
"""

from __future__ import annotations

from parasim.serving.schedulers.base import Batch, EngineView, Scheduler

UNLIMITED = 1 << 40


class Static(Scheduler):
    """Request-level batching: take up to max_batch prompts, run them to the last token, repeat.

    The batch is formed by max_batch and KV memory alone; a token budget (an engine's
    max_num_tokens) only splits the batch's prefill over several forwards, whole prompts each,
    and never shrinks the batch (a static engine runs every context of the batch before its
    first generation step)."""

    name = "static"
    decodes_when_idle = True  # an idle queue, no prefill, blocks free: every decoder steps
    default_budget = UNLIMITED

    def _within_budget(self, chunks: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The leading whole-prompt chunks that fit the budget (at least one: a prompt longer than
        the budget runs alone)."""
        budget, n = self.budget, 0
        for _, c in chunks:
            if n and c > budget:
                break
            budget -= c
            n += 1
        return chunks[:n]

    def schedule(self, inst: EngineView) -> Batch:
        if inst.prefilling or inst.n_dec:
            chunks, _ = self.fill_prefill(inst, UNLIMITED, inst.kv.available(), inst.n_dec, chunked=False,
                                          admit_new=False)
            if chunks:
                return Batch(self._within_budget(chunks))
            if not inst.n_dec:
                return Batch(victims=self.stalled_prefill_victims(inst))
            victims, _ = self.decode_victims(inst)
            return Batch(decode=inst.n_dec > len(victims), victims=victims)
        chunks, admit = self.fill_prefill(inst, UNLIMITED, inst.kv.available(), 0, chunked=False)
        return Batch(self._within_budget(chunks), admit)


class Continuous(Scheduler):
    """Orca iteration-level batching: every decoder each step, plus whole new prompts that fit."""

    name = "continuous"
    decodes_when_idle = True  # an idle queue, no prefill, blocks free: every decoder steps
    chunked = False

    def schedule(self, inst: EngineView) -> Batch:
        if not inst.waiting and not inst.prefilling and inst.kv.free >= inst.decode_block_need():
            return Batch(decode=True)  # the common case: decoders only, room to grow
        victims, avail = self.decode_victims(inst)
        n = inst.n_dec - len(victims)
        chunks, admit = self.fill_prefill(inst, self.budget - n, avail, n, chunked=self.chunked,
                                          admit_new=not victims)
        if not chunks and n <= 0 and not victims:
            return Batch(victims=self.stalled_prefill_victims(inst))
        return Batch(chunks, admit, decode=n > 0, victims=victims)


class Sarathi(Continuous):
    """Sarathi-Serve stall-free batching: decodes first, then prompt chunks up to the token budget."""

    name = "sarathi"
    default_budget = 512
    chunked = True
    search_budgets = True


class SplitFuse(Sarathi):
    """DeepSpeed-FastGen Dynamic SplitFuse: the same rule (MII's `schedule_requests`: generating
    sequences first, then prompt tokens cut to fill the forward) with DeepSpeed's forward size,
    `max_ragged_batch_size` = 768 tokens (DSStateManagerConfig, DeepSpeed 0.12)."""

    name = "splitfuse"
    default_budget = 768


class VLLM(Scheduler):
    """vLLM (v0.6 default): prefill-prioritised; an iteration is all prefills or all decodes."""

    name = "vllm"
    decodes_when_idle = True  # an idle queue, no prefill, blocks free: every decoder steps

    def schedule(self, inst: EngineView) -> Batch:
        if inst.waiting or inst.prefilling:
            chunks, admit = self.fill_prefill(inst, self.budget, inst.kv.available(), inst.n_dec,
                                              chunked=self.chunked)
            if chunks:
                return Batch(chunks, admit)
        if not inst.n_dec:
            return Batch(victims=self.stalled_prefill_victims(inst))
        victims, _ = self.decode_victims(inst)
        return Batch(decode=inst.n_dec > len(victims), victims=victims)


class SGLang(VLLM):
    """SGLang's default: an iteration is all prefill or all decode, prefill first, but a prompt
    longer than the budget (chunked_prefill_size) is split, and its remaining chunks run before
    anything else (`--enable-mixed-chunk`, off by default, would mix them with decodes)."""

    name = "sglang"
    default_budget = 8192
    chunked = True
    search_budgets = True
