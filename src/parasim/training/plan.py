"""A training plan: how one optimizer step is laid out on the cluster.

Degrees follow Megatron's rank order (tp fastest, then cp, dp, pp). The experts of an MoE model
are laid out on their own (Megatron-Core's MoE parallel folding): ep x etp expert ranks folded
over the tp*cp*dp GPUs of a pipeline stage, etp fastest. One validator (`TrainingPlan.check`) checks every degree and names all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from parasim.cost.attn_shape import parse_cudnn_version
from parasim.cost.dtypes import TRAINING_PRECISIONS
from parasim.cost.fsdp_copies import FSDP_LAYOUTS
from parasim.cost.param_state import PARAM_STATES
from parasim.cost.ring_merge import CP_RINGS
from parasim.cost.layer import Sharding, check_sharding
from parasim.cost.memory import CROSS_ENTROPY_IMPLS, FP8_RECIPES, RECOMPUTE
from parasim.cost.moe_a2a import A2A_KINDS
from parasim.cost.routing import ROUTING_LAYOUTS
from parasim.cost.moe_host import GRAPH_SCOPES, scope_set
from parasim.cost.moe_memory import RECOMPUTE_MODULES
from parasim.cost.nongemm import KERNEL_MODES
from parasim.errors import InputError
from parasim.specs import edge, model_limits
from parasim.specs.model import ModelSpec

#: Most micro-batches per pipeline per step (the step simulator runs every one, ~50 us each at
#: pp=8); real steps have tens to a few thousand. PARASIM_MAX_MICRO_BATCHES raises it.
MAX_MICRO_BATCHES = 100_000
ATTENTION_KERNELS = ("flash", "flash2", "triton", "unfused")
GRAD_DTYPES = ("fp32", "bf16")


def grad_bytes_of(precision: str, grad_dtype: str | None) -> float:
    """Bytes per main-gradient element: 16-bit with fp16 training or a bf16 gradient buffer, else
    fp32 (TrainingPlan.grad_bytes; the planner's memory screens size candidates with it too)."""
    return 2.0 if precision == "fp16" or grad_dtype == "bf16" else 4.0


@dataclass(frozen=True, kw_only=True)
class TrainingPlan:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1
    ep: int = 1
    virtual_stages: int = 1  # model chunks per pipeline rank (interleaved 1F1B)
    sequence_parallel: bool = False
    micro_batch: int = 1  # sequences per micro-batch
    global_batch: int = 1  # sequences per optimizer step
    seq_len: int = 2048
    recompute: str = "none"  # none | selective | full | selective_op | dots (cost.memory.RECOMPUTE)
    zero: int = 1  # 0 | 1 (distributed optimizer) | 2 | 3 (FSDP full shard)
    precision: str = "bf16"  # bf16 | fp16 | fp8 (Transformer Engine: GEMMs in fp8)
    overlap_grad_reduce: bool = True
    overlap_param_gather: bool = True
    tp_comm_overlap: bool = False
    # pipeline sends/receives run beside compute (Megatron-Core `overlap_p2p_comm`, NeMo recipes,
    # torchtitan); False = blocking exchanges that hold the rank until the transfer is done
    # (Megatron-LM 2021: batch_isend_irecv, wait, then torch.cuda.synchronize)
    overlap_p2p_comm: bool = True
    schedule: str = "1f1b"  # a registered name (training/schedules.py); 1f1b with virtual_stages > 1 = interleaved
    attention: str = "flash"  # flash (best fused kernel, catalog) | flash2 (FA2-generation) | triton (2022-23 Triton FA) | unfused
    seq_len_dist: str | None = None  # document lengths: a length or histogram file, or a named law (length_dist.py)
    varlen_balance: str = "static"  # how variable-length documents are spread over dp*cp ranks (varlen_balance.py)
    # dtype of the gradient buffers and their DP reduction: fp32 (Megatron's default with bf16/fp8)
    # or bf16 (NeMo's `optim.grad_sync_dtype=bf16`); fp16 runs always keep fp16 gradients
    grad_dtype: str = "fp32"
    # who wrote the non-GEMM kernels (cost/nongemm.py): fused (Megatron-Core / Transformer Engine),
    # eager (PyTorch eager: torchtitan, llm-foundry without torch.compile) or compiled (torch.compile)
    kernels: str = "fused"
    # ZeRO-3 parameter layout (cost/fsdp_copies.py): flat buffers (FSDP1, DeepSpeed ZeRO-3) or
    # per_param shards (FSDP2 `fully_shard`: copy-out after each all-gather, chunk-cat before each
    # reduce-scatter, on the compute stream)
    fsdp_layout: str = "flat"
    # ZeRO-3 hybrid sharding (PyTorch FSDP HYBRID_SHARD / FSDP2 HSDP, MaxText ici_fsdp x dcn_data): the
    # weights, gradients and optimizer state are sharded over groups of this many data-parallel ranks
    # (adjacent ranks: a node when it is gpus_per_node / (tp*cp)) and replicated across the groups, whose
    # gradient shards are all-reduced after the backward; None = one group of all dp*cp ranks (full shard)
    fsdp_shard: int | None = None
    # context parallelism's ring (cost/ring_merge.py): te (Transformer Engine, Megatron-Core) or
    # pytorch (torch.distributed context_parallel: fp32 merges and accumulations as separate ops)
    cp_ring: str = "te"
    # how the stack stores each parameter's state (cost/param_state.py): megatron (16-bit weights +
    # fp32 master and Adam moments, 18 B), fp32_params (PyTorch FSDP / autocast: the fp32 parameter is
    # the master, 16 B, plus the 16-bit copies it gathers), bf16_params (no fp32 copy, 8 B) or
    # bf16_optimizer (Megatron's 16-bit weights and gradients, the optimizer's state in bf16: 2 + grad + 6 B)
    param_state: str = "megatron"
    # FP8 under Transformer Engine (precision fp8, kernels fused; cost.memory.te_fp8_weight_bytes):
    # the recipe (delayed | tensorwise: per-tensor scales; mxfp8: 32-element blocks) and whether the
    # parameters themselves are FP8 (Megatron-Core --fp8-param-gather; off by default, so TE keeps an
    # FP8 copy of each weight beside the 16-bit one). Stated for another precision or stack: an input error.
    fp8_recipe: str = "delayed"
    fp8_param_gather: bool = False
    # the loss kernel's kept logits (cost.memory.CROSS_ENTROPY_IMPLS): fp32 (Megatron-Core's
    # vocab-parallel cross entropy: an fp32 softmax per vocabulary entry) | te (Transformer Engine's
    # in-place cross entropy, Megatron-Bridge's performance recipes: the 16-bit logits; kernels fused)
    cross_entropy: str = "fp32"
    # --- MoE (docs/training.md "MoE training"); ignored by dense models --------------------------------
    etp: int | None = None  # expert tensor parallel; None = tp (Megatron-Core's default)
    moe_imbalance: float = 1.0  # busiest expert's load / the mean; 1 = routing's sampling noise only
    moe_capacity_factor: float | None = None  # tokens beyond c x the mean expert load dropped; None = dropless
    moe_a2a: str = "alltoall"  # dispatch/combine kernels: alltoall (NCCL) | deepep
    moe_a2a_overlap: bool = False  # Megatron-Core --overlap-moe-expert-parallel-comm
    # which experts a token takes (cost.routing.ROUTING_LAYOUTS): random (a router) | contiguous
    # (k consecutive expert ids, NeMo AutoModel's FakeBalancedGate benchmark gate)
    moe_routing: str = "random"
    # Megatron-Core --recompute-modules with recompute: selective (comma list); None = core_attn
    recompute_modules: str | None = None
    # Megatron-Core --cuda-graph-scope (comma list of cost.moe_host.GRAPH_SCOPES); None = eager
    cuda_graph_scope: str | None = None
    # cuDNN version the run's Transformer Engine fused attention used (e.g. 9.18): picks the Blackwell
    # cuDNN attention curve (cost.attn_shape.cudnn_law); None = the newest published curve.
    # kernels fused + attention flash on a Blackwell part only (training/step.py refuses other parts)
    cudnn_version: str | None = None

    def __post_init__(self) -> None:
        """Each field by its kind (`_FIELD_KINDS`), so a Python caller gets the CLI's one-line
        error; `check` then ties the fields to each other and to the model."""
        for name, kind in _FIELD_KINDS.items():
            value = getattr(self, name)
            read = _check_field(name, kind, value)
            if type(read) is not type(value):  # from_mapping converts ("true", 2.0); a caller must not
                raise InputError(name.replace("_", "-"), f"must be {type(read).__name__}, got {value!r}")

    # --- derived --------------------------------------------------------------------------------
    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.cp * self.dp

    @property
    def expert_tp(self) -> int:
        """Expert tensor parallelism: etp, or tp when not given (Megatron-Core's default)."""
        return self.tp if self.etp is None else self.etp

    @property
    def recompute_module_set(self) -> frozenset[str]:
        """The modules selective recomputation covers (Megatron-Core's default: core_attn)."""
        if self.recompute != "selective":
            return frozenset()
        if self.recompute_modules is None:
            return frozenset(("core_attn",))
        return frozenset(x.strip() for x in self.recompute_modules.split(",") if x.strip())

    @property
    def flash_attention(self) -> bool:
        return self.attention != "unfused"

    @property
    def te_fused_attention(self) -> bool:
        """Attention through Transformer Engine's fused attention (Megatron-Core / NeMo: kernels fused,
        attention flash), whose rate on Blackwell is cuDNN's by release (`cudnn_version`)."""
        return self.kernels == "fused" and self.attention == "flash"

    @property
    def fsdp_group(self) -> int:
        """Data-parallel ranks one ZeRO-3 shard spans: `fsdp_shard`, else all dp*cp (full shard)."""
        return self.dp * self.cp if self.fsdp_shard is None else self.fsdp_shard

    @property
    def fsdp_replicas(self) -> int:
        """Copies of each ZeRO-3 shard (hybrid sharding); 1 under full sharding."""
        return self.dp * self.cp // self.fsdp_group

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step (m)."""
        return self.global_batch // (self.dp * self.micro_batch)

    @property
    def schedule_name(self) -> str:
        """The registered schedule this plan runs (1f1b with virtual stages is interleaved)."""
        from parasim.training.schedules import resolve_name

        return resolve_name(self.schedule, self.virtual_stages)

    @property
    def grad_bytes(self) -> float:
        """Bytes per gradient element in the main-gradient buffer and the DP reduction."""
        return grad_bytes_of(self.precision, self.grad_dtype)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    def sharding(self, model: ModelSpec) -> Sharding:
        return Sharding(tp=self.tp, ep=self.ep, cp=self.cp, sp=self.sequence_parallel and self.tp > 1,
                        moe_token_sets=self.ep, etp=self.expert_tp)

    def with_(self, **changes: Any) -> TrainingPlan:
        return replace(self, **changes)

    # --- one validator for everything ---------------------------------------------------------------
    def check(self, model: ModelSpec, gpus: int | None = None) -> TrainingPlan:
        longest = model_limits.limit("context")
        if self.seq_len > longest:
            raise InputError("seq-len", f"must be at most {longest:,} tokens, got "
                                        f"{self.seq_len:,}; set {model_limits.ENV['context']} to raise the bound")
        most = model_limits.env_limit("PARASIM_MAX_MICRO_BATCHES", MAX_MICRO_BATCHES)
        if self.global_batch > most * self.dp * self.micro_batch:
            raise InputError("global-batch", f"{self.global_batch:,} sequences are more than {most:,} micro-batches "
                                             f"per pipeline (global_batch/(dp*micro_batch)); the step simulator runs "
                                             "each one: raise micro_batch, or set PARASIM_MAX_MICRO_BATCHES")
        if gpus is not None and self.gpus != gpus:
            raise InputError("gpus", f"tp*pp*cp*dp != gpus ({self.tp}*{self.pp}*{self.cp}*{self.dp} = "
                                     f"{self.gpus} != {gpus})")
        if self.precision not in TRAINING_PRECISIONS:
            raise InputError("precision", f"'{self.precision}' is not one of {', '.join(TRAINING_PRECISIONS)}")
        if self.recompute not in RECOMPUTE:
            raise InputError("recompute", f"'{self.recompute}' is not one of {', '.join(RECOMPUTE)}")
        if self.attention not in ATTENTION_KERNELS:
            raise InputError("attention", f"'{self.attention}' is not one of {', '.join(ATTENTION_KERNELS)}")
        if self.kernels not in KERNEL_MODES:
            raise InputError("kernels", f"'{self.kernels}' is not one of {', '.join(KERNEL_MODES)}")
        if self.grad_dtype not in GRAD_DTYPES:
            raise InputError("grad-dtype", f"'{self.grad_dtype}' is not one of {', '.join(GRAD_DTYPES)}")
        if self.fsdp_layout not in FSDP_LAYOUTS:
            raise InputError("fsdp-layout", f"'{self.fsdp_layout}' is not one of {', '.join(FSDP_LAYOUTS)}")
        if self.param_state not in PARAM_STATES:
            raise InputError("param-state", f"'{self.param_state}' is not one of {', '.join(PARAM_STATES)}")
        if self.fp8_recipe not in FP8_RECIPES:
            raise InputError("fp8-recipe", f"'{self.fp8_recipe}' is not one of {', '.join(FP8_RECIPES)}")
        if self.cross_entropy not in CROSS_ENTROPY_IMPLS:
            raise InputError("cross-entropy", f"'{self.cross_entropy}' is not one of {', '.join(CROSS_ENTROPY_IMPLS)}")
        if self.cross_entropy == "te" and self.kernels != "fused":
            raise InputError("cross-entropy", f"'te' is Transformer Engine's kernel: needs kernels fused, got "
                                              f"kernels={self.kernels}")
        if self.cp_ring not in CP_RINGS:
            raise InputError("cp-ring", f"'{self.cp_ring}' is not one of {', '.join(CP_RINGS)}")
        if self.cp_ring != "te" and self.cp <= 1:
            raise InputError("cp-ring", f"'{self.cp_ring}' applies only to cp > 1, got cp={self.cp}")
        self._check_fsdp(model)
        for name, value, stated in (("fp8-recipe", self.fp8_recipe, self.fp8_recipe != "delayed"),
                                    ("fp8-param-gather", "on", self.fp8_param_gather)):
            if stated and self.precision != "fp8":  # a weight format of FP8 training: never ignored silently
                raise InputError(name, f"'{value}' applies only to precision fp8, got precision={self.precision}")
            if stated and self.kernels != "fused":
                raise InputError(name, f"'{value}' applies only to kernels fused (Transformer Engine's FP8 weights: "
                                       f"Megatron-Core, NeMo, Megatron-Bridge), got kernels={self.kernels}")
        if self.cudnn_version is not None:
            parse_cudnn_version(self.cudnn_version)
            if not self.te_fused_attention:
                raise InputError("cudnn-version", f"sets Transformer Engine's cuDNN fused attention: needs kernels fused "
                                                  f"and attention flash, got kernels={self.kernels}, attention={self.attention}")
        from parasim.training.schedules import get_schedule

        get_schedule(self.schedule)  # unknown names rejected with the list of known ones
        from parasim.training.varlen_balance import STRATEGIES

        STRATEGIES.get(self.varlen_balance, field="varlen-balance")
        if self.varlen_balance != "static" and not self.seq_len_dist:
            raise InputError("varlen-balance", f"'{self.varlen_balance}' balances documents: give --seq-len-dist")
        if self.global_batch % (self.dp * self.micro_batch):
            raise InputError("global-batch", f"global batch {self.global_batch} is not divisible by "
                                             f"dp*micro_batch = {self.dp}*{self.micro_batch} = {self.dp * self.micro_batch}")
        self._check_moe(model)
        if self.seq_len % self.cp or (self.cp > 1 and (self.seq_len // self.cp) % 2):
            raise InputError("cp", f"cp={self.cp} must split seq_len={self.seq_len} into 2*cp equal chunks")
        chunks = self.pp * self.virtual_stages
        if chunks > model.layers:  # every model chunk holds at least one layer; uneven splits are fine
            raise InputError("pp", f"pp*virtual_stages = {chunks} exceeds the model's {model.layers} layers")
        get_schedule(self.schedule_name).check(self)  # each schedule's own rules (interleaved: pp, v, m)
        check_sharding(model, self.sharding(model))
        return self

    def _check_fsdp(self, model: ModelSpec) -> None:
        """FSDP's own options: hybrid shard groups (`fsdp_shard`) and the parameter layout apply only to
        ZeRO-3, and a shard group must tile the data-parallel ranks evenly."""
        if self.fsdp_shard is not None:
            if self.zero != 3:
                raise InputError("fsdp-shard", f"{self.fsdp_shard} shards ZeRO-3 state: needs zero=3 (FSDP), "
                                               f"got zero={self.zero}")
            if (self.dp * self.cp) % self.fsdp_shard:
                raise InputError("fsdp-shard", f"{self.fsdp_shard} must divide dp*cp = {self.dp}*{self.cp} = "
                                               f"{self.dp * self.cp} (shard groups of equal size)")
            if model.is_moe:
                raise InputError("fsdp-shard", f"hybrid sharding of a mixture-of-experts model is not modelled "
                                               f"({model.name}); leave it out for full sharding")
        if self.fsdp_layout != "flat" and self.zero != 3:
            raise InputError("fsdp-layout", f"'{self.fsdp_layout}' applies only to zero=3 (FSDP), got zero={self.zero}")

    def _check_moe(self, model: ModelSpec) -> None:
        """MoE parallel folding (Megatron-Core): the ep*etp expert ranks tile the tp*cp*dp GPUs of a
        stage, so ep*etp must divide tp*cp*dp; and the routing options each within its range."""
        etp, folded = self.expert_tp, self.tp * self.cp * self.dp
        if folded % (self.ep * etp):
            name = "etp" if self.etp is not None and folded % self.ep == 0 else "ep"
            raise InputError(name, f"ep*etp = {self.ep}*{etp} = {self.ep * etp} must divide tp*cp*dp = "
                                   f"{self.tp}*{self.cp}*{self.dp} = {folded} (MoE parallel folding; etp defaults to tp)")
        if self.etp is not None and self.etp > 1 and not model.is_moe:
            raise InputError("etp", f"etp={self.etp} needs a mixture-of-experts model; {model.name} is dense")
        if self.moe_a2a not in A2A_KINDS:
            raise InputError("moe-a2a", f"'{self.moe_a2a}' is not one of {', '.join(A2A_KINDS)}")
        if self.moe_routing not in ROUTING_LAYOUTS:
            raise InputError("moe-routing", f"'{self.moe_routing}' is not one of {', '.join(ROUTING_LAYOUTS)}")
        if self.moe_routing != "random" and not model.is_moe:
            raise InputError("moe-routing", f"{self.moe_routing} routing needs a mixture-of-experts model; "
                                            f"{model.name} is dense")
        if self.moe_imbalance < 1.0:
            raise InputError("moe-imbalance", f"is the busiest expert's load over the mean: must be >= 1, "
                                              f"got {self.moe_imbalance}")
        if self.recompute_modules is not None:
            if self.recompute != "selective":
                raise InputError("recompute-modules", f"applies to recompute: selective, got recompute: {self.recompute}")
            mods = self.recompute_module_set
            bad = sorted(mods - set(RECOMPUTE_MODULES))
            if bad or not mods:
                raise InputError("recompute-modules", f"'{bad[0] if bad else self.recompute_modules}' is not one of "
                                                      f"{', '.join(RECOMPUTE_MODULES)} (a comma list)")
            if "mla_up_proj" in mods and model.mla is None:
                raise InputError("recompute-modules", f"mla_up_proj needs a multi-head latent attention model; "
                                                      f"{model.name} has none")
            if "moe_act" in mods and not model.is_moe:
                raise InputError("recompute-modules", f"moe_act needs a mixture-of-experts model; {model.name} is dense")
        self._check_graph_scope(model)

    def _check_graph_scope(self, model: ModelSpec) -> None:
        """CUDA graph scopes: known names; only MoE layers' host work is modelled (cost/moe_host.py)."""
        if self.cuda_graph_scope is None:
            return
        scopes = scope_set(self.cuda_graph_scope)
        bad = sorted(scopes - set(GRAPH_SCOPES))
        if bad or not scopes:
            raise InputError("cuda-graph-scope", f"'{bad[0] if bad else self.cuda_graph_scope}' is not one of "
                                                 f"{', '.join(GRAPH_SCOPES)} (a comma list)")
        if not model.is_moe:
            raise InputError("cuda-graph-scope", f"sets the host work of mixture-of-experts layers; {model.name} is dense")
        if "full_iteration" in scopes and len(scopes) > 1:
            raise InputError("cuda-graph-scope", "full_iteration graphs the whole step: give it alone")
        if "full_iteration" in scopes and self.moe_capacity_factor is None:
            raise InputError("cuda-graph-scope", "full_iteration needs static MoE shapes: give --moe-capacity-factor "
                                                 "(Megatron-Core captures MoE layers only with drop-and-pad routing)")

    # --- mappings (config files, JSON results) ------------------------------------------------------
    def to_mapping(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, d: dict[str, Any], *, gpus: int | None = None) -> TrainingPlan:
        """Keys are field names (dashes or underscores); dp is derived from gpus when missing/null."""
        known = {f.name: f for f in fields(cls)}
        kw: dict[str, Any] = {}
        for key, value in d.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise InputError(f"plan.{key}", f"unknown field; allowed: {', '.join(sorted(known))}")
            if value is None:
                continue
            kw[name] = _check_field(name, _FIELD_KINDS[name], value)
        if "dp" not in kw:
            if gpus is None:
                kw["dp"] = 1
            else:
                rest = kw.get("tp", 1) * kw.get("pp", 1) * kw.get("cp", 1)
                if gpus % rest:
                    raise InputError("dp", f"cannot derive dp: tp*pp*cp = {rest} does not divide gpus={gpus}")
                kw["dp"] = gpus // rest
        if "global_batch" not in kw:
            kw["global_batch"] = kw["dp"] * kw.get("micro_batch", 1)
        if kw.get("virtual_stages", 1) > 1:
            from parasim.training.schedules import resolve_name

            kw["schedule"] = resolve_name(kw.get("schedule", cls.schedule), kw["virtual_stages"])
        return cls(**kw)


#: TrainingPlan field -> its kind (a trailing ? allows null); errors name the flag spelling
_FIELD_KINDS = {
    **dict.fromkeys(("tp", "pp", "dp", "cp", "ep", "virtual_stages", "micro_batch", "global_batch", "seq_len"),
                    "count"),
    **dict.fromkeys(("sequence_parallel", "overlap_grad_reduce", "overlap_param_gather", "tp_comm_overlap",
                     "overlap_p2p_comm", "fp8_param_gather"), "bool"),
    **dict.fromkeys(("recompute", "precision", "schedule", "attention", "grad_dtype", "kernels", "varlen_balance",
                     "fsdp_layout", "cp_ring", "param_state", "fp8_recipe", "cross_entropy"),
                    "text"),
    "zero": "zero", "seq_len_dist": "text?", "etp": "count?", "fsdp_shard": "count?", "moe_imbalance": "ratio",
    "moe_capacity_factor": "positive?", "moe_a2a": "text", "moe_a2a_overlap": "bool", "moe_routing": "text",
    "recompute_modules": "text?",
    "cuda_graph_scope": "text?", "cudnn_version": "text?",
}
#: largest busiest-expert-over-mean load accepted (every token on one expert of 1,024 is 1,024)
MAX_MOE_IMBALANCE = 1024.0
#: largest capacity factor accepted (a factor at or above the expert count never drops anything)
MAX_CAPACITY_FACTOR = 1024.0


def _check_field(name: str, kind: str, value: Any) -> Any:
    """`value` of field `name` by its kind; booleans are not numbers and strings are not either
    (a config's `tp: "2"` is refused, not read as 2). Returns the value (a whole float as int)."""
    flag = name.replace("_", "-")
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    if kind == "count":
        return edge.positive_int(flag, value)
    if kind == "zero":
        return edge.number(flag, value, integer=True, lo=0, hi=3)
    if kind == "bool":
        return edge.boolean(flag, value)
    if kind == "ratio":
        return float(edge.number(flag, value, lo=1.0, hi=MAX_MOE_IMBALANCE))
    if kind == "positive":
        return float(edge.number(flag, value, lo=0.0, lo_open=True, hi=MAX_CAPACITY_FACTOR))
    return edge.text_value(flag, value)

