"""Reading a command's `-c config.yaml`: one YAML mapping of option names to values.

Both `parasim train` and `parasim serve` accept their flags' names (dashes or underscores) as keys;
what each command then allows is its own business. Errors name the file (and the line for bad YAML).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from parasim.errors import InputError


def read_mapping(path: Path) -> dict[str, Any]:
    """The file's top-level mapping with keys normalised to underscores."""
    if not path.is_file():
        raise InputError("config", f"no such config file: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None)
        raise InputError(f"{path.name}{f' line {mark.line + 1}' if mark else ''}",
                         f"malformed YAML{f' ({problem})' if problem else ''}") from None
    if not isinstance(data, dict):
        raise InputError(path.name, "a config file is a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
