"""Compound LLM workflows: DAGs of LLM calls (`serve --workflow FILE`).

A workflow file lists workflow kinds; each kind arrives as a Poisson stream of instances, and an
instance is a DAG of calls: fan-out/fan-in (LLMCompiler's parallel function calls, map-reduce
summarisation), chains (an agent's tool loop, with the tool's latency between calls). A call is
sent when every call it depends on has finished, plus its `tool_latency_s`; its prompt can carry
its parents' outputs (`context: outputs`) or their whole exchange (`context: history`, an agent
re-sending the conversation).

    workflows:
      - name: map-reduce
        count: 200              # instances
        rate: 1.0               # instances per second (Poisson)
        calls:
          - {id: split, prompt_tokens: 400, output_tokens: 100}
          - {id: summarize, after: [split], fanout: 8, prompt_tokens: 2000, output_tokens: 150}
          - {id: reduce, after: [summarize], prompt_tokens: 200, output_tokens: 300, context: outputs}
      - name: agent
        count: 100
        rate: 0.5
        calls:
          - {id: step, repeat: 4, tool_latency_s: 1.5, prompt_tokens: 300, output_tokens: 200, context: history}

`fanout: N` runs N copies side by side (a later call waits for all of them); `repeat: N` runs N
copies one after another (a later call waits for the last). `--workflow-mode sequential` issues
every call of an instance one after another in file order (what a client without parallel calls
does), with the same prompts; the gain of parallel issue is the difference.

The expansion is columns (a `Workload`) plus the dependency lists (`Dependencies`), which the
engine loop reads: a dependent call enters when its last parent finishes (engine.Loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parasim.errors import InputError
from parasim.serving.requests import Workload
from parasim.specs import edge

WORKFLOW_MODES = ("parallel", "sequential")
CONTEXTS = ("none", "outputs", "history")
#: most copies of one call (fanout or repeat), and most calls per instance after expansion
MAX_COPIES = 1024
MAX_CALLS_PER_INSTANCE = 10_000
_CALL_KEYS = ("id", "prompt_tokens", "output_tokens", "after", "fanout", "repeat", "tool_latency_s", "context")
_KIND_KEYS = ("name", "count", "rate", "calls")


@dataclass(frozen=True)
class Call:
    id: str
    prompt_tokens: int
    output_tokens: int
    after: tuple[str, ...] = ()
    fanout: int = 1
    repeat: int = 1
    tool_latency_s: float = 0.0
    context: str = "none"


@dataclass(frozen=True)
class WorkflowKind:
    name: str
    count: int
    rate: float
    calls: tuple[Call, ...]


@dataclass(frozen=True, eq=False)
class Dependencies:
    """Who waits for whom, per request of the expanded workload (CSR child lists)."""

    parents: np.ndarray  # int64: calls each request waits for
    child_start: np.ndarray  # int64, n + 1 offsets into `children`
    children: np.ndarray  # int64
    tool_latency_s: np.ndarray  # float64: from the last parent's finish to the send
    instance: np.ndarray  # int64: the workflow instance of each request
    instance_start_s: np.ndarray  # float64: each instance's arrival
    instance_kind: np.ndarray  # int64: index into `kinds`
    kinds: tuple[str, ...]
    mode: str

    @property
    def roots(self) -> np.ndarray:
        """Requests with no parent, in arrival order (the workload is sorted by instance arrival)."""
        return np.flatnonzero(self.parents == 0)


# --- reading ------------------------------------------------------------------------------------------
def read_workflows(path: str | Path) -> tuple[WorkflowKind, ...]:
    """The workflow kinds of a YAML or JSON file; every bad value is an InputError naming its place."""
    p = Path(path)
    data = edge.load_yaml_file(p, "workflow", what="workflow file")  # YAML reads JSON too
    where = p.name
    if not isinstance(data, dict):
        raise InputError(where, "a workflow file is a mapping with one key, workflows")
    kinds = data.get("workflows")
    if set(data) - {"workflows"}:
        raise InputError(f"{where}:{sorted(set(data) - {'workflows'})[0]}", "unknown key; allowed: workflows")
    if not isinstance(kinds, list) or not kinds:
        raise InputError(f"{where}:workflows", "must be a non-empty list of workflow kinds")
    out = [_kind(k, f"{where}:workflows[{i}]") for i, k in enumerate(kinds)]
    names = [k.name for k in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise InputError(f"{where}:workflows", f"two workflow kinds are named {dup!r}")
    return tuple(out)


def _kind(d: Any, where: str) -> WorkflowKind:
    if not isinstance(d, dict):
        raise InputError(where, "must be a mapping with name, count, rate, calls")
    _known(d, _KIND_KEYS, where)
    name = edge.text_value(f"{where}.name", d.get("name"))
    count = edge.positive_int(f"{where}.count", d.get("count"))
    rate = edge.number(f"{where}.rate", d.get("rate"), lo=0, lo_open=True, hi=1e9)
    calls_raw = d.get("calls")
    if not isinstance(calls_raw, list) or not calls_raw:
        raise InputError(f"{where}.calls", "must be a non-empty list of calls")
    calls: list[Call] = []
    for j, c in enumerate(calls_raw):
        calls.append(_call(c, f"{where}.calls[{j}]", {x.id for x in calls}))
    size = sum(c.fanout * c.repeat for c in calls)
    if size > MAX_CALLS_PER_INSTANCE:
        raise InputError(f"{where}.calls", f"{size:,} calls per instance; at most {MAX_CALLS_PER_INSTANCE:,}")
    if count * size > edge.cap("requests"):
        raise InputError(f"{where}.count", f"{count:,} instances x {size:,} calls is more than {edge.cap('requests'):,} "
                                           f"requests; {edge.cap_hint('requests')}")
    return WorkflowKind(name, count, float(rate), tuple(calls))


def _call(d: Any, where: str, earlier: set[str]) -> Call:
    if not isinstance(d, dict):
        raise InputError(where, "must be a mapping with id, prompt_tokens, output_tokens")
    _known(d, _CALL_KEYS, where)
    cid = edge.text_value(f"{where}.id", d.get("id"))
    if cid in earlier:
        raise InputError(f"{where}.id", f"{cid!r} is used twice")
    after = d.get("after", [])
    if isinstance(after, str):
        after = [after]
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        raise InputError(f"{where}.after", "must be a list of earlier call ids")
    for a in after:
        if a not in earlier:
            raise InputError(f"{where}.after", f"{a!r} is not an earlier call of this workflow (calls may only "
                                               "wait for calls listed before them, so the graph has no cycle)")
    fanout = edge.positive_int(f"{where}.fanout", d.get("fanout", 1), hi=MAX_COPIES)
    repeat = edge.positive_int(f"{where}.repeat", d.get("repeat", 1), hi=MAX_COPIES)
    if fanout > 1 and repeat > 1:
        raise InputError(f"{where}.repeat", "give fanout (copies side by side) or repeat (one after another), not both")
    context = d.get("context", "none")
    if context not in CONTEXTS:
        raise InputError(f"{where}.context", f"{context!r} is not one of {', '.join(CONTEXTS)}")
    return Call(cid, edge.positive_int(f"{where}.prompt_tokens", d.get("prompt_tokens"), hi=edge.cap("tokens")),
                edge.positive_int(f"{where}.output_tokens", d.get("output_tokens"), hi=edge.cap("tokens")),
                tuple(after), fanout, repeat,
                float(edge.number(f"{where}.tool_latency_s", d.get("tool_latency_s", 0.0), lo=0, hi=86_400)), context)


def _known(d: dict, keys: tuple[str, ...], where: str) -> None:
    bad = [k for k in d if k not in keys]
    if bad:
        raise InputError(f"{where}.{bad[0]}", f"unknown key; allowed: {', '.join(keys)}")


# --- expansion ----------------------------------------------------------------------------------------
def _instance_graph(kind: WorkflowKind) -> tuple[list[Call], list[list[int]]]:
    """One instance's nodes (a call per copy) and each node's parents, in file order."""
    nodes: list[Call] = []
    parents: list[list[int]] = []
    ends: dict[str, list[int]] = {}
    for c in kind.calls:
        upstream = [p for a in c.after for p in ends[a]]
        if c.repeat > 1:
            prev = upstream
            for _ in range(c.repeat):
                nodes.append(c)
                parents.append(prev)
                prev = [len(nodes) - 1]
            ends[c.id] = prev
        else:
            first = len(nodes)
            for _ in range(c.fanout):
                nodes.append(c)
                parents.append(upstream)
            ends[c.id] = list(range(first, len(nodes)))
    return nodes, parents


def _prompts(nodes: list[Call], parents: list[list[int]]) -> list[int]:
    """Prompt tokens per node: its own, plus its parents' outputs (`outputs`) or their prompts and
    outputs (`history`)."""
    out: list[int] = []
    for call, ps in zip(nodes, parents):
        extra = 0
        if call.context == "outputs":
            extra = sum(nodes[p].output_tokens for p in ps)
        elif call.context == "history":
            extra = sum(out[p] + nodes[p].output_tokens for p in ps)
        out.append(call.prompt_tokens + extra)
    return out


def expand(kinds: tuple[WorkflowKind, ...], *, mode: str = "parallel", seed: int = 0,
           max_total_tokens: int | None = None) -> tuple[Workload, Dependencies]:
    """The workload of every call of every instance (instances Poisson per kind, seeded), sorted by
    instance arrival, and the dependencies among them. `sequential`: each call of an instance waits
    for the one before it in file order instead of its own parents."""
    if mode not in WORKFLOW_MODES:
        raise InputError("workflow_mode", f"{mode!r} is not one of {', '.join(WORKFLOW_MODES)}")
    rng = np.random.default_rng(seed)
    starts, kind_of = [], []
    for k, kind in enumerate(kinds):
        gaps = rng.exponential(1.0 / kind.rate, kind.count)
        starts.append(np.cumsum(gaps) - gaps[0])
        kind_of.append(np.full(kind.count, k, dtype=np.int64))
    start = np.concatenate(starts)
    kind_idx = np.concatenate(kind_of)
    order = np.argsort(start, kind="stable")
    start, kind_idx = start[order], kind_idx[order]
    graphs = [_instance_graph(k) for k in kinds]
    prompts = [_prompts(*g) for g in graphs]
    arrival, prompt, output, tool, inst, n_par, edges = [], [], [], [], [], [], []
    base = 0
    for i, (t0, k) in enumerate(zip(start.tolist(), kind_idx.tolist())):
        nodes, parents = graphs[k]
        if mode == "sequential":
            parents = [[j - 1] if j else [] for j in range(len(nodes))]
        for j, (call, ps) in enumerate(zip(nodes, parents)):
            arrival.append(t0)
            prompt.append(prompts[k][j])
            output.append(call.output_tokens)
            tool.append(call.tool_latency_s if ps else 0.0)
            inst.append(i)
            n_par.append(len(ps))
            edges += [(base + p, base + j) for p in ps]
        base += len(nodes)
    p = np.asarray(prompt, dtype=np.int64)
    o = np.asarray(output, dtype=np.int64)
    if max_total_tokens is not None and np.any(p + o > max_total_tokens):
        worst = int((p + o).max())
        raise InputError("workflow", f"a call needs {worst:,} tokens (prompt with its context, plus output), more than "
                                     f"the model's {max_total_tokens:,}-token context")
    wl = Workload.from_columns(np.asarray(arrival), p, o, where="workflow")
    n = len(wl)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    e = e[np.argsort(e[:, 0], kind="stable")]
    counts = np.bincount(e[:, 0], minlength=n) if e.size else np.zeros(n, dtype=np.int64)
    deps = Dependencies(parents=np.asarray(n_par, dtype=np.int64), child_start=np.concatenate(([0], np.cumsum(counts))),
                        children=e[:, 1].copy(), tool_latency_s=np.asarray(tool, dtype=np.float64),
                        instance=np.asarray(inst, dtype=np.int64), instance_start_s=start, instance_kind=kind_idx,
                        kinds=tuple(k.name for k in kinds), mode=mode)
    return wl, deps


# --- results ------------------------------------------------------------------------------------------
def workflow_summary(deps: Dependencies, finish_s: np.ndarray, completed: np.ndarray) -> dict[str, Any]:
    """Per-instance end-to-end latency (its first arrival to its last call's finish), over the
    instances whose every call completed; overall and per kind."""
    n_inst = deps.instance_start_s.shape[0]
    last = np.full(n_inst, -np.inf)
    np.maximum.at(last, deps.instance, finish_s)
    failed = np.zeros(n_inst, dtype=bool)
    np.logical_or.at(failed, deps.instance, ~completed)
    e2e = last - deps.instance_start_s
    ok = ~failed

    def stats(mask: np.ndarray) -> dict[str, Any]:
        d: dict[str, Any] = {"instances": int(mask.sum()), "completed": int((mask & ok).sum())}
        x = e2e[mask & ok]
        if x.size:
            d |= {"e2e_mean_s": float(x.mean()), "e2e_p50_s": float(np.percentile(x, 50)),
                  "e2e_p90_s": float(np.percentile(x, 90)), "e2e_p99_s": float(np.percentile(x, 99))}
        return d

    out = {"mode": deps.mode, **stats(np.ones(n_inst, dtype=bool))}
    out["by_kind"] = {name: stats(deps.instance_kind == k) for k, name in enumerate(deps.kinds)}
    return out
