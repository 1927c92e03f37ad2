"""A ModelSpec from a plain mapping of ModelSpec field names: a catalog entry, a parasim model file
or a validation case's model. Below both the catalog and the file reader (`hf_config`), which
each build models through it.
"""

from __future__ import annotations

from typing import Any

from parasim.errors import InputError
from parasim.specs import edge, model_limits
from parasim.specs.model import MLA_FIELDS, MLASpec, ModelSpec


def model_from_mapping(d: dict, *, where: str = "model") -> ModelSpec:
    """Build a ModelSpec from a plain mapping (catalog entry or user YAML); sizes are checked by
    model_limits and switches must be booleans, each error naming `where` and the key."""
    d = dict(d)
    for k in model_limits.SPEC_INT_FIELDS:
        if d.get(k) is not None:
            d[k] = model_limits.spec_size(f"{where}.{k}", k, d[k])
    for k in model_limits.SPEC_BOOL_FIELDS:
        if d.get(k) is not None:
            d[k] = edge.boolean(f"{where}.{k}", d[k])
    try:
        family = d.get("family", "llama")
        hidden = d["hidden"]
        heads = d["heads"]
        mla = d.pop("mla", None)
        if "experts" in d and d["experts"] and family != "moe" and family == "llama":
            family = "moe"
        if d.get("head_dim") is None and hidden % heads:
            raise InputError(f"{where}.heads", f"{heads} does not divide hidden={hidden}; give head_dim "
                                               "when the heads are not hidden / heads wide")
        defaults = {
            "kv_heads": heads,
            "head_dim": hidden // heads,
            "ffn_hidden": 4 * hidden if family == "gpt" else 0,
            "gated_mlp": family != "gpt",
            "biases": family == "gpt",
            "dropout": family == "gpt",
        }
        for k, v in defaults.items():
            if d.get(k) is None:
                d[k] = v
        if family == "moe" and not d.get("moe_ffn_hidden"):
            d["moe_ffn_hidden"] = d["ffn_hidden"]
        d["family"] = family
        if mla is not None:
            d["mla"] = _mla(mla, f"{where}.mla")
        d.setdefault("name", d.get("name") or "custom")
        known = ModelSpec.__dataclass_fields__
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise InputError(f"{where}.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(known))}")
        return ModelSpec(**d)
    except KeyError as e:
        raise InputError(f"{where}.{e.args[0]}", "required field is missing") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, InputError):
            if e.field.startswith("model") and where != "model":  # ModelSpec's own checks: say where
                raise InputError(where + e.field[len("model"):], e.message) from None
            raise
        raise InputError(where, f"malformed model description ({e})") from None


def _mla(m: Any, where: str) -> MLASpec:
    """An `mla:` mapping of a model description: exactly the MLASpec sizes."""
    if not isinstance(m, dict):
        raise InputError(where, f"must be a mapping of the MLA sizes {', '.join(MLA_FIELDS)}")
    unknown = sorted(str(k) for k in m if k not in MLA_FIELDS)
    if unknown:
        raise InputError(f"{where}.{unknown[0]}", f"unknown field; allowed: {', '.join(MLA_FIELDS)}")
    missing = [k for k in MLA_FIELDS if m.get(k) is None and k != "q_lora_rank"]
    if missing:
        raise InputError(f"{where}.{missing[0]}", "required field is missing")
    return MLASpec(**{k: model_limits.spec_size(f"{where}.{k}", k, 0 if m.get(k) is None else m[k])
                      for k in MLA_FIELDS})
