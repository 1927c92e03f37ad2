"""A compiled copy of the single-engine loop (`engine.Loop._run_alone`) for the common case.

Scope (`in_scope`): colocated single-engine replicas (PP 1) behind round robin, which nothing
couples (each is run alone, as the Python engine runs them), a scheduler of the
continuous family (continuous, sarathi, splitfuse: decodes first, then prompt chunks) or of the
prefill-first family (vllm, sglang), incremental KV allocation, with or without batches formed one
iteration ahead (schedule_ahead: arrivals during an iteration are held, as `Instance.held`, in the
waiting ring behind the waiting requests until the next batch starts), no prefix cache, no speculative
decoding or NanoFlow overlap (the plain `IterationCost`), no admission control, closed-loop
client, workflow, autoscaling, migration or timeline recording. Everything else runs the Python
engine, which stays the reference: this loop does the same integer and float operations in the
same order (numba without fastmath: IEEE double arithmetic as CPython's), so its results are
byte-identical (tests/test_serving_fastloop.py compares both).

Why: the Python loop costs about 5 us per iteration; a million requests are 4.6 million
iterations. Compiled, an iteration costs about 0.1 us, because the helpers are inlined into the
loop and run without numba's reference counting (`_nrt=False`; the kernel allocates nothing):
with it, an incref and a decref of every array passed, on every call, were 90 % of the time.

State lives in numpy arrays: the request columns are the `ReqState` arrays themselves (shared
buffers), the engine's scalars are two small vectors, and the growing outputs (decode-step end
times, inter-token gaps off the step grid, the finishing heap, the join order) are arrays the
kernel fills and returns to Python when one is about to run out (`NEED_ROOM`); Python grows it
and calls again, the loop resuming where it stopped. The per-token-count iteration costs are the
cost model's own values in two tables, filled the same way as batches first need a count
(`NEED_COST`), so the kernel calls no Python. Compiled once per machine (`cache=True`: numba's cache next to this module, or
its user-wide cache directory when the package directory is read-only).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from parasim.serving.itercost import IterationCost
from parasim.serving.kvcache import WATERMARK
from parasim.serving.reqstate import DECODE, DONE, DROPPED, PREFILL, WAITING
from parasim.serving.schedulers.policies import VLLM, Continuous, Sarathi, SGLang, SplitFuse

#: scheduler classes -> kernel mode (0: decodes then chunks, Continuous.schedule; 1: prefill first, VLLM.schedule)
MODES = {Continuous: 0, Sarathi: 0, SplitFuse: 0, VLLM: 1, SGLang: 1}
MAX_TOKEN_COUNTS = 1 << 17  # precomputed iteration costs per token count: beyond this, the Python engine

# integer state vector
(NDEC, CTXSUM, DSTEP, FREE, MINFREE, ITERS, PEAK, COMPLETED, WHEAD, NWAIT, NPF, HN, JN, PN, GN, DROPS, NEXT,
 NEED_T, NEED_L, NHELD) = range(20)
# float state vector
T, BUSY, KVS, MAKESPAN, SINCE = range(5)  # SINCE: the start of the iteration that ended at T (schedule_ahead)
# integer config
B_, CAP, MARK, BUDGET, MAXB, CHUNKED, MODE, LAYERS, GRAPHMAX, N, WCAP, STRIDE, IDX, AHEAD, WIN, WLAYERS = range(16)
# float config
PF, PQ, PK, DF, KO, OV, EAGER, CH, PR, SH = range(10)
# kernel return codes: NEED_COST = the next batch's token or logit count has no cost in the tables yet
# (iv[NEED_T], iv[NEED_L]); NEED_ROOM + k = the growing buffers of _GROUPS[k] (indices into E[6:]) ran short
FINISHED, STUCK, NEED_COST, NEED_ROOM = 0, 1, 2, 3
_GROUPS = ((0, 1), (2,), (3, 4, 5), (6, 7))  # decode steps, gaps, finishing heap, join order


def scope_gap(loop) -> str | None:
    """The first thing that keeps `loop` out of this kernel's scope, in the user's words (what
    `PARASIM_FASTPATH=1` names when it refuses); None when the kernel reproduces the run exactly
    (see the module docstring)."""
    from parasim.serving.engine import Loop
    from parasim.serving.lockstep import LockstepLoop
    if isinstance(loop, LockstepLoop):
        return "attention-DP ranks in lockstep (ep > 1)"
    if type(loop) is not Loop or not loop.independent():  # single-engine replicas behind round robin
        return ("coupled instances (a router other than round robin, disaggregated prefill/decode, PP > 1, "
                "a closed-loop client, a workflow or autoscaling)")
    if loop.max_queued is not None:
        return "admission control (--max-queued)"
    if loop.horizon_s != float("inf"):  # a horizon (plan serve's bursts) stops the Python loop only
        return "a simulation horizon"
    inst = loop.instances[0]  # the replicas are alike (one pool)
    s, cost = inst.sched, inst.cost
    gaps = ((inst.role != "mixed", "a prefill- or decode-only role"),
            (inst.reserve_full, "KV reserved for prompt + output up front (kv_reservation full)"),
            (inst.reserve_estimated, "SGLang's admission beside the running requests' estimated output "
                                     "(kv_reservation estimated)"),
            (inst.kv.enabled, "the prefix cache"),
            (inst.rec is not None, "timeline recording"),
            (type(cost) is not IterationCost, "speculative decoding, an overlapped iteration model or a separate "
                                               "context pass"),
            (type(s) not in MODES, f"the {type(s).__name__} scheduler"),
            (s.queue_order is not None or s.gated, "a reordered or gated waiting queue"),
            (max(s.budget, s.max_batch) >= MAX_TOKEN_COUNTS, f"a token budget or batch of {MAX_TOKEN_COUNTS} or more"),
            (inst.block <= 0, "a KV block size of 0"),
            (bool(cost.seq_host_s), "a per-sequence host floor"),
            (bool(cost.graph_pad), "CUDA-graph padding of decode batches (cuda_graph_batch_sizes)"),
            (cost.kv_reads != 1, "a per-query-head decode attention kernel"),
            (inst.win_k > 0, "sliding-window layers' KV kept to the window (sliding_kv window)"))
    return next((why for hit, why in gaps if hit), None)


def in_scope(loop) -> bool:
    """Whether `loop` is a run this kernel reproduces exactly (see the module docstring)."""
    return scope_gap(loop) is None


def run(loop) -> None:
    """Run `loop` (in scope) with the kernel and leave its instances, loop and request columns as
    `Loop.run` would (what `simulate.summarize` and `request_columns` read): replica g takes
    every stride-th arrival from g, as `Loop._run_alone`, one replica after the other."""
    st, inst = loop.st, loop.instances[0]
    s, cost = inst.sched, inst.cost
    top = max(s.budget, s.max_batch)
    # the cost model's values per token count and per logit-row count, filled as batches need them
    # (NEED_COST: a count costs about 0.3 ms of Python, so a budget's every count would cost seconds)
    tables = (np.full(top + 1, np.nan), np.full(s.max_batch + 2, np.nan))
    for table, known in zip(tables, (cost._fixed, cost._head)):
        for k, v in known.items():
            if k < len(table):
                table[k] = v
    cf = np.array([cost._pf, cost._pq, cost._pk, cost._df, cost._ko, cost.overhead_s, cost.eager_prefill_s,
                   cost.ctx_host_s, cost._pr, cost.serial_host_s], dtype=np.float64)
    names = ("arrival_s", "prompt_tokens", "output_tokens", "state", "prefill_target", "prefilled", "emitted",
             "owned_blocks", "join_step", "join_ctx", "epoch", "first_scheduled_s", "first_token_s", "last_token_s",
             "finish_s", "preemptions", "instance")
    R = tuple(np.frombuffer(getattr(st, k), dtype=np.float64 if k.endswith("_s") else np.int64) for k in names)
    stride = len(loop.groups)
    for g, grp in enumerate(loop.groups):
        _run_instance(loop, grp[0], R, (g, stride), cf, tables)


def _run_instance(loop, inst, R, turn, cf, tables) -> None:
    st, s, cost, kv = loop.st, inst.sched, inst.cost, inst.kv
    first, stride = turn
    mine = (st.n - first + stride - 1) // stride  # arrivals routed here
    cfg = np.array([inst.block, kv.capacity, int(WATERMARK * kv.capacity), s.budget, s.max_batch, int(s.chunked),
                    MODES[type(s)], cost.layers, min(cost.graph_max, 1 << 62), st.n, mine + 1, stride, inst.idx,
                    int(inst.ahead), cost.window, cost._wl], dtype=np.int64)
    iv = np.zeros(20, dtype=np.int64)
    iv[FREE] = iv[MINFREE] = kv.free
    iv[NEXT] = first
    fv = np.zeros(5, dtype=np.float64)
    slots = 2 * s.max_batch + 4
    small = (np.zeros(mine + 1, dtype=np.int64), np.zeros(slots, dtype=np.int64), np.zeros(slots, dtype=np.int64),
             np.zeros(inst.block, dtype=np.int64))  # waiting ring, prefilling, first-step pending, phases
    scratch = (np.zeros(slots, dtype=np.int64), np.zeros(slots, dtype=np.int64), np.zeros(slots, dtype=np.int64))
    size = 1024 + 5 * mine  # decode steps: about 4.6 per request on the benchmark (doubled when short)
    grow = [np.zeros(size, dtype=np.float64), np.zeros(size, dtype=np.int64)] + [
        np.zeros(1024 + 4 * slots, dtype=np.float64 if k == 0 else np.int64) for k in range(6)]
    # steps, conts, then gaps, heap (step, rid, epoch), joins (rid, epoch)
    while True:
        E = (iv, fv, *small, *grow)
        code = _loop(R, E, (cfg, cf, *tables), scratch)
        if code == FINISHED:
            break
        if code == STUCK:  # pragma: no cover - as Loop._check_stuck: a scheduler that idles with work it could run
            raise RuntimeError(f"scheduler {s.name} returned an empty batch with work pending")
        if code == NEED_COST:
            tables[0][iv[NEED_T]] = cost._fixed_s(int(iv[NEED_T]))
            tables[1][iv[NEED_L]] = cost._lm_head_s(int(iv[NEED_L]))
            continue
        for k in _GROUPS[code - NEED_ROOM]:  # double the buffers that ran short
            grow[k] = np.concatenate([grow[k], np.zeros_like(grow[k])])
    _write_back(loop, inst, st, iv, fv, grow)


def _write_back(loop, inst, st, iv, fv, grow) -> None:
    steps, conts, gaps = grow[0], grow[1], grow[2]
    d = int(iv[DSTEP])
    inst.step_end_s, inst.step_continuing = steps[:d + 1], conts[:d + 1]  # read through the buffer protocol
    st.extra_gaps_s.frombytes(gaps[:iv[GN]].tobytes())
    inst.decode_step, inst.n_dec, inst.decode_ctx_sum = d, int(iv[NDEC]), int(iv[CTXSUM])
    inst.kv.free, inst.kv.min_free = int(iv[FREE]), int(iv[MINFREE])
    inst.iterations, inst.peak_running, inst.completed = int(iv[ITERS]), int(iv[PEAK]), int(iv[COMPLETED])
    inst.busy_s, inst.kv_block_s = float(fv[BUSY]), float(fv[KVS])
    loop.makespan = max(loop.makespan, float(fv[MAKESPAN]))
    loop.dropped += int(iv[DROPS])


# --- the kernel ----------------------------------------------------------------------------------------
# R: request columns (ReqState order above); E: (iv, fv, waiting ring, prefilling, pending, phases,
# steps, conts, gaps, heap step, heap rid, heap epoch, join rid, join epoch); C: (cfg, cf, fixed, head);
# S: scratch (chunk rids, chunk tokens, victims)

@njit(cache=True, _nrt=False)
def _loop(R, E, C, S):
    """`Loop._run_alone` without admission control; returns a code (see above)."""
    iv, fv = E[0], E[1]
    arr, state = R[0], R[3]
    n, stride = C[0][N], C[0][STRIDE]
    while True:
        short = _room(E, C[0][MAXB])
        if short >= 0:
            return NEED_ROOM + short
        t = fv[T]
        i = iv[NEXT]
        ahead = C[0][AHEAD] != 0
        while i < n and arr[i] <= t:
            if state[i] != DROPPED:
                if ahead and fv[SINCE] < arr[i] < t:
                    _hold(R, E, C, i)
                else:
                    _enqueue(R, E, C, i)
            i += stride
        iv[NEXT] = i
        if iv[NWAIT] == 0 and iv[NPF] == 0 and iv[NDEC] == 0:
            if iv[NHELD]:  # nothing was formed ahead of them: the scheduler sees them now
                _unhold(E)
                continue
            if i >= n:
                return FINISHED
            fv[T] = fv[SINCE] = arr[i]
            continue
        nch, admit, decode, nv = _schedule(R, E, C, S)
        if nch == 0 and not decode and nv == 0:
            if iv[NHELD]:
                _unhold(E)
                continue
            if not _drop_stuck(R, E, C):
                return STUCK
            if iv[NWAIT] == 0 and iv[NPF] == 0 and iv[NDEC] == 0 and i < n:
                fv[T] = fv[SINCE] = max(t, arr[i])
            continue
        if not _costed(R, E, C, S, nch, decode, nv):
            return NEED_COST  # nothing changed yet: the call after Python fills the tables decides again
        fv[SINCE] = t
        t += _start(R, E, C, S, t, nch, admit, decode, nv)
        fv[T] = t
        if iv[NHELD]:  # the batch formed ahead of them has started
            _unhold(E)
        _end(R, E, C, S, t, nch, decode)


@njit(cache=True, inline="always", _nrt=False)
def _costed(R, E, C, S, nch, decode, nv):
    """Whether the tables hold the costs of the batch `_start` will run (its token and logit-row
    counts, as `_start` counts them: chunks of waiting requests are admitted from 0 tokens, and
    victims of a decoding batch are decoders); else the counts go to iv[NEED_T], iv[NEED_L]."""
    iv = E[0]
    tokens = 0
    logits = 0
    for k in range(nch):
        rid, c = S[0][k], S[1][k]
        if R[3][rid] == PREFILL:
            if R[5][rid] + c == R[4][rid]:
                logits += 1
        elif c == R[1][rid] + R[6][rid]:
            logits += 1
        tokens += c
    if decode:
        tokens += iv[NDEC] - nv
        logits += iv[NDEC] - nv
    if np.isnan(C[2][tokens]) or np.isnan(C[3][logits]):
        iv[NEED_T], iv[NEED_L] = tokens, logits
        return False
    return True


@njit(cache=True, inline="always", _nrt=False)
def _room(E, maxb):
    """-1 if every growing buffer has room for what one iteration can add, else the first short group."""
    iv = E[0]
    extra = 2 * maxb + 4
    if iv[DSTEP] + 2 >= len(E[6]):
        return 0
    if iv[GN] + extra >= len(E[8]):
        return 1
    if iv[HN] + extra >= len(E[9]):
        return 2
    if iv[JN] + extra >= len(E[12]):
        return 3
    return -1


@njit(cache=True, inline="always", _nrt=False)
def _enqueue(R, E, C, rid):
    iv, ring = E[0], E[2]
    R[16][rid] = C[0][IDX]
    R[3][rid] = WAITING
    cap = C[0][WCAP]
    at = iv[WHEAD] + iv[NWAIT]
    for k in range(at + iv[NHELD], at, -1):  # an arrival at the iteration's end goes before the held ones
        ring[k % cap] = ring[(k - 1) % cap]
    ring[at % cap] = rid
    iv[NWAIT] += 1


@njit(cache=True, inline="always", _nrt=False)
def _hold(R, E, C, rid):
    """Instance.enqueue(held=True): queued behind the waiting requests, out of the scheduler's
    sight (schedule_ahead): the ring's NHELD entries after the NWAIT waiting ones."""
    iv, ring = E[0], E[2]
    R[16][rid] = C[0][IDX]
    R[3][rid] = WAITING
    ring[(iv[WHEAD] + iv[NWAIT] + iv[NHELD]) % C[0][WCAP]] = rid
    iv[NHELD] += 1


