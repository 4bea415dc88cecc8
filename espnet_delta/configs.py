"""Small YAML helpers shared by the stage scripts: load with file names in errors, dotted keys, atomic writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import yaml

from espnet_delta.fileio import write_text_atomic


def load_yaml(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def set_dotted(config: Dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(c, "a.b.c", v)`` sets ``c["a"]["b"]["c"] = v``, creating mappings."""
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {key}: {part} is not a mapping")
        node = child
    node[parts[-1]] = value


def write_yaml_atomic(data: Dict[str, Any], out: Path) -> Path:
    return write_text_atomic(out, yaml.safe_dump(data, sort_keys=False))
