"""Read a model description from a file, fully offline.

Two formats are accepted, from a file or a Hugging Face checkpoint folder (its config.json):

* a Hugging Face ``config.json`` (recognised by ``model_type`` / ``architectures`` /
  ``text_config``), mapped per ``model_type`` by the small functions in ``_MAPPERS``;
* a parasim model file (YAML or JSON) whose keys are ``ModelSpec`` field names.

Anything malformed becomes an ``InputError`` naming the file and the key; no raw exception escapes.
"""

from __future__ import annotations

import re

from collections.abc import Callable
from pathlib import Path
from typing import Any

from parasim.errors import InputError
from parasim.specs import edge, model_limits
from parasim.specs.model import MLASpec, ModelSpec
from parasim.specs.model_mapping import model_from_mapping

_MISSING = object()


class _Config:
    """A config mapping plus where it came from, with checked accessors."""

    def __init__(self, data: dict, where: str, model_type: str) -> None:
        self.data = data
        self.where = where
        self.model_type = model_type
        self.notes: list[str] = []

    def field(self, key: str) -> str:
        return f"{self.where}:{key}"

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def dim(self, *keys: str, default: Any = _MISSING) -> int:
        """The first present key among `keys`, as a positive integer within model_limits."""
        for key in keys:
            if self.has(key):
                return model_limits.hf_size(self.field(key), key, self.data[key])
        if default is _MISSING:
            raise InputError(self.field(keys[0]), f"required key is missing for model_type "
                                                  f"'{self.model_type}' (also accepted: {', '.join(keys[1:]) or 'none'})")
        return default

    def count(self, key: str, default: int = 0) -> int:
        """A non-negative integer (0 allowed), e.g. n_shared_experts, q_lora_rank."""
        if not self.has(key):
            return default
        return model_limits.hf_size(self.field(key), key, self.data[key], zero_ok=True)

    def probability(self, key: str, default: float) -> float:
        """A dropout-like probability in [0, 1)."""
        value = edge.number(self.field(key), self.data.get(key, default), lo=0, hi=1)
        if value == 1:
            raise InputError(self.field(key), "must be a probability in [0, 1), got 1")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise InputError(self.field(key), f"must be true or false, got {value!r}")
        return value


# --- per-family mappings (each returns ModelSpec keyword arguments) ----------------------------