@njit(cache=True, inline="always", _nrt=False)
def _unhold(E):
    """Instance.release_held: the held entries join the waiting ones, in their order."""
    iv = E[0]
    iv[NWAIT] += iv[NHELD]
    iv[NHELD] = 0


@njit(cache=True, inline="always", _nrt=False)
def _pop_waiting(E, C):
    iv, ring = E[0], E[2]
    rid = ring[iv[WHEAD]]
    iv[WHEAD] = (iv[WHEAD] + 1) % C[0][WCAP]
    iv[NWAIT] -= 1
    return rid


@njit(cache=True, inline="always", _nrt=False)
def _drop_stuck(R, E, C):
    iv = E[0]
    if iv[NWAIT] and not iv[NPF] and not iv[NDEC]:
        rid = _pop_waiting(E, C)
        R[3][rid] = DROPPED
        iv[DROPS] += 1
        return True
    return False


@njit(cache=True, inline="always", _nrt=False)
def _block_need(E, B):
    iv = E[0]
    if not iv[NDEC]:
        return 0
    return E[5][(-iv[DSTEP]) % B]


@njit(cache=True, inline="always", _nrt=False)
def _schedule(R, E, C, S):
    """Continuous.schedule (mode 0) or VLLM.schedule (mode 1): (chunks, admitted, decode, victims)."""
    iv, cfg = E[0], C[0]
    chunked = cfg[CHUNKED] != 0
    if cfg[MODE] == 0:
        if iv[NWAIT] == 0 and iv[NPF] == 0 and iv[FREE] >= _block_need(E, cfg[B_]):
            return 0, 0, True, 0
        nv, avail = _victims(R, E, C, S)
        n = iv[NDEC] - nv
        nch, admit = _fill(R, E, C, S, cfg[BUDGET] - n, avail, n, chunked, nv == 0)
        if nch == 0 and n <= 0 and nv == 0:
            nv = _stalled(E, S)
        return nch, admit, n > 0, nv
    if iv[NWAIT] or iv[NPF]:
        nch, admit = _fill(R, E, C, S, cfg[BUDGET], iv[FREE], iv[NDEC], chunked, True)
        if nch:
            return nch, admit, False, 0
    if not iv[NDEC]:
        return 0, 0, False, _stalled(E, S)
    nv, _ = _victims(R, E, C, S)
    return 0, 0, iv[NDEC] > nv, nv


