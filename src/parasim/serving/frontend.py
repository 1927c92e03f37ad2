"""The API-server process in front of the engine: when each request reaches the engine.

An online server (vLLM's `vllm serve`) does per-request host work before the engine sees a
request: HTTP parsing and validation, chat-template rendering, tokenization, building the engine
request and sending it to the engine process. In vLLM that work runs in one Python process, in one
asyncio event loop (V1 moved the engine core to another process; `--api-server-count` adds more
API-server processes, vllm-project/vllm PR #17546). An asyncio loop does not serve requests one
after the other: every request's handler is a coroutine, and each time one awaits (the tokenizer's
thread, the engine hand-off) its continuation goes to the back of the ready queue behind every
other request's. With many requests in the loop at once the CPU is therefore shared among them
round-robin, which is processor sharing rather than a first-come-first-served queue. The difference
is what a burst shows: under processor sharing N requests sent together all leave the API server
at about N x (work per request), so the engine receives the burst late but still as a burst (its
batches, and so its inter-token gaps, are those of a burst); a first-come-first-served queue would
instead trickle them in one every `work` seconds and let the engine run small, fast batches (see
docs/serving.md, "The API server in front of the engine").

The model here: egalitarian processor sharing, every request needing the same `work_s` of the
API-server's CPU. With equal work, requests leave in arrival order. Outputs (detokenisation and
streaming, also done in that process in V1) are not modelled: they are work per output token that
competes for the same loop, and no published split between intake and output work was found.

Applied before the event loop runs (`simulate`), so the engine -- the Python loop and its compiled
copy alike -- sees only the later arrival times; TTFT and E2E still count from the client's send time.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def processor_sharing_release_s(arrival_s: np.ndarray, work_s: float) -> np.ndarray:
    """When each request leaves a processor-sharing server that gives `work_s` seconds of work to
    every request (`arrival_s` sorted ascending): the time it reaches the engine.

    Exact event simulation in virtual time: while k requests are present each receives 1/k of the
    CPU, so the service every present request has received grows at 1/k per second; a request
    leaves when it has received `work_s` since it arrived. Equal work makes the departures
    first-in-first-out, so one deque of virtual departure tags suffices (O(n))."""
    arr = np.asarray(arrival_s, dtype=np.float64)
    n = int(arr.shape[0])
    out = np.empty(n, dtype=np.float64)
    if not work_s > 0:
        out[:] = arr
        return out
    tags: deque[float] = deque()  # virtual service level at which each present request leaves
    t = 0.0  # the current time
    served = 0.0  # service received by every request present since the start (virtual time)
    i = head = 0
    arrivals = arr.tolist()
    while i < n or tags:
        done_t = t + (tags[0] - served) * len(tags) if tags else float("inf")
        if i < n and arrivals[i] <= done_t:
            a = arrivals[i]
            if tags:
                served += (a - t) / len(tags)
            if a > t:
                t = a
            tags.append(served + work_s)
            i += 1
        else:
            t = done_t
            served = tags.popleft()
            out[head] = t
            head += 1
    return out
