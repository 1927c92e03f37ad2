"""A training result's `timeline` as a Chrome trace (`parasim train --timeline FILE`).

One process per pipeline stage (pid = stage + 1; every TP/CP/EP/DP rank of a stage does the
same work in this model, so no stage needs more than one), one thread per stream: compute
(forward F, backward B, and the straggler wait on the critical stage), pipeline send/receive,
the exposed TP/CP/EP in-layer collectives, DP/FSDP collectives, the optimizer. Every span of the
timeline becomes one complete event; idle time on the compute thread is the bubble.
"""

from __future__ import annotations

from typing import Any

from parasim.report import trace

THREADS = {"compute": (1, "compute"), "pp": (2, "pp send/recv"), "inlayer": (3, "TP/CP/EP collectives (exposed)"),
           "dp": (4, "DP/FSDP collectives"), "optimizer": (5, "optimizer")}
OP_NAMES = {"F": "forward", "B": "backward", "W": "weight-grad"}


def has_timeline(result: dict[str, Any]) -> bool:
    """Whether a (saved) result carries the op intervals a trace or a Gantt chart needs."""
    return isinstance(result.get("timeline"), dict) and bool(result["timeline"].get("stages"))


def events(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every metadata and complete event of the result's timeline, stage by stage."""
    from parasim.training.timeline import STREAM_OF  # here: has_timeline's readers need no simulator

    tl = result["timeline"]
    pp = len(tl["stages"])
    out: list[dict[str, Any]] = []
    for st in tl["stages"]:
        pid = st["stage"] + 1
        out += trace.process(pid, _stage_name(tl["stages"], st["stage"], pp), st["stage"])
        used = sorted({THREADS[STREAM_OF[s[0]]] for s in st["spans"]})
        for tid, name in used:
            out.append(trace.thread(pid, tid, name))
        out += _stage_events(tl, st, pid, pp)
    return out


def _stage_name(stages: list[dict], r: int, pp: int) -> str:
    """`stage 1: layers 20-39` (each chunk's range; interleaved stages hold several, in the
    timeline's `virtual_stages` placement when it has one: ZB-V's V, DualPipe's two copies)."""
    counts = [s["layers"] for s in stages]
    where = _placement(stages, pp)
    by_stage = {g: counts[rank][c] for rank in range(pp) for c, g in enumerate(where[rank])}
    starts, start = {}, 0
    for g in sorted(by_stage):
        starts[g] = start
        start += by_stage[g]
    ranges = {c: f"{starts[g]}-{starts[g] + counts[r][c] - 1}" for c, g in enumerate(where[r]) if counts[r][c]}
    return f"stage {r}: layers {', '.join(ranges[c] for c in sorted(ranges)) or 'none'}"


def _stage_events(tl: dict[str, Any], st: dict[str, Any], pid: int, pp: int) -> list[dict[str, Any]]:
    from parasim.training.timeline import STREAM_OF

    out = []
    spans = st["spans"]
    op = "F"
    split = any(sp[0] == "W" for sp in spans)  # B is then the input gradient only
    for i, (kind, start, dur, mb, c) in enumerate(spans):
        if kind in OP_NAMES:
            op = kind
        elif kind == "recv" and i + 1 < len(spans):
            op = spans[i + 1][0]  # a receive precedes the op it feeds
        tid = THREADS[STREAM_OF[kind]][0]
        out.append(trace.complete(pid, tid, _name(kind, op, st), STREAM_OF[kind], start, start + dur,
                                  _args(tl, st, kind, op, mb, c, pp, split)))
    return out


def _name(kind: str, op: str, st: dict[str, Any]) -> str:
    if kind in OP_NAMES:
        return kind
    return {"recv": f"recv {'activations' if op == 'F' else 'gradients'}",
            "send": f"send {'activations' if op == 'F' else 'gradients'}",
            "tp_cp_ep": f"TP/CP/EP comm ({op})", "fsdp": f"FSDP gather/reduce ({op})",
            "grad_reduce_overlapped": f"grad {st['grad_kind']} (under backward)",
            "grad_reduce": f"grad {st['grad_kind']} (exposed)", "param_gather": "param all_gather (exposed)",
            "optimizer": "optimizer step", "straggler": "straggler (slowest GPU)"}[kind]


def _args(tl: dict[str, Any], st: dict[str, Any], kind: str, op: str, mb, c, pp: int,
          split: bool = False) -> dict[str, Any]:
    r = st["stage"]
    if mb is None:
        bytes_ = {"grad_reduce": st["grad_bytes"], "grad_reduce_overlapped": st["grad_bytes"],
                  "param_gather": st["param_gather_bytes"]}.get(kind)
        return {"bytes": bytes_} if bytes_ else {}
    g = st["virtual_stages"][c] if st.get("virtual_stages") else c * pp + r
    args: dict[str, Any] = {"micro_batch": mb, "chunk": c, "virtual_stage": g, "op": op}
    if kind in OP_NAMES:
        flops = st["forward_model_flops" if kind == "F" else "backward_model_flops"][c]
        if split and kind != "F":  # 6N convention: the backward's 2x forward, one x for B and one for W
            flops -= st["forward_model_flops"][c]
        args.update(layers=st["layers"][c], model_flops=flops)
    elif kind in ("recv", "send"):
        peer = _peer_rank(tl["stages"], c, g + 1 if (kind == "send") == (op == "F") else g - 1, pp)
        args.update(bytes=tl["p2p_bytes"], transfer_s=tl["p2p_transfer_s"], blocking=tl["p2p_blocking"],
                    peer_stage=peer)
    return args


def _placement(stages: list[dict], pp: int) -> list[list[int]]:
    """Per rank, per chunk: its virtual stage (the timeline's, else Megatron's c * pp + rank)."""
    return [st.get("virtual_stages") or [c * pp + r for c in range(len(st["layers"]))] for r, st in enumerate(stages)]


def _peer_rank(stages: list[dict], chunk: int, g: int, pp: int) -> int:
    """The rank that runs virtual stage g: one whose chunk `chunk` is g (DualPipe holds every stage
    twice, once per direction), else any that holds it, else Megatron's g mod pp."""
    where = _placement(stages, pp)
    same = [r for r, w in enumerate(where) if w[chunk] == g]
    held = [r for r, w in enumerate(where) if g in w]
    return (same or held or [g % pp])[0]


def other_data(result: dict[str, Any]) -> dict[str, Any]:
    """What the trace is of: the model, the cluster, the plan and the headline numbers."""
    tl = result["timeline"]
    return {"parasim_version": result.get("parasim_version"), "command": result.get("command", "train"),
            "model": result.get("model"), "gpu": result.get("gpu"), "gpus": result.get("gpus"),
            "plan": result.get("plan"), "step_time_s": result.get("step_time_s"),
            "breakdown": result.get("breakdown"), "critical_stage": tl["critical_stage"],
            "time_unit": "us (ts, dur)"}


def dumps(result: dict[str, Any]) -> str:
    """The trace file's text for a training result with a timeline."""
    return trace.dumps_trace(events(result), other_data=other_data(result))
