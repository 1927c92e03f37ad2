"""The per-request state of one simulation run: the columns the engine loop advances and the
schedulers read (through `schedulers.base.EngineView`). A leaf below both, so neither imports
the other for it.
"""

from __future__ import annotations

from array import array

import numpy as np

#: request states (the `state` column)
NEW, WAITING, PREFILL, DECODE, TRANSFER, DONE, DROPPED = range(7)


class ReqState:
    """Per-request columns as typed arrays (8 bytes per request and field: a million requests fit
    in about 150 MB) that index as fast as lists in the hot loop."""

    def __init__(self, arrival, prompt, output, pid, plen) -> None:
        n = len(arrival)
        self.n = n

        def col(code: str, values=None, fill=0):
            a = array(code)
            if values is None:
                a.frombytes(np.full(n, fill, dtype=np.float64 if code == "d" else np.int64).tobytes())
            else:
                a.frombytes(np.asarray(values, dtype=np.float64 if code == "d" else np.int64).tobytes())
            return a

        self.arrival_s, self.prompt_tokens, self.output_tokens = col("d", arrival), col("q", prompt), col("q", output)
        self.prefix_id, self.prefix_tokens = col("q", pid), col("q", plen)
        self.state = col("q", fill=NEW)
        self.prefill_target = col("q")  # tokens this (re)prefill must have cached when done
        self.prefilled = col("q")  # tokens of the target already cached
        self.emitted = col("q")  # output tokens emitted so far
        self.shared_tokens = col("q")  # prefix-cache tokens this request references (multiple of the block size)
        self.owned_blocks = col("q")  # blocks owned while prefilling (or reserved, in full-reservation mode)
        self.join_step = col("q")  # decode step at which it joined the decoders
        self.join_ctx = col("q")  # cached context at join
        self.epoch = col("q")
        self.first_scheduled_s = col("d", fill=-1.0)
        self.first_token_s = col("d", fill=-1.0)
        self.last_token_s = col("d", fill=-1.0)
        self.finish_s = col("d", fill=-1.0)
        self.preemptions = col("q")
        self.instance = col("q", fill=-1)
        self.extra_gaps_s = array("d")  # inter-token gaps not on a decode-step boundary (joins, resumes)

    def target_if_admitted(self, rid: int) -> int:
        return self.prompt_tokens[rid] + self.emitted[rid]
