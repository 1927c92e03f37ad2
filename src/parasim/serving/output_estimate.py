"""SGLang's admission estimate of the KV its running requests will still need (`kv_reservation`
`estimated`).

SGLang admits a waiting prompt only if the prompt plus its own clipped output budget fits in what
is left of the KV pool after every running request has booked a share of the output it may
still generate (sgl-project/sglang `python/sglang/srt/managers/schedule_policy.py`, `PrefillAdder`:
`rem_total_tokens` = free + evictable tokens - `rem_total_token_offset`, the offset summing
min(max_new_tokens - generated, CLIP_MAX_NEW_TOKENS) x `new_token_ratio` over the running batch;
`add_one_req` returns NO_TOKEN when prompt + min(max_new_tokens, CLIP_MAX_NEW_TOKENS) >=
`rem_total_tokens`; each admitted prompt then books its pages plus its clipped output in full).
The share `new_token_ratio` is the scheduler's (`scheduler.py`): it starts at
`init_new_token_ratio`, falls by a fixed step on every decode step down to a floor, returns to
the start when the server goes idle, and after a retraction is set from the requests that stay:
(tokens they have generated + RETRACT_DECODE_STEPS each) / their max_new_tokens
(`ScheduleBatch.retract_decode`). The same rule and constants in the 0.4 and 0.5 sources
(`global_config.py`: default_init_new_token_ratio 0.7, default_min_new_token_ratio_factor 0.14,
default_new_token_ratio_decay_steps 600, retract_decode_steps 20; CLIP_MAX_NEW_TOKENS_ESTIMATION
4096; later moved to `environ.py` as SGLANG_INIT_NEW_TOKEN_RATIO etc. with the same defaults).

Why it matters: a prompt admitted on its first chunk alone (vLLM's rule, parasim's `incremental`)
lets an engine with long prompts fill the pool with prompts and then retract decoders for the
next token, over and over; SGLang's booking keeps room for the running requests' next tokens.
"""

from __future__ import annotations

#: new_token_ratio at start and after idling (global_config.default_init_new_token_ratio)
INIT_NEW_TOKEN_RATIO = 0.7
#: its floor: INIT x default_min_new_token_ratio_factor 0.14
MIN_NEW_TOKEN_RATIO = INIT_NEW_TOKEN_RATIO * 0.14
#: its fall per decode step: (INIT - MIN) / default_new_token_ratio_decay_steps 600
NEW_TOKEN_RATIO_DECAY = (INIT_NEW_TOKEN_RATIO - MIN_NEW_TOKEN_RATIO) / 600
#: tokens per remaining request a retraction leaves room for (global_config.retract_decode_steps)
RETRACT_DECODE_STEPS = 20
#: a request's output budget is booked at most this many tokens (CLIP_MAX_NEW_TOKENS_ESTIMATION)
CLIP_MAX_NEW_TOKENS = 4096


def ratio_now(anchor_ratio: float, steps_since: int) -> float:
    """new_token_ratio `steps_since` decode steps after it was set to `anchor_ratio`."""
    return max(anchor_ratio - NEW_TOKEN_RATIO_DECAY * steps_since, MIN_NEW_TOKEN_RATIO)


def ratio_after_retraction(generated: int, max_new: int, n: int) -> float:
    """new_token_ratio after a retraction: the `n` requests that stay have generated `generated`
    tokens of their `max_new` (summed); at most 1 (`retract_decode`)."""
    return min(1.0, (generated + RETRACT_DECODE_STEPS * n) / max(max_new, 1))
