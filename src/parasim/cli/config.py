"""Reading a command's `-c config.yaml`: one YAML mapping of option names to values.

Both `parasim train` and `parasim serve` accept their flags' names (dashes or underscores) as keys;
each command then checks every value against its table (cli.limits). The file is read through
specs.edge (size, encoding, alias expansion bounded), and errors name the file (and the line for bad YAML).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parasim.errors import InputError
from parasim.specs import edge


def read_mapping(path: Path) -> dict[str, Any]:
    """The file's top-level mapping with keys normalised to underscores."""
    data = edge.load_yaml_file(path, "config", what="config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(Path(path).name, "a config file is a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