def _attention(c: _Config) -> dict:
    hidden = c.dim("hidden_size")
    heads = c.dim("num_attention_heads")
    if not c.has("head_dim"):
        if hidden % heads:
            raise InputError(c.field("head_dim"), f"missing, and hidden_size {hidden} is not divisible by "
                                                  f"num_attention_heads {heads}")
        c.notes.append("head_dim derived as hidden_size / num_attention_heads")
    return {"hidden": hidden, "heads": heads, "kv_heads": c.dim("num_key_value_heads", default=heads),
            "head_dim": c.dim("head_dim", default=hidden // heads if hidden % heads == 0 else 1),
            "layers": c.dim("num_hidden_layers"), "vocab": c.dim("vocab_size"),
            "max_seq_len": c.dim("max_position_embeddings", default=2048)}


def _sliding(c: _Config) -> dict:
    """`sliding_window` and how many layers use it. Qwen configs carry a window they disable
    (`use_sliding_window: false`). Newer transformers configs list every layer's kind in
    `layer_types` ("sliding_attention" / "full_attention": gpt-oss's 18 x [sliding, full]); Gemma 3
    configs give `sliding_window_pattern` p instead (layer i is global when (i + 1) % p == 0, the
    rest local: Gemma3 modeling code, `is_sliding = bool((layer_idx + 1) % pattern)`). Without
    either, a window applies to every layer (Mistral-7B v0.1)."""
    if c.model_type in ("qwen2", "qwen3", "qwen3_moe", "qwen2_moe") and not c.flag("use_sliding_window", False):
        return {"sliding_window": None}
    window = c.dim("sliding_window", default=None)
    if window is None:
        return {"sliding_window": None}
    layers = c.dim("num_hidden_layers")
    kinds = c.data.get("layer_types")
    if kinds is not None:
        allowed = ("sliding_attention", "full_attention")
        if not isinstance(kinds, list) or len(kinds) != layers or any(k not in allowed for k in kinds):
            raise InputError(c.field("layer_types"), f"must list one of {', '.join(allowed)} for each of the "
                                                     f"{layers} layers (num_hidden_layers)")
        sliding = kinds.count("sliding_attention")
        return {"sliding_window": window if sliding else None, "sliding_layers": sliding if sliding else None}
    if c.has("sliding_window_pattern"):
        pattern = c.dim("sliding_window_pattern")
        return {"sliding_window": window, "sliding_layers": layers - layers // pattern}
    return {"sliding_window": window}


def _llama(c: _Config) -> dict:
    biases = c.flag("attention_bias", False) or c.flag("mlp_bias", False)
    if c.model_type == "qwen2":
        c.notes.append("qwen2 q/k/v biases are not modelled (biases: false)")
    return {**_attention(c), "family": "llama", "ffn_hidden": c.dim("intermediate_size"),
            "gated_mlp": True, "biases": biases, "tied_embeddings": c.flag("tie_word_embeddings", False),
            **_sliding(c)}


def _mixtral(c: _Config) -> dict:
    width = c.dim("intermediate_size")
    return {**_llama(c), "family": "moe", "ffn_hidden": width, "moe_ffn_hidden": width,
            "experts": c.dim("num_local_experts"), "experts_per_token": c.dim("num_experts_per_tok")}


def _leading_dense_layers(c: _Config, layers: int) -> int:
    """Qwen-MoE dense layers: mlp_only_layers, or every layer not on the decoder_sparse_step grid."""
    only = c.data.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(isinstance(i, int) and 0 <= i < layers for i in only):
        raise InputError(c.field("mlp_only_layers"), f"must be a list of layer indices in 0..{layers - 1}")
    step = c.dim("decoder_sparse_step", default=1)
    dense = {i for i in range(layers) if i in only or (i + 1) % step}
    if dense and dense != set(range(len(dense))):
        c.notes.append(f"{len(dense)} dense layers are not all leading; counted as leading dense layers")
    return len(dense)


def _qwen3_moe(c: _Config) -> dict:
    spec = _llama(c)
    return {**spec, "family": "moe", "experts": c.dim("num_experts"),
            "experts_per_token": c.dim("num_experts_per_tok"), "moe_ffn_hidden": c.dim("moe_intermediate_size"),
            "dense_layers": _leading_dense_layers(c, spec["layers"])}


def _deepseek(c: _Config) -> dict:
    heads = c.dim("num_attention_heads")
    mla = MLASpec(q_lora_rank=c.count("q_lora_rank"), kv_lora_rank=c.dim("kv_lora_rank"),
                  qk_nope_head_dim=c.dim("qk_nope_head_dim"), qk_rope_head_dim=c.dim("qk_rope_head_dim"),
                  v_head_dim=c.dim("v_head_dim"))
    if c.dim("moe_layer_freq", default=1) != 1:
        c.notes.append("moe_layer_freq != 1 is not modelled: every layer after the dense ones is MoE")
    c.notes.append("head_dim is nominal (v_head_dim); MLA shapes come from the mla fields")
    return {"family": "moe", "layers": c.dim("num_hidden_layers"), "hidden": c.dim("hidden_size"),
            "heads": heads, "kv_heads": c.dim("num_key_value_heads", default=heads), "head_dim": mla.v_head_dim,
            "ffn_hidden": c.dim("intermediate_size"), "vocab": c.dim("vocab_size"),
            "max_seq_len": c.dim("max_position_embeddings", default=2048), "mla": mla,
            "experts": c.dim("n_routed_experts"), "experts_per_token": c.dim("num_experts_per_tok"),
            "shared_experts": c.count("n_shared_experts"), "moe_ffn_hidden": c.dim("moe_intermediate_size"),
            "dense_layers": c.count("first_k_dense_replace"),
            "tied_embeddings": c.flag("tie_word_embeddings", False)}


def _gpt_common(c: _Config) -> dict:
    hidden = c.dim("n_embd", "hidden_size")
    heads = c.dim("n_head", "num_attention_heads")
    if hidden % heads:
        raise InputError(c.field("n_head"), f"n_embd {hidden} is not divisible by n_head {heads}")
    if not c.has("n_inner"):
        c.notes.append("ffn_hidden = 4 * n_embd (n_inner unset)")
    dropout = c.probability("resid_pdrop", 0.1 if c.model_type == "gpt2" else 0.0)
    return {"family": "gpt", "layers": c.dim("n_layer", "num_hidden_layers"), "hidden": hidden, "heads": heads,
            "kv_heads": heads, "head_dim": hidden // heads, "ffn_hidden": c.dim("n_inner", default=4 * hidden),
            "vocab": c.dim("vocab_size"), "max_seq_len": c.dim("n_positions", "max_position_embeddings", default=2048),
            "gated_mlp": False, "biases": True, "dropout": bool(dropout)}


def _gpt2(c: _Config) -> dict:
    return {**_gpt_common(c), "tied_embeddings": c.flag("tie_word_embeddings", True), "learned_positions": True}


def _gptj(c: _Config) -> dict:
    c.notes.append("GPT-J has MLP biases but no attention biases; biases: true is the closest setting")
    return {**_gpt_common(c), "parallel_attn": True, "tied_embeddings": c.flag("tie_word_embeddings", False)}


def _falcon(c: _Config) -> dict:
    hidden = c.dim("hidden_size", "n_embed")
    heads = c.dim("num_attention_heads", "n_head")
    if hidden % heads:
        raise InputError(c.field("num_attention_heads"), f"does not divide hidden_size {hidden}")
    if c.flag("new_decoder_architecture", False):
        kv_heads = c.dim("num_kv_heads", default=heads)
    else:
        kv_heads = 1 if c.flag("multi_query", True) else heads
    if not c.has("ffn_hidden_size"):
        c.notes.append("ffn_hidden = 4 * hidden_size (ffn_hidden_size unset, FalconConfig default)")
    if c.flag("alibi", False):
        c.notes.append("ALiBi positions (cost-wise like RoPE)")
    return {"family": "llama", "layers": c.dim("num_hidden_layers", "n_layer"), "hidden": hidden, "heads": heads,
            "kv_heads": kv_heads, "head_dim": hidden // heads,
            "ffn_hidden": c.dim("ffn_hidden_size", default=4 * hidden), "vocab": c.dim("vocab_size"),
            "max_seq_len": c.dim("max_position_embeddings", default=2048), "gated_mlp": False,
            "biases": c.flag("bias", False), "parallel_attn": c.flag("parallel_attn", True),
            "tied_embeddings": c.flag("tie_word_embeddings", True)}


def _opt(c: _Config) -> dict:
    """OPT (facebook/opt-*): learned positions with 2 extra rows, ReLU MLP of two matrices with
    biases, LayerNorm; word_embed_proj_dim != hidden_size (opt-350m) adds bias-free projections
    between the embedding and the blocks; do_layer_norm_before: false (post-LN, opt-350m) has no
    final norm. The LM head is tied to the embedding (OPTForCausalLM)."""
    hidden = c.dim("hidden_size")
    heads = c.dim("num_attention_heads")
    if hidden % heads:
        raise InputError(c.field("num_attention_heads"), f"does not divide hidden_size {hidden}")
    activation = c.data.get("activation_function", "relu")
    if activation != "relu":
        c.notes.append(f"activation {activation!r}: cost-wise like ReLU (two MLP matrices)")
    embed = c.dim("word_embed_proj_dim", default=hidden)
    pre_ln = c.flag("do_layer_norm_before", True)
    if not pre_ln:
        c.notes.append("post-LN (do_layer_norm_before: false): no final layer norm")
    if not c.flag("layer_norm_elementwise_affine", True):
        c.notes.append("layer norms without weights are counted as if they had them")
    dropout = c.probability("dropout", 0.1)
    return {"family": "gpt", "layers": c.dim("num_hidden_layers"), "hidden": hidden, "heads": heads,
            "kv_heads": heads, "head_dim": hidden // heads, "ffn_hidden": c.dim("ffn_dim"),
            "vocab": c.dim("vocab_size"), "max_seq_len": c.dim("max_position_embeddings", default=2048),
            "gated_mlp": False, "biases": c.flag("enable_bias", True), "dropout": dropout > 0,
            "learned_positions": True, "position_offset": 2, "embed_dim": embed if embed != hidden else 0,
            "final_norm": pre_ln and not c.flag("_remove_final_layer_norm", False),
            "tied_embeddings": c.flag("tie_word_embeddings", True)}


_MAPPERS: dict[str, Callable[[_Config], dict]] = {
    "llama": _llama, "mistral": _llama, "qwen2": _llama, "qwen3": _llama,
    "mixtral": _mixtral, "qwen3_moe": _qwen3_moe,
    "deepseek_v3": _deepseek, "deepseek_v2": _deepseek,
    "gpt2": _gpt2, "gptj": _gptj, "falcon": _falcon, "opt": _opt,
}


# --- file handling -----------------------------------------------------------------------------

def _parse(path: Path) -> Any:
    text = edge.read_text(path, "model", what="model file")
    if path.suffix.lower() == ".json":
        return edge.load_json(text, path.name)
    return edge.load_yaml(text, path.name)


def _is_hf(d: dict) -> bool:
    if "architectures" in d or "text_config" in d:
        return True
    return "model_type" in d and "family" not in d and "hidden" not in d


def _model_type(d: dict, where: str) -> str:
    mt = d.get("model_type")
    if mt is None and isinstance(d.get("architectures"), list) and d["architectures"]:
        arch = str(d["architectures"][0]).lower()
        for suffix in ("forcausallm", "lmheadmodel", "model"):
            arch = arch.removesuffix(suffix)
        mt = next((k for k in _MAPPERS if k.replace("_", "") == arch), arch)
    if not isinstance(mt, str) or not mt:
        raise InputError(f"{where}:model_type", "required key is missing (or architectures[0] is not recognised)")
    return mt


def _folder_name(path: Path) -> str:
    """The checkpoint folder a config.json sits in; in a Hugging Face cache
    (models--org--name/snapshots/<hash>/config.json) the model's name."""
    folder = path.resolve().parent
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.split("--")[-1]
    return folder.name or path.stem


def _name(d: dict, path: Path) -> str:
    """`_name_or_path`'s last component, else the checkpoint folder (for a file named config.json),
    else the file's stem."""
    raw = d.get("_name_or_path")
    if isinstance(raw, str):
        last = raw.replace("\\", "/").rstrip("/ ").split("/")[-1].strip()
        if last and last not in (".", ".."):
            return last
    return _folder_name(path) if path.name.lower() == "config.json" else path.stem


def _hf_repo(d: dict) -> str:
    """`_name_or_path` when it names a Hub repository (org/name), not a local folder."""
    raw = d.get("_name_or_path")
    if isinstance(raw, str) and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", raw.strip()):
        return raw.strip()
    return ""


def _from_hf(d: dict, path: Path) -> ModelSpec:
    repo = _hf_repo(d)
    where = f"{path.resolve().parent.name}/{path.name}" if path.name.lower() == "config.json" else path.name
    name = _name(d, path)
    if isinstance(d.get("text_config"), dict):
        d = d["text_config"]
        where = f"{where}:text_config"
    elif "text_config" in d and d["text_config"] is not None:
        raise InputError(f"{where}:text_config", "must be a mapping")
    mt = _model_type(d, where)
    mapper = _MAPPERS.get(mt)
    if mapper is None:
        raise InputError(f"{where}:model_type", f"unsupported model_type {mt!r}; supported: {', '.join(sorted(_MAPPERS))} "
                                                "(or describe the model in a parasim YAML with ModelSpec fields)")
    cfg = _Config(d, where, mt)
    fields = mapper(cfg)
    try:
        return ModelSpec(name=name, model_type=mt, source=f"Hugging Face config: {path}",
                         notes="; ".join(cfg.notes), hf_repo=repo, **fields)
    except InputError as e:
        raise InputError(f"{where}:{e.field}", e.message) from None


def _from_parasim(d: dict, path: Path) -> ModelSpec:
    if set(d) == {"model"} and isinstance(d["model"], dict):
        d = d["model"]
    d = dict(d)
    d.setdefault("name", path.stem)
    d.setdefault("source", f"parasim model file: {path}")
    return model_from_mapping(d, where=path.name)


def checkpoint_config(path: Path) -> Path:
    """The config.json of a Hugging Face checkpoint folder."""
    config = path / "config.json"
    if not config.is_file():
        raise InputError("model", f"folder '{path}' holds no config.json (a Hugging Face checkpoint folder has "
                                  "one); give a catalog name, a config.json or a parasim model YAML")
    return config


def load_model_file(path: str | Path) -> ModelSpec:
    """A ModelSpec from a Hugging Face checkpoint folder or its config.json, or a parasim model YAML/JSON."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_config(path)
    elif not path.is_file():
        raise InputError("model", f"'{path}' is neither a catalog model nor an existing file or folder")
    data = _parse(path)
    if not isinstance(data, dict):
        raise InputError(str(path), f"must contain a mapping of keys, got {type(data).__name__}")
    try:
        return _from_hf(data, path) if _is_hf(data) else _from_parasim(data, path)
    except InputError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise InputError(str(path), f"malformed model description ({e.__class__.__name__}: {e})") from None