@njit(cache=True, inline="always", _nrt=False)
def _stalled(E, S):
    iv = E[0]
    if iv[NPF]:
        S[2][0] = E[3][iv[NPF] - 1]
        return 1
    return 0


@njit(cache=True, inline="always", _nrt=False)
def _victims(R, E, C, S):
    """Scheduler.decode_victims: latest-joined decoders until the next step's new blocks fit."""
    iv, B = E[0], C[0][B_]
    join_step, join_ctx, epoch, state = R[8], R[9], R[10], R[3]
    avail = iv[FREE]
    need = _block_need(E, B)
    if need <= avail:
        return 0, avail - need
    nv = 0
    jr, je, vic = E[12], E[13], S[2]
    for k in range(iv[JN] - 1, -1, -1):
        rid = jr[k]
        if epoch[rid] == je[k] and state[rid] == DECODE:
            ctx = join_ctx[rid] + iv[DSTEP] - join_step[rid]
            if ctx % B == 0:
                need -= 1
            avail += -(-ctx // B)
            vic[nv] = rid
            nv += 1
            if need <= avail:
                break
    return nv, max(0, avail - need)


@njit(cache=True, inline="always", _nrt=False)
def _fill(R, E, C, S, budget, avail, seqs, chunked, admit_new):
    """Scheduler.fill_prefill and _admit_chunks without prefix sharing or gating."""
    iv, cfg = E[0], C[0]
    B = cfg[B_]
    prompt, target, prefilled, emitted = R[1], R[4], R[5], R[6]
    crid, cc = S[0], S[1]
    nch = 0
    for k in range(iv[NPF]):
        if budget <= 0:
            break
        rid = E[3][k]
        done, tgt = prefilled[rid], target[rid]
        c = tgt - done if not chunked else min(tgt - done, budget)
        if c > budget:
            break
        nb = (done + c - 1) // B - (done - 1) // B
        if nb > avail:
            c = (avail + done // B) * B - done if chunked else 0
            if c <= 0:
                break
            nb = (done + c - 1) // B - (done - 1) // B
        crid[nch], cc[nch] = rid, c
        nch += 1
        budget -= c
        avail -= nb
    if not admit_new or iv[NWAIT] == 0 or budget <= 0:
        return nch, 0
    slots = cfg[MAXB] - seqs - iv[NPF]
    admit = 0
    while admit < iv[NWAIT] and budget > 0 and slots > 0:
        rid = E[2][(iv[WHEAD] + admit) % cfg[WCAP]]
        tgt = prompt[rid] + emitted[rid]
        c = tgt if not chunked else min(tgt, budget)
        if c > budget:
            break
        nb = -(-c // B)
        if nb + cfg[MARK] > avail:
            break
        crid[nch], cc[nch] = rid, c
        nch += 1
        budget -= c
        avail -= nb
        slots -= 1
        admit += 1
    return nch, admit


@njit(cache=True, inline="always", _nrt=False)
def _alloc(iv, nb):
    if nb <= 0:
        return
    iv[FREE] -= nb
    if iv[FREE] < iv[MINFREE]:
        iv[MINFREE] = iv[FREE]


@njit(cache=True, inline="always", _nrt=False)
def _start(R, E, C, S, t, nch, admit, decode, nv):
    """Instance.start: preempt, admit, allocate, cost the batch; returns its seconds."""
    iv, fv, cfg = E[0], E[1], C[0]
    B = cfg[B_]
    target, prefilled, owned = R[4], R[5], R[7]
    for k in range(nv):
        _preempt(R, E, C, S[2][k])
    for _ in range(admit):
        _admit(R, E, _pop_waiting(E, C), t)
    tokens = 0
    pairs = 0.0
    pkv = 0.0
    logits = 0
    for k in range(nch):
        rid, c = S[0][k], S[1][k]
        d = prefilled[rid]
        nb = (d + c - 1) // B - (d - 1) // B
        _alloc(iv, nb)
        owned[rid] += nb
        tokens += c
        pairs += c * d + c * (c + 1) * 0.5
        pkv += d
        if d + c == target[rid]:
            logits += 1
    n = 0
    if decode:
        n = iv[NDEC]
        if n:
            _alloc(iv, E[5][(-iv[DSTEP]) % B])
            tokens += n
            logits += n
    dt = _time_s(C, tokens, pairs, pkv, n, iv[CTXSUM] + n, logits)
    fv[BUSY] += dt
    fv[KVS] += (cfg[CAP] - iv[FREE]) * dt
    iv[ITERS] += 1
    r = iv[NDEC] + iv[NPF]
    if r > iv[PEAK]:
        iv[PEAK] = r
    return dt


@njit(cache=True, inline="always", _nrt=False)
def _layer_attention(cf, tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx):
    """IterationCost._layer_attention_s (one query per decoding sequence)."""
    pre = 0.0
    dec = 0.0
    if prefill_pairs > 0:
        c = cf[PF] * prefill_pairs + cf[PR] * (tokens - decode_seqs)
        m = (tokens - decode_seqs) * cf[PQ] + prefill_kv_tokens * cf[PK]
        pre = (c if c > m else m) + cf[KO]
    if decode_seqs > 0:
        c = cf[DF] * decode_ctx * 1
        m = decode_ctx * cf[PK] + decode_seqs * 1 * cf[PQ]
        dec = (c if c > m else m) + cf[KO]
    return pre, dec


@njit(cache=True, inline="always", _nrt=False)
def _bound(count, rows, window):
    """itercost.windowed_pairs_bound."""
    cap = rows * window
    return count if count <= cap else float(cap)


@njit(cache=True, inline="always", _nrt=False)
def _time_s(C, tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx, logits):
    """IterationCost.time_s with its caches as arrays (the same operations in the same order)."""
    cfg, cf = C[0], C[1]
    pre, dec = _layer_attention(cf, tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_ctx)
    w = cfg[WIN]
    if w > 0:  # IterationCost._windowed_s
        rows = tokens - decode_seqs
        pre_w, dec_w = _layer_attention(cf, tokens, _bound(prefill_pairs, rows, w),
                                        _bound(prefill_kv_tokens, rows, w), decode_seqs,
                                        _bound(decode_ctx, decode_seqs, w))
        full = cfg[LAYERS] - cfg[WLAYERS]
        wl = cfg[WLAYERS]
        pre = (full * pre + wl * pre_w) / cfg[LAYERS]
        dec = (full * dec + wl * dec_w) / cfg[LAYERS]
    t = (C[2][tokens] + C[3][logits]) + cfg[LAYERS] * (pre + dec)
    host = cf[EAGER]
    if host and host > t - cf[OV] and (prefill_pairs > 0 or decode_seqs > cfg[GRAPHMAX]):
        t = host + cf[OV]
    if cf[CH]:
        t += cf[CH] * (decode_ctx + prefill_kv_tokens + tokens - decode_seqs)
    if cf[SH]:
        t += cf[SH] * logits
    return t


@njit(cache=True, inline="always", _nrt=False)
def _end(R, E, C, S, t, nch, decode):
    """Instance.end: the decode step, then each chunk's progress (prefills that complete emit)."""
    iv = E[0]
    target, prefilled = R[4], R[5]
    if decode and iv[NDEC]:
        _decode_step(R, E, C, t)
    for k in range(nch):
        rid = S[0][k]
        prefilled[rid] += S[1][k]
        if prefilled[rid] == target[rid]:
            _prefill_complete(R, E, C, rid, t)


@njit(cache=True, inline="always", _nrt=False)
def _remove(buf, count, rid):
    """Remove the first `rid` from buf[:count] keeping the order; returns the new count."""
    for k in range(count):
        if buf[k] == rid:
            for j in range(k, count - 1):
                buf[j] = buf[j + 1]
            return count - 1
    return count


@njit(cache=True, inline="always", _nrt=False)
def _admit(R, E, rid, t):
    iv = E[0]
    R[3][rid] = PREFILL
    R[4][rid] = R[1][rid] + R[6][rid]
    R[5][rid] = 0
    R[7][rid] = 0
    if R[11][rid] < 0:
        R[11][rid] = t
    E[3][iv[NPF]] = rid
    iv[NPF] += 1


@njit(cache=True, inline="always", _nrt=False)
def _gap(E, g):
    iv = E[0]
    E[8][iv[GN]] = g
    iv[GN] += 1


@njit(cache=True, inline="always", _nrt=False)
def _prefill_complete(R, E, C, rid, t):
    iv = E[0]
    emitted, last = R[6], R[13]
    iv[NPF] = _remove(E[3], iv[NPF], rid)
    if emitted[rid] and last[rid] >= 0:
        _gap(E, t - last[rid])  # the gap across a preemption
    emitted[rid] += 1
    if R[12][rid] < 0:
        R[12][rid] = t
    last[rid] = t
    if emitted[rid] >= R[2][rid]:
        _release(R, E, rid)
        _finish(R, E, rid, t)
        return
    _become_decoder(R, E, C, rid, R[4][rid])
    E[4][iv[PN]] = rid
    iv[PN] += 1


@njit(cache=True, inline="always", _nrt=False)
def _release(R, E, rid):
    E[0][FREE] += R[7][rid]
    R[7][rid] = 0


@njit(cache=True, inline="always", _nrt=False)
def _finish(R, E, rid, t):
    R[3][rid] = DONE
    R[14][rid] = t
    E[0][COMPLETED] += 1
    if t > E[1][MAKESPAN]:
        E[1][MAKESPAN] = t


@njit(cache=True, inline="always", _nrt=False)
def _become_decoder(R, E, C, rid, ctx):
    iv = E[0]
    B = C[0][B_]
    epoch = R[10]
    R[3][rid] = DECODE
    R[9][rid] = ctx
    R[8][rid] = iv[DSTEP]
    epoch[rid] += 1
    iv[NDEC] += 1
    iv[CTXSUM] += ctx
    E[5][(ctx - iv[DSTEP]) % B] += 1
    _heap_push(E, iv[DSTEP] + R[2][rid] - R[6][rid], rid, epoch[rid])
    jr, je = E[12], E[13]
    jr[iv[JN]], je[iv[JN]] = rid, epoch[rid]
    iv[JN] += 1
    if iv[JN] > 2 * iv[NDEC] + 64:  # drop the stale entries, as Instance._become_decoder
        k = 0
        for j in range(iv[JN]):
            r = jr[j]
            if epoch[r] == je[j] and R[3][r] == DECODE:
                jr[k], je[k] = r, je[j]
                k += 1
        iv[JN] = k


@njit(cache=True, inline="always", _nrt=False)
def _heap_push(E, step, rid, ep):
    """The finishing heap, ordered by step (which of several finishing at one step goes first
    changes nothing: each sets its own columns and adds to commutative integer counters)."""
    iv, hs, hr, he = E[0], E[9], E[10], E[11]
    k = iv[HN]
    iv[HN] += 1
    while k > 0:
        p = (k - 1) // 2
        if hs[p] <= step:
            break
        hs[k], hr[k], he[k] = hs[p], hr[p], he[p]
        k = p
    hs[k], hr[k], he[k] = step, rid, ep


@njit(cache=True, inline="always", _nrt=False)
def _heap_pop(E):
    iv, hs, hr, he = E[0], E[9], E[10], E[11]
    rid, ep = hr[0], he[0]
    iv[HN] -= 1
    m = iv[HN]
    s, r, e = hs[m], hr[m], he[m]
    k = 0
    while True:
        c = 2 * k + 1
        if c >= m:
            break
        if c + 1 < m and hs[c + 1] < hs[c]:
            c += 1
        if hs[c] >= s:
            break
        hs[k], hr[k], he[k] = hs[c], hr[c], he[c]
        k = c
    hs[k], hr[k], he[k] = s, r, e
    return rid, ep


@njit(cache=True, inline="always", _nrt=False)
def _decode_step(R, E, C, t):
    """Instance._decode_step: every decoder emits a token at t; finished ones leave."""
    iv = E[0]
    state, last, epoch = R[3], R[13], R[10]
    n = iv[NDEC]
    iv[DSTEP] += 1
    d = iv[DSTEP]
    iv[CTXSUM] += n
    cont = n
    if iv[PN]:
        for k in range(iv[PN]):
            rid = E[4][k]
            if state[rid] == DECODE:
                _gap(E, t - last[rid])
        cont = n - iv[PN]
        iv[PN] = 0
    E[6][d] = t
    E[7][d] = cont
    while iv[HN] and E[9][0] <= d:
        rid, ep = _heap_pop(E)
        if epoch[rid] != ep or state[rid] != DECODE:
            continue
        R[6][rid] = R[2][rid]
        last[rid] = t
        _leave_decoders(R, E, C, rid)
        _finish(R, E, rid, t)


@njit(cache=True, inline="always", _nrt=False)
def _leave_decoders(R, E, C, rid):
    iv = E[0]
    B = C[0][B_]
    ctx = R[9][rid] + iv[DSTEP] - R[8][rid]
    iv[NDEC] -= 1
    iv[CTXSUM] -= ctx
    E[5][(R[9][rid] - R[8][rid]) % B] -= 1
    R[7][rid] = -(-ctx // B)
    _release(R, E, rid)


@njit(cache=True, inline="always", _nrt=False)
def _preempt(R, E, C, rid):
    """Instance._preempt: recompute preemption, requeued at the head."""
    iv = E[0]
    state = R[3]
    if state[rid] == DECODE:
        steps = iv[DSTEP] - R[8][rid]
        R[6][rid] = R[6][rid] + steps
        if steps:
            R[13][rid] = E[6][iv[DSTEP]]
        _leave_decoders(R, E, C, rid)
        R[10][rid] += 1
        iv[PN] = _remove(E[4], iv[PN], rid)
    else:
        iv[NPF] = _remove(E[3], iv[NPF], rid)
        _release(R, E, rid)
    state[rid] = WAITING
    R[15][rid] += 1
    iv[WHEAD] = (iv[WHEAD] - 1) % C[0][WCAP]
    E[2][iv[WHEAD]] = rid
    iv[NWAIT] += 1
