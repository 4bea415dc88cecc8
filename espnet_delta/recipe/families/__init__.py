"""Job families: one module each, ``jobs(settings) -> [Job]`` (see :mod:`espnet_delta.recipe.plan`).

``settings`` is the planner's parsed options (the stage engine's names: ``exp_dir``,
``data_dir``, ``train_set``, ``upstreams``, ``interface_systems`` ...). A family lists its
jobs from the options and systems files alone; each job's ``config`` renders its
``train.yaml`` only when the planner writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from espnet_delta.fileio import load_yaml
from espnet_delta.recipe.names import UNITS


def upstream_entry(table: Dict[str, Any], name: str, where: Path) -> Dict[str, Any]:
    """Entry ``name`` of an upstream table (``conf/upstreams.yaml``), copied."""
    if name not in table:
        raise ValueError(f"{where}: no upstream entry {name!r} (has {sorted(table)})")
    return dict(table[name])


def unit_text(settings, unit: str):
    """(token_type, text file name, token list, best_model_criterion override) of a unit."""
    token_type, text_name, criterion, _ = UNITS[unit]
    token_list = settings.phone_token_list if unit == "phn" else settings.token_list
    return token_type or settings.token_type, text_name, token_list, criterion


def load_systems(path: Path) -> Dict[str, Dict[str, Any]]:
    """A systems file: system name -> options mapping (an empty entry is ``{}``)."""
    systems = load_yaml(path)
    for name, system in systems.items():
        if system is not None and not isinstance(system, dict):
            raise ValueError(f"{path}: system {name!r} must be a mapping, got {system!r}")
    return {name: dict(system or {}) for name, system in systems.items()}


def system_units(path: Path, name: str, system: Dict[str, Any]) -> List[str]:
    """The units a system is trained for (``units``, default all)."""
    units = system.get("units", list(UNITS))
    bad = sorted(set(units) - set(UNITS))
    if bad:
        raise ValueError(f"{path}: system {name!r}: unknown units {bad}; allowed {sorted(UNITS)}")
    return list(units)
