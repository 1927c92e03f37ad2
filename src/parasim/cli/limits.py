"""What every option of every command allows: one declarative table per command.

A flag typed on the command line and the same key in a `-c config.yaml` pass through the same
rule (`check`), once, before anything computes with them: integers within [lo, cap] (caps on
sizes come from `specs.edge.CAPS` and can be raised with `PARASIM_MAX_<NAME>`), finite floats
within physical bounds, non-empty text without control characters, real booleans, comma lists
of bounded positive integers. The cross-field and catalog checks (a TP that does not divide the
heads, an unknown scheduler) stay with the specs that own them; this table only makes sure that
what reaches them is a value of the right kind and a sane size. docs/limits.md lists it.

Why a table rather than checks in each command: a new option without a rule is caught by
tests/test_hostile_cli.py (it walks every command's parameters), not by a user's traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parasim.errors import InputError
from parasim.specs import edge
from parasim.training.goodput import MIN_BW_GBPS, MIN_MTBF_GPU_HOURS

#: longest text value (a name, a list, an address); longer is not a typo but a pasted file
MAX_TEXT_CHARS = 4096
SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class Rule:
    """kind: int | float | bool | text | version (a dotted release, text only) | texts (repeatable) | path (a file its reader checks) | sweep (LO:HI:N) |
    file / files (a file that must exist now) | out (an output file) | ints (a comma list of positive
    integers) | gpu_counts (ints or doubling ranges) | pairs (key=value,...) | columns (a trace's) |
    node_groups (a config file's list of GPU groups, specs/mixed.py)."""

    kind: str
    cap: str | None = None  # int kinds: the edge.CAPS entry bounding the value
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False


def I(cap: str | None = None, *, lo: int = 1, hi: int | None = None) -> Rule:  # noqa: E743 - a table's shorthand
    return Rule("int", cap=cap, lo=lo, hi=hi)


def F(lo: float = 0.0, hi: float | None = None, *, lo_open: bool = True) -> Rule:
    return Rule("float", lo=lo, hi=hi, lo_open=lo_open)


def L(cap: str) -> Rule:
    return Rule("ints", cap=cap)


TEXT, TEXTS, BOOL, PATH, OUT = Rule("text"), Rule("texts"), Rule("bool"), Rule("path"), Rule("out")
VERSION = Rule("version")  # a dotted release as text: a YAML number would read 9.20 as 9.2
SEED = I(lo=0, hi=SEED_MAX)
SECONDS = F()  # an SLO: positive; serving.metrics.slo_seconds bounds it (and spots milliseconds)
OVERHEAD_S = F(0.0, 10.0, lo_open=False)  # per-iteration host costs: 10 s is far past any engine
RATE = F(0.0, 1e9)  # requests per second
SIGMA = F(0.0, 10.0)
OUTPUTS = {"json": BOOL, "json_out": OUT}
REPORT_OUT = {"report": OUT}  # --report FILE.html: train, serve, plan train, plan serve
#: most cross-validation folds (`validate --cv`) and Gauss-Newton refinements (`calibrate --refine-steps`):
#: each fold or refinement re-runs cases, and more than these buys nothing but time
MAX_CV_FOLDS = 20
MAX_REFINE = 5
#: most rates in one `serve --sweep-rate LO:HI:N`: each is a full simulation; a curve needs tens
MAX_SWEEP_POINTS = 256
#: Python parameter names of the --json / --json-out pair in train, plan, inspect, models, gpus, validate
#: (and of plan's --report, whose name `report` is taken by the function that prints a ranking)
JSON_NAMES = {"json_out": "json", "json_file": "json_out", "report_file": "report"}

_SLO = {"slo_ttft": SECONDS, "slo_tpot": SECONDS, "slo_e2e": SECONDS, "slo_itl": SECONDS,
        "itl_percentile": F(0.0, 100.0), "attainment": F(0.0, 1.0), "max_queueing_p50": F(0.0, 1e6)}
#: failure and checkpoint assumptions (training/goodput.py): an MTBF from 3.6 GPU-seconds to 10^9
#: GPU-hours, bandwidths from 1 Mbit/s to 10^9 Gbit/s, a restart of at most a week
_GOODPUT = {"mtbf_gpu_hours": F(MIN_MTBF_GPU_HOURS, 1e9, lo_open=False),
            "checkpoint_bw_gbps": F(MIN_BW_GBPS, 1e9, lo_open=False), "storage_bw_gbps": F(MIN_BW_GBPS, 1e9, lo_open=False),
            "restart_s": F(0.0, 7 * 86400.0, lo_open=False), "async_save": BOOL}
_RUN = {"workers": I("workers"), "executor": TEXT, "ray_address": TEXT, "top": I("rows"), "pareto": TEXT,
        "objective": TEXT, "emit_yaml": OUT, **OUTPUTS, **REPORT_OUT}

SERVE: dict[str, Rule] = {
    "config": PATH, "model": TEXT, "gpu": TEXT, "gpus": I("replicas"), "gpus_per_node": I("gpus"),
    "tp": I("gpus"), "pp": I("gpus"), "replicas": I("replicas"), "ep": I("replicas"), "engine": TEXT,
    "scheduler": TEXT, "token_budget": I("tokens"), "chunk_size": I("tokens"), "max_batch": I("batch"),
    "block_size": I("tokens"), "weights": TEXT, "kv_dtype": TEXT, "prefix_cache": BOOL, "router": TEXT,
    "gpu_memory_utilization": F(0.0, 1.0), "kv_reservation": TEXT, "iteration_overhead_s": OVERHEAD_S,
    "eager_prefill_layer_s": OVERHEAD_S, "output_delay_s": OVERHEAD_S, "act_quant": TEXT,
    "host_s_per_context_token": OVERHEAD_S, "host_s_per_sequence": OVERHEAD_S,
    "serial_host_s_per_sequence": OVERHEAD_S,
    "frontend_s_per_request": OVERHEAD_S,
    "custom_allreduce": BOOL, "schedule_ahead": BOOL, "cuda_graph_max_batch": I("batch", lo=0), "attention": TEXT,
    "prefill_gpus": I("replicas"), "prefill_tp": I("gpus"), "decode_gpus": I("replicas"), "decode_tp": I("gpus"),
    "prefill_pp": I("gpus"), "decode_pp": I("gpus"),
    "max_queued": I("requests"), "autoscale_max": I("replicas"), "autoscale_target": F(0.0, 1e9),
    "autoscale_interval_s": F(0.0, 3600.0), "autoscale_startup_s": F(0.0, 3600.0, lo_open=False),
    "autoscale_down_delay_s": F(0.0, 3600.0, lo_open=False),
    "migration": TEXT, "migration_interval_s": F(0.0, 3600.0), "migrate_out_threshold": F(0.0, 1e6),
    "spec_method": TEXT, "num_speculative_tokens": I(hi=16), "spec_acceptance": F(0.0, 1.0), "draft_model": TEXT,
    "overlap": TEXT, "nano_batches": I(lo=2, hi=16), "context_pass": TEXT,
    "trace": PATH, "trace_columns": Rule("columns"), "rate": RATE, "requests": I("requests"), "seed": SEED,
    "workflow": PATH, "workflow_mode": TEXT, "arrival": TEXT, "cv": F(0.0, 100.0), "prompt_tokens": I("tokens"), "output_tokens": I("tokens"),
    "length_dist": TEXT, "length_sigma": SIGMA, "prompt_dist": PATH, "output_dist": PATH, "burst": BOOL,
    "max_concurrency": I("batch"), **_SLO, "capacity": BOOL, "requests_out": OUT, "bench_json": OUT, **OUTPUTS,
    "profile": PATH, "timeline": OUT, "timeline_requests": I("requests", lo=0), "sweep_rate": Rule("sweep"),
    "workers": I("workers"), **REPORT_OUT, "models": PATH,
    "decode_attention": TEXT,
    "attention_window": TEXT,
    "sliding_kv": TEXT,
    "moe_gemm": TEXT,
    "expert_padding": TEXT,
    "cuda_graph_batch_sizes": L("batch"),
    "sampler": TEXT,
    "sampler_profile": TEXT,
}

#: the training stack's options, `parasim train`'s and `parasim plan train`'s alike (cli/train_stack.py);
#: MoE: training/plan.py bounds the imbalance and the capacity factor (MAX_MOE_IMBALANCE, MAX_CAPACITY_FACTOR)
STACK: dict[str, Rule] = {
    "gpus_per_node": I("gpus"), "inter_node_gbps": F(0.0, 1e6), "sequence_parallel": BOOL, "grad_dtype": TEXT,
    "overlap_grad_reduce": BOOL, "overlap_param_gather": BOOL, "tp_comm_overlap": BOOL, "overlap_p2p_comm": BOOL,
    "attention": TEXT, "kernels": TEXT, "fsdp_layout": TEXT, "cp_ring": TEXT, "param_state": TEXT,
    "fp8_recipe": TEXT, "fp8_param_gather": BOOL, "cross_entropy": TEXT,
    "moe_imbalance": F(1.0, 1024.0, lo_open=False), "moe_capacity_factor": F(0.0, 1024.0), "moe_a2a": TEXT,
    "moe_a2a_overlap": BOOL, "moe_routing": TEXT, "recompute_modules": TEXT, "cuda_graph_scope": TEXT, "cudnn_version": VERSION, "save_interval": I(hi=10**9),
    "power_limit_w": F(0.0, 1e5),  # W; the part's own range (idle, rated TDP] is checked by AcceleratorSpec.with_power_limit
}

TRAIN: dict[str, Rule] = {
    "config": PATH, "model": TEXT, "gpu": TEXT, "gpus": I("gpus"), "tp": I("gpus"), "pp": I("gpus"), "dp": I("gpus"),
    "cp": I("gpus"), "ep": I("gpus"), "virtual_stages": I(hi=100_000), "zero": I(lo=0, hi=3), "fsdp_shard": I("gpus"),
    "micro_batch": I("batch"), "global_batch": I("batch"), "seq_len": I("tokens"), "seq_len_dist": PATH,
    "varlen_balance": TEXT, "recompute": TEXT, "precision": TEXT, "schedule": TEXT,
    "profile": PATH, "timeline": OUT, **OUTPUTS, **REPORT_OUT, "tokens": F(0.0, 1e18), **_GOODPUT, **STACK,
    "node_groups": Rule("node_groups"), "mixed_placement": TEXT, "mixed_split": TEXT, "etp": I("gpus"),
}

PLAN_TRAIN: dict[str, Rule] = {
    "model": TEXT, "gpu": TEXTS, "gpus": Rule("gpu_counts", cap="gpus"), "seq_len": I("tokens"),
    "global_batch_tokens": I("batch_tokens"), "global_batch": I("batch"), "batch_tolerance": F(lo_open=False),
    "tokens": F(0.0, 1e18), "reference": Rule("pairs"), "tp": L("gpus"), "pp": L("gpus"), "cp": L("gpus"),
    "ep": L("gpus"), "etp": TEXT, "micro_batch": L("batch"), "virtual_stages": L("gpus"), "zero": TEXT, "recompute": TEXT,
    "precision": TEXT, "schedules": TEXT, "profile": PATH, "seq_len_dist": PATH, "varlen_balance": TEXT,
    **_GOODPUT, **_RUN, "config": PATH, **STACK,
    # train's flags whose value the search chooses another way: refused, naming the plan-train option
    "dp": I("gpus"), "schedule": TEXT, "mixed_placement": TEXT, "mixed_split": TEXT,
}

PLAN_SERVE: dict[str, Rule] = {
    "model": TEXT, "gpu": TEXTS, "max_gpus": I("replicas"), **_SLO, "trace": PATH, "trace_columns": Rule("columns"),
    "rate": RATE, "prompt_tokens": I("tokens"), "output_tokens": I("tokens"), "length_dist": TEXT,
    "length_sigma": SIGMA, "requests": I("requests"), "seed": SEED, "tp": L("gpus"), "pp": L("gpus"),
    "schedulers": TEXT, "precisions": TEXT, "token_budgets": L("tokens"), "max_batches": L("batch"),
    "screen_requests": I("requests"), "refine": I("rows"), "profile": PATH, "emit": TEXT, **_RUN, "models": PATH,
    "ep": TEXT,  # `auto` or EP degrees, each 1 .. cap `replicas` (search.space.parse_serve_ep)
}

INSPECT: dict[str, Rule] = {"model": TEXT, "gpu": TEXT, "tp": I("gpus"), "pp": I("gpus"), "ep": I("gpus"),
                            "weights": TEXT, "kv_dtype": TEXT, "context": I("tokens", lo=0), **OUTPUTS}
CATALOG: dict[str, Rule] = dict(OUTPUTS)
VALIDATE: dict[str, Rule] = {"file": Rule("file"), "kind": TEXT, "extra": Rule("files"), "markdown": OUT,
                             "error_table": OUT, "workers": I("workers"), "profile": PATH, "cv": I(hi=MAX_CV_FOLDS, lo=2),
                             "cv_factors": TEXT, **OUTPUTS}
#: most node groups in a config file's `node_groups:` (a mixed cluster has a few GPU types)
MAX_NODE_GROUPS = 64
#: `parasim report`: at most this many results side by side (a wider table is no longer read across)
MAX_COMPARED = 16
REPORT: dict[str, Rule] = {"results": Rule("files"), "out": OUT}
CALIBRATE: dict[str, Rule] = {"files": Rule("files"), "out": OUT, "factors": TEXT, "scope": TEXT,
                              "refine_steps": I(lo=0, hi=MAX_REFINE), "kind": TEXT, "workers": I("workers"), "json": BOOL}

#: command path -> its table (tests/test_hostile_cli.py checks every parameter has a rule)
TABLES: dict[str, dict[str, Rule]] = {"serve": SERVE, "train": TRAIN, "plan train": PLAN_TRAIN,
                                      "plan serve": PLAN_SERVE, "inspect": INSPECT, "models": CATALOG,
                                      "gpus": CATALOG, "validate": VALIDATE, "calibrate": CALIBRATE,
                                      "report": REPORT}


# --- checking --------------------------------------------------------------------------------------
def check(table: dict[str, Rule], values: dict[str, Any], *, where: str = "",
          names: dict[str, str] | None = None, dashes: bool = True) -> dict[str, Any]:
    """`values` with each non-None one checked against its rule (and normalised: lists parsed,
    floats as float). A table's keys are the long flags with underscores (a config file's keys);
    `names` maps a Python parameter name that differs to its flag (JSON_NAMES). The error names the
    flag (with dashes, or underscores as `serve` names its options and keys), or `where` + the key
    for a config file (where="file.yaml:")."""
    out = dict(values)
    for key, value in values.items():
        if value is None:
            continue
        name = (names or {}).get(key, key)
        field = f"{where}{key}" if where else name.replace("_", "-") if dashes else name
        rule = table.get(name)
        if rule is None:
            raise InputError(field, f"unknown option; allowed: {', '.join(sorted(table))}")
        out[key] = value_of(rule, field, value)
    return out


def value_of(rule: Rule, field: str, value: Any) -> Any:
    """One value checked against `rule`."""
    kind = rule.kind
    if kind == "int":
        if rule.cap:
            return edge.capped_int(field, value, rule.cap, lo=int(rule.lo or 0))
        return edge.number(field, value, integer=True, lo=rule.lo, hi=rule.hi)
    if kind == "float":
        return edge.finite_float(field, value, lo=rule.lo, hi=rule.hi, lo_open=rule.lo_open)
    if kind == "bool":
        return edge.boolean(field, value)
    if kind == "version":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise InputError(field, f"must be quoted text such as '9.18', got the number {value!r}: as a number "
                                    "9.20 reads as 9.2")
        return text(field, value)
    if kind in ("text", "columns"):
        if kind == "columns" and isinstance(value, dict):  # a config file may map the columns
            return {k: text(f"{field}.{k}", v) for k, v in value.items()}
        return text(field, value)
    if kind == "texts":
        return [text(field, v) for v in _seq(field, value)]
    if kind in ("path", "out"):
        return path(field, value)
    if kind == "file":
        return existing_file(field, value)
    if kind == "files":
        return [existing_file(field, v) for v in _seq(field, value)]
    if kind == "ints":
        if isinstance(value, (list, tuple)) and value:  # a YAML list of whole numbers, as the comma list
            value = ",".join(str(v) for v in value)
        elif isinstance(value, int) and not isinstance(value, bool):  # `tp: 4` in a config: a list of one
            value = str(value)
        elif not isinstance(value, str):  # a mapping, a number: say both forms the option takes
            raise InputError(field, f"must be a comma list (1,2,4) or a YAML list of whole numbers, got {value!r}")
        return int_list(text(field, value), field, cap=rule.cap or "gpus")
    if kind == "gpu_counts":
        return gpu_counts([text(field, v) for v in _seq(field, value)], field)
    if kind == "pairs":
        return key_values(text(field, value), field)
    if kind == "sweep":
        return sweep_rate(field, value)
    if kind == "node_groups":  # each group's keys are checked by specs.mixed when it is built
        if not isinstance(value, list) or not value or len(value) > MAX_NODE_GROUPS \
                or not all(isinstance(g, dict) for g in value):
            raise InputError(field, f"must be a list of 1 .. {MAX_NODE_GROUPS} mappings (gpu, gpus, gpus_per_node, "
                                    "scale_up_domain, inter_node_gbps)")
        return value
    raise AssertionError(f"rule kind {kind!r}")  # pragma: no cover - a table typo


def text(field: str, value: Any) -> str:
    """Non-empty text of at most MAX_TEXT_CHARS without control characters."""
    s = edge.text_value(field, value)
    if len(s) > MAX_TEXT_CHARS:
        raise InputError(field, f"is {len(s):,} characters long; at most {MAX_TEXT_CHARS:,} are read")
    bad = next((c for c in s if ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000), None)
    if bad is not None:
        raise InputError(field, f"holds the control character {bad!r}; give plain text")
    return s


def path(field: str, value: Any) -> str:
    """A file path as text (existence is the reader's to check: edge.read_text names it)."""
    return text(field, str(value) if isinstance(value, Path) else value)


def existing_file(field: str, value: Any) -> str:
    """A path that names a file now (for readers that do not name the option themselves)."""
    p = Path(path(field, value))
    if not p.is_file():
        raise InputError(field, f"{'a directory, not a file' if p.is_dir() else 'no such file'}: {p}")
    return str(p)


def _seq(field: str, value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if not value:
            raise InputError(field, "must not be empty")
        return list(value)
    return [value]


def sweep_rate(field: str, value: Any) -> tuple[float, float, int]:
    """`LO:HI:N` -> (lo, hi, n): 0 < LO < HI <= 10^9 requests/s, 2 <= N <= MAX_SWEEP_POINTS."""
    if not isinstance(value, str):  # YAML reads an unquoted 1:10:5 as the base-60 integer 4205
        raise InputError(field, f"expected LO:HI:N as text (quote it in YAML: \"1:10:5\"), got {value!r}")
    parts = [s.strip() for s in text(field, value).split(":")]
    if len(parts) != 3 or not all(parts):
        raise InputError(field, f"expected LO:HI:N (requests/s from LO to HI, N rates), got {value!r}")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise InputError(field, f"LO and HI must be numbers (requests/s), got {value!r}") from None
    lo = edge.finite_float(f"{field} LO", lo, lo=RATE.lo, hi=RATE.hi, lo_open=True)
    hi = edge.finite_float(f"{field} HI", hi, lo=RATE.lo, hi=RATE.hi, lo_open=True)
    if not lo < hi:
        raise InputError(field, f"LO must be below HI, got {value!r}")
    if not (parts[2].isascii() and parts[2].isdigit()):
        raise InputError(field, f"N must be a whole number of rates, got {value!r}")
    n = edge.number(f"{field} N", int(parts[2]), integer=True, lo=2, hi=MAX_SWEEP_POINTS)
    return float(lo), float(hi), int(n)


# --- comma lists ------------------------------------------------------------------------------------
def int_list(value: str | None, field: str, *, cap: str = "gpus") -> tuple[int, ...]:
    """`8`, `1,2,4` -> a tuple of positive integers, each at most cap(`cap`)."""
    if not value:
        return ()
    out = []
    for part in value.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()) or int(part) < 1:
            raise InputError(field, f"expected positive whole numbers separated by commas, got {value!r}")
        out.append(edge.capped_int(field, int(part), cap))
    return tuple(out)


def gpu_counts(values: list[str], field: str = "gpus") -> tuple[int, ...]:
    """`16384`, `8192,16384`, or a doubling range `1024-16384` (each count at most the GPU cap)."""
    out: list[int] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if "-" in part:
                lo_s, _, hi_s = part.partition("-")
                if not lo_s.strip() or not hi_s.strip():
                    raise InputError(field, f"a range is LOW-HIGH, like 1024-16384; got {part!r}")
                lo, hi = int_list(lo_s, field)[0], int_list(hi_s, field)[0]
                if lo > hi:
                    raise InputError(field, f"range {part!r} is empty")
                v = lo
                while v <= hi:
                    out.append(v)
                    v *= 2
            else:
                out.extend(int_list(part, field))
    if not out:
        raise InputError(field, "give a GPU count, a list or a range like 1024-16384")
    return tuple(sorted(set(out)))


def key_values(spec: str | None, field: str) -> dict[str, Any] | None:
    """`tp=8,pp=16,recompute=none` -> mapping (ints where they parse); the values are checked by
    whoever reads them (search.train_reference)."""
    if not spec:
        return None
    out: dict[str, Any] = {}
    for part in spec.split(","):
        k, eq, v = (s.strip() for s in part.partition("="))
        if not eq or not k or not v:
            raise InputError(field, f"expected key=value pairs separated by commas, got {part!r}")
        out[k.replace("-", "_")] = int(v) if v.isascii() and v.isdigit() else {"true": True, "false": False}.get(v.lower(), v)
    return out
