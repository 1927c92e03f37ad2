"""What a transformer is, as far as cost is concerned.

A model is plain architecture facts (from a config.json or a paper); every count a simulator
needs (parameters per layer, total and active parameters, KV values per token) is derived here
once, exactly, from those facts. Families follow the validation case format: `gpt` (MHA, GELU MLP
with two matrices, LayerNorm with biases), `llama` (GQA, SwiGLU with three matrices, RMSNorm),
`moe` (llama attention, SwiGLU mixture of experts). MLA (DeepSeek) is an attention variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

FAMILIES = ("gpt", "llama", "moe")
#: checkpoint dtypes (Hugging Face `torch_dtype`); fp32 checkpoints are served in 16 bits
CHECKPOINT_DTYPES = ("bf16", "fp16", "fp32")
#: weight formats a checkpoint may ship in (HF `quantization_config`)
QUANTIZED_FORMATS = ("fp8", "int8", "int4", "fp4")
#: which block modules a quantized checkpoint quantizes (cost.quant_bytes): every Linear, the MLPs
#: (dense and experts) only, the MLPs but the first and last layers wholly 16-bit, routed experts only
QUANTIZED_MODULES = ("all", "mlp", "mlp_except_first_last", "experts")
#: the block-scale layouts each format's checkpoints use (cost.quant_bytes.SCALE_BITS_PER_ELEMENT)
WEIGHT_SCALES = {"fp8": ("per_tensor", "block_128"), "int8": ("per_tensor",), "int4": ("group_128",),
                 "fp4": ("nvfp4", "mxfp4")}
#: ModelSpec fields that hold free text
_TEXT_FIELDS = ("name", "family", "model_type", "source", "notes", "hf_repo", "quantized_modules")
#: ModelSpec fields that only an MoE model may set (non-zero)
_MOE_FIELDS = ("experts_per_token", "shared_experts", "moe_ffn_hidden", "dense_layers")


MLA_FIELDS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


@dataclass(frozen=True, kw_only=True)
class MLASpec:
    """Multi-head latent attention (DeepSeek-V2/V3): low-rank Q and a cached KV latent."""

    q_lora_rank: int  # 0 = no Q compression
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    def __post_init__(self) -> None:
        from parasim.specs import model_limits

        for name in MLA_FIELDS:
            model_limits.spec_size(f"model.mla.{name}", name, getattr(self, name))


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    name: str
    family: str  # gpt | llama | moe
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn_hidden: int  # dense MLP width (MoE: width of the leading dense layers)
    vocab: int
    model_type: str = ""  # Hugging Face model_type, when known
    gated_mlp: bool = True  # SwiGLU (3 matrices) vs GELU/ReLU (2 matrices)
    biases: bool = False  # linear-layer biases (GPT-2/3, OPT)
    tied_embeddings: bool = False
    learned_positions: bool = False  # GPT-2/3, OPT: a max_seq_len x hidden position table
    position_offset: int = 0  # extra rows of that table (OPT: 2, its positions start at index 2)
    embed_dim: int = 0  # token-embedding width when it is not `hidden` (OPT-350m's word_embed_proj_dim,
    # with bias-free project_in / project_out matrices between it and the blocks); 0 = hidden
    final_norm: bool = True  # a norm after the last block (OPT-350m, post-LN, has none)
    parallel_attn: bool = False  # attention and MLP read the same normed input (GPT-J, Falcon)
    experts: int = 0  # routed experts; 0 = dense
    experts_per_token: int = 0
    shared_experts: int = 0
    moe_ffn_hidden: int = 0
    dense_layers: int = 0  # leading dense layers of an MoE model (DeepSeek first_k_dense_replace)
    mla: MLASpec | None = None
    # sliding-window attention: `sliding_window` tokens per query (the query's own position and the
    # window - 1 before it, HF `sliding_window`) on `sliding_layers` of the layers (None = every
    # layer, Mistral-7B v0.1; gpt-oss 18 of 36 from HF `layer_types`; Gemma 2 every other layer;
    # Gemma 3 five of every six, `sliding_window_pattern` 6). Costs use the counts only: which
    # layers they are matters to a pipeline split, which charges the average layer.
    sliding_window: int | None = None
    sliding_layers: int | None = None
    max_seq_len: int = 2048
    dropout: bool = False  # stores dropout masks in training (Megatron GPT default)
    # the published checkpoint's precision: `dtype` is its torch_dtype (activations, KV cache and
    # unquantized weights; None = not stated, bf16 assumed and said so); `quantized_weights` the
    # format its weights ship in when the release is quantized (HF quantization_config), e.g. fp8
    dtype: str | None = None
    quantized_weights: str | None = None
    # what the quantized checkpoint holds (HF quantization_config; cost.quant_bytes): the block
    # modules it quantizes (QUANTIZED_MODULES) and its block-scale layout (None: the format's default)
    quantized_modules: str = "all"
    weight_scales: str | None = None
    source: str = ""
    notes: str = field(default="", compare=False)
    # the Hugging Face repository the checkpoint is published under ("" = none public), for the
    # launch commands `plan serve --emit` prints; not part of the architecture, so not compared
    hf_repo: str = field(default="", compare=False)

    # --- validation -----------------------------------------------------------------------
    def __post_init__(self) -> None:
        """Every field checked by kind (sizes by model_limits, switches strictly boolean, texts
        strings), then the facts that tie fields together, so a Python caller gets the same one-line
        InputError as a file does; the loaders check first and name the file's key."""
        from parasim.errors import InputError
        from parasim.specs import model_limits

        for name in _TEXT_FIELDS:
            if not isinstance(getattr(self, name), str):
                raise InputError(f"model.{name}", f"must be a string, got {getattr(self, name)!r}")
        if not self.name.strip():
            raise InputError("model.name", "must be a non-empty string")
        if self.family not in FAMILIES:
            raise InputError("model.family", f"{self.family!r} is not one of {', '.join(FAMILIES)}")
        for name in model_limits.SPEC_INT_FIELDS:
            value = getattr(self, name)
            if value is not None or name not in ("sliding_window", "sliding_layers"):
                model_limits.spec_size(f"model.{name}", name, value)
        for name in model_limits.SPEC_BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"model.{name}", f"must be true or false, got {getattr(self, name)!r}")
        if self.mla is not None and not isinstance(self.mla, MLASpec):
            raise InputError("model.mla", f"must be an MLASpec or null, got {type(self.mla).__name__}")
        if self.kv_heads > self.heads or self.heads % self.kv_heads:
            raise InputError("model.kv_heads", f"{self.kv_heads} does not divide heads={self.heads} "
                                               "(each KV head serves a whole group of query heads)")
        if self.ffn_hidden == 0 and not self.is_moe:
            raise InputError("model.ffn_hidden", "must be a positive integer for a dense model")
        if self.family == "moe" and not self.is_moe:
            raise InputError("model.experts", "family moe needs experts >= 1")
        if self.is_moe:
            if not 0 < self.experts_per_token <= self.experts:
                raise InputError("model.experts_per_token", f"must be in 1..experts={self.experts}, "
                                                            f"got {self.experts_per_token}")
            if self.moe_ffn_hidden == 0:
                raise InputError("model.moe_ffn_hidden", "must be a positive integer for an MoE model")
            if self.dense_layers >= self.layers:
                raise InputError("model.dense_layers", f"must be below layers={self.layers} (an MoE model "
                                                       f"has at least one MoE layer), got {self.dense_layers}")
        else:
            moe_only = [n for n in _MOE_FIELDS if getattr(self, n)]
            if moe_only:
                raise InputError(f"model.{moe_only[0]}", "applies only to an MoE model (experts >= 1); "
                                                         "experts is 0")
        if self.sliding_layers is not None:
            if self.sliding_window is None:
                raise InputError("model.sliding_layers", "counts the layers with a sliding window; set "
                                                         "sliding_window (the window in tokens) too")
            if self.sliding_layers > self.layers:
                raise InputError("model.sliding_layers", f"must be at most layers={self.layers}, "
                                                         f"got {self.sliding_layers}")
        if self.dtype is not None and self.dtype not in CHECKPOINT_DTYPES:
            raise InputError("model.dtype", f"{self.dtype!r} is not one of {', '.join(CHECKPOINT_DTYPES)}")
        if self.quantized_weights is not None and self.quantized_weights not in QUANTIZED_FORMATS:
            raise InputError("model.quantized_weights",
                             f"{self.quantized_weights!r} is not one of {', '.join(QUANTIZED_FORMATS)}")
        self._check_quantized_checkpoint()

    def _check_quantized_checkpoint(self) -> None:
        """`quantized_modules` / `weight_scales` describe a quantized checkpoint: each needs
        `quantized_weights`, and the values must fit the format and the model."""
        from parasim.errors import InputError

        if self.quantized_modules not in QUANTIZED_MODULES:
            raise InputError("model.quantized_modules",
                             f"{self.quantized_modules!r} is not one of {', '.join(QUANTIZED_MODULES)}")
        if self.weight_scales is not None and not isinstance(self.weight_scales, str):
            raise InputError("model.weight_scales", f"must be a string, got {self.weight_scales!r}")
        for name, default in (("quantized_modules", "all"), ("weight_scales", None)):
            if getattr(self, name) != default and self.quantized_weights is None:
                raise InputError(f"model.{name}", "describes a quantized checkpoint; set quantized_weights "
                                                  f"({', '.join(QUANTIZED_FORMATS)}) too")
        if self.quantized_modules == "experts" and not self.is_moe:
            raise InputError("model.quantized_modules", "'experts' needs a mixture-of-experts model; "
                                                        f"{self.name} is dense")
        if self.quantized_modules == "mlp_except_first_last" and self.is_moe:
            raise InputError("model.quantized_modules", "'mlp_except_first_last' is modelled for dense models "
                                                        "(Meta's FP8 Llama 3.1 recipe); use all, mlp or experts")
        if self.weight_scales is not None and self.quantized_weights is not None:
            allowed = WEIGHT_SCALES[self.quantized_weights]
            if self.weight_scales not in allowed:
                raise InputError("model.weight_scales", f"{self.weight_scales!r} is not a layout of "
                                                        f"{self.quantized_weights} checkpoints; allowed: {', '.join(allowed)}")

    def with_(self, **changes) -> ModelSpec:
        return replace(self, **changes)

    # --- precision ------------------------------------------------------------------------
    @property
    def serving_dtype(self) -> str:
        """The 16-bit dtype engines serve the checkpoint in (vLLM `--dtype auto`: bf16 for a bf16
        checkpoint, fp16 for fp16 and fp32 ones); bf16 when the description does not say."""
        return "fp16" if self.dtype in ("fp16", "fp32") else "bf16"

    @property
    def native_weights(self) -> str:
        """The weight precision of the published checkpoint: its quantized format, or its dtype."""
        return self.quantized_weights or self.serving_dtype

    def precision_origin(self) -> str:
        """Where `native_weights` / `serving_dtype` come from, for reports."""
        if self.quantized_weights:
            return (f"{self.name} ships {self.quantized_weights} weights (quantization_config) with "
                    f"{self.serving_dtype} activations")
        if self.dtype is None:
            return f"{self.name} does not state its dtype: bf16 assumed"
        return f"{self.name}'s torch_dtype is {self.dtype}" + (" (served in fp16)" if self.dtype == "fp32" else "")

    # --- shape facts ----------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def clamped_glu(self) -> bool:
        """GPT-OSS clamps its GLU's inputs before the activation (HF config `swiglu_limit: 7.0`,
        openai/gpt-oss-120b and -20b; the same architecture under model_type gpt_oss), which a
        training stack may run as kernels of its own (cost.nongemm.glu_clamp_access)."""
        return self.model_type == "gpt_oss"

    @property
    def yarn_positions(self) -> bool:
        """GPT-OSS's rotary embedding is YaRN-scaled (HF config rope_scaling rope_type yarn), which
        Megatron-Bridge builds as position_embedding_type "yarn" (gpt_oss_provider.py, v0.2.0 and
        v0.3.0); its `provide()` turns rope fusion off for any type but "rope"
        (utils/fusions.py `validate_rope_fusion_compatibility`). DeepSeek-V3's YaRN is built as
        "rope" with MLA's own rope_type, so it stays fused (deepseek_provider.py)."""
        return self.model_type == "gpt_oss"

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.is_moe else 0

    @property
    def moe_layer_share(self) -> float:
        """The share of the layers that are MoE layers (0 for a dense model): what an average-layer
        figure weighs an MoE layer's own terms by."""
        return self.moe_layers / self.layers

    @property
    def q_dim(self) -> int:
        """Width of the query projection output (heads x query head dim)."""
        if self.mla:
            return self.heads * (self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim)
        return self.heads * self.head_dim

    @property
    def qk_head_dim(self) -> int:
        return self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim if self.mla else self.head_dim

    @property
    def v_head_dim(self) -> int:
        return self.mla.v_head_dim if self.mla else self.head_dim

    @property
    def kv_values_per_token_per_layer(self) -> int:
        """Cached values per token per layer: 2*kv_heads*head_dim, or the MLA latent + rope key."""
        if self.mla:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        return 2 * self.kv_heads * self.head_dim

    @property
    def windowed_layers(self) -> int:
        """Layers whose attention sees only the last `sliding_window` tokens (0 without a window)."""
        if self.sliding_window is None:
            return 0
        return self.layers if self.sliding_layers is None else self.sliding_layers

    @property
    def full_attention_layers(self) -> int:
        """Layers attending to the whole context."""
        return self.layers - self.windowed_layers

    @property
    def mlp_matrices(self) -> int:
        return 3 if self.gated_mlp else 2

    # --- parameter counts (exact, from the shapes) ------------------------------------------
    @cached_property
    def attn_params(self) -> int:
        """Attention weights of one layer, biases included where the family has them."""
        h = self.hidden
        if self.mla:
            m = self.mla
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank:
                q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * self.heads * qk
            else:
                q = h * self.heads * qk
            kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
            kv += m.kv_lora_rank * self.heads * (m.qk_nope_head_dim + m.v_head_dim)
            return q + kv + self.heads * m.v_head_dim * h
        qkv_out = self.q_dim + 2 * self.kv_heads * self.head_dim
        params = h * qkv_out + self.q_dim * h
        if self.biases:
            params += qkv_out + h
        return params

    def mlp_params_of_width(self, width: int) -> int:
        params = self.mlp_matrices * self.hidden * width
        if self.biases:
            params += (self.mlp_matrices - 1) * width + self.hidden
        return params

    @cached_property
    def dense_mlp_params(self) -> int:
        return self.mlp_params_of_width(self.ffn_hidden)

    @cached_property
    def expert_params(self) -> int:
        """One routed (or shared) expert."""
        return self.mlp_params_of_width(self.moe_ffn_hidden) if self.is_moe else 0

    @cached_property
    def router_params(self) -> int:
        return self.hidden * self.experts if self.is_moe else 0

    @cached_property
    def norm_params_per_layer(self) -> int:
        per_norm = 2 * self.hidden if self.family == "gpt" else self.hidden
        # parallel-attention blocks (GPT-J) share one norm; MLA's latent norms sit in attn_params
        return (1 if self.parallel_attn else 2) * per_norm

    @property
    def embed_width(self) -> int:
        """Width of the token embedding (and of the LM head's input)."""
        return self.embed_dim or self.hidden

    @property
    def projection_params(self) -> int:
        """One of the two bias-free projections between embed_width and hidden (0 when equal)."""
        return self.hidden * self.embed_width if self.embed_width != self.hidden else 0

    @property
    def lm_head_matrix_params(self) -> int:
        """The vocab x embed_width matrix of the LM head (the embedding matrix when tied)."""
        return self.vocab * self.embed_width

    @cached_property
    def embedding_params(self) -> int:
        """Token embedding, the learned position table where the model has one, the input projection."""
        positions = (self.max_seq_len + self.position_offset) * self.hidden if self.learned_positions else 0
        return self.lm_head_matrix_params + positions + self.projection_params

    @property
    def final_norm_params(self) -> int:
        return (2 if self.family == "gpt" else 1) * self.hidden if self.final_norm else 0

    @cached_property
    def lm_head_params(self) -> int:
        """LM head weights held apart from the embedding: the matrix unless tied, the output projection."""
        return (0 if self.tied_embeddings else self.lm_head_matrix_params) + self.projection_params

    @property
    def edge_matmul_params(self) -> int:
        """Matmul weights outside the blocks per token: the LM head and both projections."""
        return self.lm_head_matrix_params + 2 * self.projection_params

    @cached_property
    def moe_layer_params(self) -> int:
        return (self.attn_params + self.norm_params_per_layer + self.router_params
                + (self.experts + self.shared_experts) * self.expert_params)

    @cached_property
    def dense_layer_params(self) -> int:
        return self.attn_params + self.norm_params_per_layer + self.dense_mlp_params

    @cached_property
    def params_total(self) -> int:
        dense = self.layers - self.moe_layers
        return (dense * self.dense_layer_params + self.moe_layers * self.moe_layer_params
                + self.embedding_params + self.lm_head_params + self.final_norm_params)

    @cached_property
    def params_active(self) -> int:
        """Parameters touched by one token: routed experts count only top-k."""
        if not self.is_moe:
            return self.params_total
        inactive = (self.experts - self.experts_per_token) * self.expert_params * self.moe_layers
        return self.params_total - inactive

    @cached_property
    def matmul_params_active(self) -> int:
        """Weights in matrix multiplies per token (the N of 2N FLOPs per token): attention,
        MLP or active experts, router, and the LM head (the tied embedding matrix when tied);
        the input embedding is a lookup and norms are not matmuls."""
        dense = self.layers - self.moe_layers
        moe = self.attn_params + self.router_params + (self.experts_per_token + self.shared_experts) * self.expert_params
        return (dense * (self.attn_params + self.dense_mlp_params) + self.moe_layers * moe
                + self.edge_matmul_params)

    def summary(self) -> dict:
        return {"name": self.name, "family": self.family, "model_type": self.model_type,
                "layers": self.layers, "hidden": self.hidden, "heads": self.heads,
                "kv_heads": self.kv_heads, "head_dim": self.head_dim, "ffn_hidden": self.ffn_hidden,
                "vocab": self.vocab, "experts": self.experts, "experts_per_token": self.experts_per_token,
                "shared_experts": self.shared_experts, "moe_ffn_hidden": self.moe_ffn_hidden,
                "mla": self.mla is not None, "params_total": self.params_total,
                "params_active": self.params_active, "dtype": self.dtype,
                "quantized_weights": self.quantized_weights, "quantized_modules": self.quantized_modules,
                "weight_scales": self.weight_scales, "source": self.source,
                **({"sliding_window": self.sliding_window, "sliding_layers": self.windowed_layers}
                   if self.windowed_layers else {})}
