"""Disaggregated prefill and decode (DistServe, Splitwise).

Two pools, each with its own GPUs and TP. A prefill instance batches whole prompts up to its
token budget and never decodes; when a prompt is done its first token is out and its KV cache
is sent to a decode instance (NVLink inside a node, NICs across nodes; see simulate.py). A decode
instance admits arrived requests into its decode batch when their whole KV (prompt and output)
fits, so it never has to preempt (it cannot recompute a prompt).
"""

from __future__ import annotations

from parasim.mathx import cdiv
from parasim.serving.schedulers.base import Batch, EngineView, Scheduler


class Disagg(Scheduler):
    name = "disagg"
    disaggregated = True
    # a decode instance with no transferred request waiting steps every decoder (a prefill
    # instance never decodes), so its decode stretches run without a batch per step
    decodes_when_idle = True

    def schedule(self, inst: EngineView) -> Batch:
        if inst.role == "prefill":
            chunks, admit = self.fill_prefill(inst, self.budget, inst.kv.available(), 0, chunked=False)
            return Batch(chunks, admit)
        st, B = inst.st, inst.block
        avail = inst.kv.available()
        slots = self.max_batch - inst.n_dec
        joins = 0
        for rid in inst.waiting:
            if joins >= slots:
                break
            nb = cdiv(st.prefill_target[rid] + st.output_tokens[rid] - st.emitted[rid], B)
            if inst.win_k:
                nb += inst.window_blocks(rid)
            if nb > avail:
                break
            avail -= nb
            joins += 1
        return Batch(decode=inst.n_dec + joins > 0, joins=joins)
