"""Training plan spaces: which degrees and knobs are tried, and the divisibility rules.

The raw space is the product of the choice lists in `TrainChoices`; `enumerate_train` walks it
outer to inner (tp, cp, pp, ep, micro-batch, schedule/virtual stages, zero, recompute) and drops
a whole sub-tree as soon as one rule fails, counting every combination it drops (see prune.py).
What survives is a list of plan mappings (TrainingPlan fields) that the validator accepts and
whose model state fits in HBM. The activation check needs the schedule walk and happens next,
in `plan_train`, still before any step is simulated.

Defaults, and why:
  tp             powers of two up to the scale-up domain (TP across NICs is never competitive)
  cp             powers of two while seq_len/cp >= 2048 (shorter shards starve the ring overlap)
  pp             every divisor of the GPU count up to the layer count
  micro_batch    1, 2, 4, 8
  virtual stages 1 (1F1B), and 2, 3, 4, 6, 8 (interleaved 1F1B; pp*v need not divide the layers,
                 chunks are split unevenly as in cost/partition.py)
  schedules      1f1b, interleaved, and the zero-bubble zb-h1, zb-h2, zb-v (v = 2) and dualpipe
                 (v = 2, even pp, at least 2*pp micro-batches); gpipe on request
  zero           1, 2, 3 (0 is 1 with more memory and the same traffic; ask for it with --zero)
  recompute      none, selective, full
  ep, etp        MoE only: ep every divisor of the experts; etp = tp (Megatron-Core's default) or 1
                 (whole experts); ep*etp must divide tp*cp*dp (MoE parallel folding)
  sequence parallel: on whenever tp > 1 (same traffic as plain TP, less activation memory)
  global batch   per plan, see train_batch.py: exact with --global-batch, else the multiple of the
                 plan's granule nearest the token budget, within the tolerance
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from math import prod

from parasim.cost.memory import stage_state_bytes, te_fp8_weight_bytes
from parasim.errors import InputError
from parasim.search.prune import Pruned
from parasim.search.train_batch import BatchTarget
from parasim.specs import edge
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec
from parasim.training.plan import grad_bytes_of
from parasim.training.schedules import SCHEDULES, get_schedule

RESERVED_BYTES_LOWER_BOUND = 0.0  # the model-state check is a lower bound: no workspace assumed
#: an etp choice meaning "the plan's tp" (Megatron-Core's default expert tensor parallelism)
ETP_AS_TP = 0


def parse_etp(text: str | None) -> tuple[int, ...]:
    """`plan train --etp`: a comma list of expert TP degrees, `tp` meaning the plan's own TP
    (Megatron-Core's default), e.g. `tp,1`. Empty: the default choices."""
    if not text:
        return ()
    out: list[int] = []
    for item in (t.strip().lower() for t in text.split(",")):
        if item == "tp":
            out.append(ETP_AS_TP)
        elif item.isdigit() and 1 <= int(item) <= edge.CAPS["gpus"]:
            out.append(int(item))
        else:
            raise InputError("etp", f"expected expert TP degrees (positive integers) or `tp` (the plan's TP), "
                                    f"separated by commas, e.g. tp,1; got {text!r}")
    return tuple(dict.fromkeys(out))


def powers_of_two(limit: int) -> list[int]:
    out, v = [], 1
    while v <= limit:
        out.append(v)
        v *= 2
    return out


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


@dataclass(frozen=True, kw_only=True)
class TrainChoices:
    """The raw space for one (GPU type, GPU count); tuples so it hashes and pickles."""

    tp: tuple[int, ...]
    cp: tuple[int, ...]
    pp: tuple[int, ...]
    ep: tuple[int, ...]
    etp: tuple[int, ...] = (ETP_AS_TP,)  # MoE: expert TP choices, ETP_AS_TP = the plan's tp
    micro_batch: tuple[int, ...] = (1, 2, 4, 8)
    virtual_stages: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    zero: tuple[int, ...] = (1, 2, 3)
    recompute: tuple[str, ...] = ("none", "selective", "full")
    precision: tuple[str, ...] = ("bf16",)
    schedules: tuple[str, ...] = ("1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "dualpipe")  # gpipe on request

    @property
    def size(self) -> int:
        return prod(len(getattr(self, f)) for f in ("tp", "cp", "pp", "ep", "etp", "micro_batch", "zero", "recompute",
                                                   "precision")) * self._sched_count

    @property
    def _sched_count(self) -> int:
        return len(self.sched_pairs())

    def sched_pairs(self) -> list[tuple[str, int]]:
        """(schedule, v) pairs: each schedule without model chunks (1f1b, gpipe, zb-h1, zb-h2) with
        v = 1, then each chunked one (interleaved) with each v > 1; one that runs a fixed number of
        chunks (zb-v, dualpipe: 2) only with that one."""
        rules = {s: SCHEDULES.get(s, field="schedules") for s in self.schedules}
        pairs = [(s, 1) for s in self.schedules if not rules[s].chunked] if 1 in self.virtual_stages else []
        return pairs + [(s, v) for s in self.schedules if rules[s].chunked for v in self.virtual_stages
                        if v > 1 and rules[s].chunks in (None, v)]


def default_train_choices(model: ModelSpec, cluster: ClusterSpec, seq_len: int, **overrides) -> TrainChoices:
    n = cluster.gpus
    tp = tuple(t for t in powers_of_two(min(cluster.domain, n)))
    cp = tuple(c for c in powers_of_two(n) if seq_len // c >= 2048 or c == 1)
    pp = tuple(d for d in divisors(n) if d <= model.layers)
    ep = tuple(e for e in divisors(model.experts) if e <= n) if model.is_moe else (1,)
    etp = (ETP_AS_TP, 1) if model.is_moe else (ETP_AS_TP,)
    kw = {k: tuple(v) for k, v in overrides.items() if v}
    if not model.is_moe and any(e != ETP_AS_TP for e in kw.get("etp", ())):
        raise InputError("etp", f"{model.name} is a dense model: expert tensor parallelism applies to MoE models only")
    return TrainChoices(**{"tp": tp, "cp": cp, "pp": pp, "ep": ep, "etp": etp, **kw})


def _tp_ok(model: ModelSpec, tp: int) -> bool:
    if model.heads % tp:
        return False
    return not (tp > model.kv_heads and tp % model.kv_heads)


def enumerate_train(model: ModelSpec, cluster: ClusterSpec, *, batch: BatchTarget, seq_len: int,
                    choices: TrainChoices, pruned: Pruned, stack: dict | None = None) -> Iterator[dict]:
    """Yield plan mappings that pass divisibility and the model-state memory bound.

    `stack`: the plan fields the user's stack holds fixed (`plan train --param-state` ...); its
    parameter state and gradient dtype size the model state, as `parasim train` sizes it.

    Each plan's `global_batch` is `batch.pick(granule)`: the exact --global-batch, or the batch
    nearest the token budget that the plan can split (granule dp*micro_batch; interleaved
    dp*micro_batch*pp). A multiple of dp*mb*pp is a multiple of dp*mb, so when no plain batch is
    within the tolerance no interleaved one is either, and the whole micro-batch sub-tree goes.
    """
    c = choices
    pairs = [(sched, v, get_schedule(sched)) for sched, v in c.sched_pairs()]
    below_pp = (len(c.ep) * len(c.etp) * len(c.micro_batch) * len(pairs) * len(c.zero) * len(c.recompute)
                * len(c.precision))
    for tp, cp, pp, dp in _train_degrees(model, cluster.gpus, seq_len, c, below_pp, pruned):
        for ep, etp, mb, sched, v, global_batch in _train_splits(model, batch, c, pairs, (tp, pp, dp, cp), below_pp,
                                                                 pruned):
            layout = get_schedule(sched).layout
            for zero, prec in _train_states(model, cluster.accelerator.hbm_bytes, c, (tp, pp, ep, v, dp * cp, etp),
                                            pruned, layout, stack or {}, cluster.accelerator.generation):
                for rc in c.recompute:
                    yield {"tp": tp, "pp": pp, "dp": dp, "cp": cp, "ep": ep, "etp": etp if model.is_moe else None,
                           "virtual_stages": v, "sequence_parallel": tp > 1,
                           "micro_batch": mb, "global_batch": global_batch,
                           "seq_len": seq_len, "recompute": rc, "zero": zero,
                           "precision": prec, "schedule": sched}


def _train_degrees(model: ModelSpec, n: int, seq_len: int, c: TrainChoices, below_pp: int,
                   pruned: Pruned) -> Iterator[tuple[int, int, int, int]]:
    """(tp, cp, pp, dp) that divide the heads, the sequence and the GPU count; each rule that
    fails drops every combination below it (`below_pp` per pp)."""
    for tp in c.tp:
        if not _tp_ok(model, tp):
            pruned.drop("tp_heads", len(c.cp) * len(c.pp) * below_pp)
            continue
        for cp in c.cp:
            if seq_len % cp or (cp > 1 and (seq_len // cp) % 2):
                pruned.drop("cp_seq_len", len(c.pp) * below_pp)
                continue
            for pp in c.pp:
                if n % (tp * cp * pp):
                    pruned.drop("gpus_divisibility", below_pp)
                    continue
                yield tp, cp, pp, n // (tp * cp * pp)


def _train_splits(model: ModelSpec, batch: BatchTarget, c: TrainChoices, pairs: list, degrees: tuple[int, int, int],
                  below_pp: int, pruned: Pruned) -> Iterator[tuple]:
    """(ep, etp, micro_batch, schedule, virtual_stages, global_batch) for one (tp, pp, dp, cp):
    experts that divide and fold over tp*cp*dp, a global batch the split can take, a schedule the
    layers and pipeline allow."""
    tp, pp, dp, cp = degrees
    below_ep = below_pp // len(c.ep)
    below_etp = below_ep // len(c.etp)
    below_mb = below_etp // len(c.micro_batch)
    below_sched = below_mb // len(pairs) if pairs else 0
    for ep, etp in _expert_layouts(model, c, tp, tp * cp * dp, below_etp, pruned):
        for mb in c.micro_batch:
            plain_gb = batch.pick(dp * mb)
            if plain_gb is None:
                pruned.drop("batch_divisibility", below_mb)
                continue
            for sched, v, rules in pairs:  # chunks may be uneven: only one layer each is needed
                if not rules.accepts_pp(pp) or pp * v > model.layers:
                    pruned.drop("interleave_layers", below_sched)
                    continue
                global_batch = plain_gb
                multiple = rules.microbatch_multiple(pp)  # interleaved: micro-batches in groups of pp
                if multiple > 1:
                    global_batch = batch.pick(dp * mb * multiple)
                if global_batch is None or global_batch // (dp * mb) < rules.min_microbatches(pp):
                    pruned.drop("interleave_microbatches", below_sched)
                    continue
                yield ep, etp, mb, sched, v, global_batch


def _expert_layouts(model: ModelSpec, c: TrainChoices, tp: int, folded: int, below_etp: int,
                    pruned: Pruned) -> Iterator[tuple[int, int]]:
    """(ep, etp): ep divides the experts, ep*etp the tp*cp*dp GPUs of a stage (`folded`), etp the
    expert FFN width; an etp equal to an earlier choice (etp = tp = 1) is dropped as a duplicate."""
    for ep in c.ep:
        if (ep > 1 and not model.is_moe) or (model.is_moe and model.experts % ep):
            pruned.drop("ep_divisibility", below_etp * len(c.etp))
            continue
        seen: set[int] = set()
        for choice in c.etp:
            etp = tp if choice == ETP_AS_TP else choice
            if etp in seen or (not model.is_moe and choice != ETP_AS_TP):
                pruned.drop("etp_duplicate", below_etp)
                continue
            seen.add(etp)
            if folded % (ep * etp) or (model.is_moe and model.moe_ffn_hidden % etp):
                pruned.drop("ep_divisibility", below_etp)
                continue
            yield ep, etp


def _train_states(model: ModelSpec, hbm: float, c: TrainChoices, shape: tuple[int, int, int, int, int],
                  pruned: Pruned, layout: str = "loop", stack: dict | None = None,
                  generation: str = "") -> Iterator[tuple[int, str]]:
    """(zero, precision) whose model state (weights, gradients, optimizer) leaves room in HBM;
    `shape` is (tp, pp, ep, virtual_stages, dp*cp, etp), `layout` the schedule's chunk placement,
    `stack` the fixed fields that size the state (param_state, grad_dtype, kernels and the FP8
    weight fields), `generation` the GPU's architecture (Transformer Engine's FP8 weight copies)."""
    tp, pp, ep, v, dp_cp, etp = shape
    st = stack or {}
    state_kind = st.get("param_state", "megatron")
    for zero in c.zero:
        for prec in c.precision:
            grad_bytes = grad_bytes_of(prec, st.get("grad_dtype"))
            fp8_weight = te_fp8_weight_bytes(prec, st.get("kernels", "fused"), st.get("fp8_recipe", "delayed"),
                                             st.get("fp8_param_gather", False), generation)
            state = _max_stage_state(model, tp, pp, ep, v, dp_cp, zero, grad_bytes, etp, layout, state_kind,
                                     fp8_weight)
            if state + RESERVED_BYTES_LOWER_BOUND > hbm:
                pruned.drop("memory_model_state", len(c.recompute))
                continue
            yield zero, prec


@lru_cache(maxsize=65536)
def _max_stage_state(model: ModelSpec, tp: int, pp: int, ep: int, v: int, dp_cp: int, zero: int,
                     grad_bytes: float, etp: int | None = None, layout: str = "loop",
                     param_state: str = "megatron", linear_weight_bytes: float | None = None) -> float:
    """The most-loaded pipeline rank's model state bytes (`cost.memory.stage_state_bytes`)."""
    return max(stage_state_bytes(model, tp=tp, pp=pp, ep=ep, dp_cp=dp_cp, zero=zero, stage=r, virtual_stages=v,
                                 grad_bytes=grad_bytes, etp=etp, layout=layout, param_state=param_state,
                                 linear_weight_bytes=linear_weight_bytes).total
               for r in range(pp))


# --- serving ---------------------------------------------------------------------------------------
# (weights, kv_dtype) pairs: by default only the model's own precision (its checkpoint's weights,
# a KV cache in its dtype). Quantizing weights or the KV cache changes the model's outputs, which a
# throughput search must not decide for the user: other pairs only when --precisions lists them.
SERVE_PRECISIONS: tuple[tuple[str, str | None], ...] = ()  # empty = the model's own


def serve_precisions(model: ModelSpec, given: tuple[tuple[str, str | None], ...]) -> tuple[tuple, str]:
    """The (weights, kv) pairs to search, each KV dtype filled in (none given = the model's
    dtype), and why these: for the result's `precisions` block."""
    own = (model.native_weights, model.serving_dtype)
    if not given:
        return (own,), (f"the model's own precision only ({model.precision_origin()}); quantized weights or "
                        "KV cache change the model's outputs, so other formats are searched only when "
                        "--precisions lists them")
    pairs = tuple(dict.fromkeys((w, kv or model.serving_dtype) for w, kv in given))
    return pairs, (f"--precisions (the model's own is {own[0]}/{own[1]}: {model.precision_origin()}; "
                   "a KV dtype not given is the model's)")
SERVE_SCHEDULERS = ("sarathi", "vllm", "continuous", "splitfuse", "disagg")
CHUNKED_BUDGETS = (256, 512, 1024, 2048)  # token budgets tried for chunked-prefill schedulers
MAX_BATCHES = (64, 128, 256)


def serve_layouts(model: ModelSpec, cluster: ClusterSpec, *, max_gpus: int, tps: tuple[int, ...],
                  pps: tuple[int, ...], precisions: tuple, pruned: Pruned, disagg: tuple[str, ...],
                  eps: tuple[int, ...] = (1,), one_ep_group: bool = False) -> Iterator[dict]:
    """(tp, pp, replicas, weights, kv) layouts within the GPU budget, plus disaggregated splits,
    plus expert-parallel ones (`serve_ep_layouts`).

    TP stays inside the scale-up domain and must divide the heads; PP must not exceed the layers.
    Disaggregated layouts: a prefill pool of prefill_tp x prefill_pp-GPU instances and a decode pool
    of decode_tp x decode_pp-GPU instances (each phase's TP and PP chosen independently, as
    DistServe does), every split of the budget, for each scheduler in `disagg`. Without 1 in `eps`
    (`--ep 8`) only the expert-parallel layouts, as `--tp 8` tries TP 8 alone.
    """
    gpu = cluster.accelerator.id
    if 1 in eps:
        yield from _plain_layouts(model, cluster, max_gpus=max_gpus, tps=tps, pps=pps, precisions=precisions,
                                  pruned=pruned, disagg=disagg)
    yield from serve_ep_layouts(gpu, max_gpus=max_gpus, eps=eps, precisions=precisions, one_group=one_ep_group)


def _plain_layouts(model: ModelSpec, cluster: ClusterSpec, *, max_gpus: int, tps: tuple[int, ...],
                   pps: tuple[int, ...], precisions: tuple, pruned: Pruned, disagg: tuple[str, ...]) -> Iterator[dict]:
    """`serve_layouts`' replica and disaggregated layouts (no expert parallelism)."""
    gpu = cluster.accelerator.id
    for tp in tps:
        for pp in pps:
            n_rep = max_gpus // (tp * pp) if tp * pp <= max_gpus else 0
            if tp > cluster.domain or not _tp_ok(model, tp) or pp > model.layers:
                pruned.drop("tp_pp_layout", max(n_rep, 1) * len(precisions))
                continue
            if n_rep == 0:
                pruned.drop("gpu_budget", len(precisions))
                continue
            for w, kv in precisions:
                for r in range(1, n_rep + 1):
                    yield {"gpu": gpu, "tp": tp, "pp": pp, "replicas": r, "weights": w, "kv_dtype": kv}
    for sched, ptp, dtp, ppp, dpp in product(disagg, tps, tps, pps, pps):
        if ptp > cluster.domain or dtp > cluster.domain or not (_tp_ok(model, ptp) and _tp_ok(model, dtp)):
            continue
        if max(ppp, dpp) > model.layers:
            continue
        pw, dw = ptp * ppp, dtp * dpp  # GPUs of one prefill / decode instance
        for pg in range(pw, max_gpus, pw):
            for dg in range(dw, max_gpus - pg + 1, dw):
                for w, kv in precisions:
                    yield {"gpu": gpu, "tp": ptp, "pp": 1, "replicas": 1, "weights": w, "kv_dtype": kv,
                           "scheduler": sched, "prefill_gpus": pg, "prefill_tp": ptp, "decode_gpus": dg,
                           "decode_tp": dtp, "prefill_pp": ppp, "decode_pp": dpp}


def serve_ep_layouts(gpu: str, *, max_gpus: int, eps: tuple[int, ...], precisions: tuple,
                     one_group: bool = False) -> Iterator[dict]:
    """Attention-DP + EP layouts (`ServingPlan.ep`): `replicas` one-GPU ranks in EP groups of `ep`,
    as `parasim serve --tp 1 --replicas R --ep E` runs them (serve requires tp = pp = 1 and ep
    dividing the replicas). `one_group`: only R = E, one engine process whose data-parallel
    ranks are its EP group (what `--emit`'s launch commands express: vLLM's EP size is its
    `--data-parallel-size` x TP, SGLang's and TensorRT-LLM's `--ep-size` the process's ranks)."""
    for ep in (e for e in eps if e > 1):
        for w, kv in precisions:
            for r in ((ep,) if one_group else range(ep, max_gpus + 1, ep)):
                yield {"gpu": gpu, "tp": 1, "pp": 1, "replicas": r, "ep": ep, "weights": w, "kv_dtype": kv}


def parse_serve_ep(text: str | None) -> tuple[int, ...]:
    """`plan serve --ep`: `auto` (empty: the default), or a comma list of EP degrees (1 = none)."""
    if text is None or text.strip().lower() == "auto":
        return ()
    out: list[int] = []
    for item in (t.strip() for t in text.split(",")):
        if not (item.isascii() and item.isdigit()) or int(item) < 1:
            raise InputError("ep", f"expected `auto` or EP degrees (positive whole numbers; 1 = no expert "
                                   f"parallelism) separated by commas, e.g. 1,8; got {text!r}")
        out.append(edge.capped_int("ep", int(item), "replicas"))
    return tuple(sorted(set(out)))


def serve_eps(model: ModelSpec, given: tuple[int, ...], *, max_gpus: int, tps: tuple[int, ...],
              pps: tuple[int, ...], colocated: bool) -> tuple[tuple[int, ...], str]:
    """The EP degrees `plan serve` searches, and why: for the result's `expert_parallel` block.

    Auto (`given` empty): 1 for a dense model; for a MoE model 1 and every divisor of the routed
    experts from 2 to `--max-gpus` (each GPU then holds whole experts, as the engines place them),
    when the space has the one-GPU, one-stage colocated ranks EP runs on (tp 1, pp 1, a
    non-disaggregated scheduler). A degree given that cannot run is an input error naming `ep`."""
    why_not = ("--tp has no 1" if 1 not in tps else "--pp has no 1" if 1 not in pps
               else "--schedulers has only disaggregated ones" if not colocated else None)
    if not given:
        if not model.is_moe:
            return (1,), f"{model.name} is dense: no expert parallelism"
        if why_not:
            return (1,), f"expert parallelism runs on one-GPU attention-DP ranks (tp 1, pp 1, colocated); {why_not}"
        eps = tuple(e for e in range(1, min(model.experts, max_gpus) + 1) if model.experts % e == 0)
        return eps, (f"auto: 1 and the divisors of {model.name}'s {model.experts} routed experts up to "
                     f"--max-gpus, each over one-GPU attention-DP ranks (tp 1, pp 1)")
    wide = [e for e in given if e > 1]
    if wide and not model.is_moe:
        raise InputError("ep", f"{model.name} is a dense model: expert parallelism applies to MoE models only "
                               f"(give --ep 1 or leave it at auto)")
    for e in wide:
        if model.experts % e:
            raise InputError("ep", f"ep={e} does not divide {model.name}'s {model.experts} routed experts; "
                                   f"allowed: {', '.join(str(d) for d in range(2, model.experts + 1) if model.experts % d == 0)}")
        if e > max_gpus:
            raise InputError("ep", f"ep={e} needs {e} GPUs; --max-gpus is {max_gpus}")
    if wide and why_not:
        raise InputError("ep", f"ep > 1 runs on one-GPU attention-DP ranks (tp 1, pp 1, a colocated scheduler), "
                               f"as `parasim serve --ep` does; {why_not}")
    return given, "--ep"
