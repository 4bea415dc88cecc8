"""SA schedules written as YAML files (the forms of :mod:`.schedule`).

Groups, the authors' release form: a list (or ``{groups: [...]}``) of

    - layers: [0, 3]          # [first, last], inclusive; or "0-3,6" / a single int
      lambda: 0.3             # c = lambda ** alpha is M1's (the child's) weight
      alpha: 0.7
      extra: ['conv[12]\\.', 'positional_embedding', 'token_embedding\\.']   # optional regexes
      stacks: [encoder]       # optional; default: every stack (Whisper: encoder and decoder)

A two-element list is always the range [first, last]; other lists name the layers
themselves; write two separate layers as the string "2,5". Layers in no group keep M1.

Explicit: ``{coefficients: {encoder: [c_0, ...], decoder: [...]}}`` or
``{coefficients: [c_0, ...]}`` (one list for every stack); stacks not named keep M1.

Formula: ``{schedule: depth_power, lambda: 0.3, alpha: 0.7}`` (or ``linear_exponent``,
``adult_power``: any name of :data:`.schedule.FORMULAS`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Mapping, Tuple, Union

import yaml

from espnet_delta.fileio import TableError, read_text_file, yaml_problem

from .errors import ScheduleError
from .schedule import FORMULAS, LayerGroup, Schedule

GROUP_KEYS = ("layers", "lambda", "alpha", "extra", "stacks")


def parse_layers(spec: Any, where: str) -> Tuple[int, ...]:
    """Layer indices of a group: ``[first, last]``, a longer list, an int or ``"0-3,6"``."""
    if isinstance(spec, bool):
        raise ScheduleError(f"{where}: layers must be integers, got {spec!r}")
    if isinstance(spec, int):
        return (spec,)
    if isinstance(spec, str):
        layers: List[int] = []
        for part in spec.replace(" ", "").split(","):
            first, _, last = part.partition("-")
            if not first.isdigit() or (last and not last.isdigit()):
                raise ScheduleError(f"{where}: cannot read layers {spec!r} (expected e.g. '0-3,6')")
            layers.extend(range(int(first), int(last or first) + 1))
        return tuple(layers)
    if isinstance(spec, list) and spec and all(isinstance(i, int) and not isinstance(i, bool) for i in spec):
        if len(spec) == 2:
            first, last = spec
            if first > last:
                raise ScheduleError(
                    f"{where}: layers {spec} is read as [first, last] but first > last; "
                    f"write the two layers as the string '{first},{last}'"
                )
            return tuple(range(first, last + 1))
        return tuple(spec)
    raise ScheduleError(f"{where}: layers must be [first, last], a list of ints, an int or a string like '0-3,6'; got {spec!r}")


def _number(entry: Mapping, key: str, where: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScheduleError(f"{where}: '{key}' must be a number, got {value!r}")
    return float(value)


def _str_list(value: Any, key: str, where: str) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScheduleError(f"{where}: '{key}' must be a list of strings, got {value!r}")
    return tuple(value)


def parse_group(entry: Any, where: str) -> LayerGroup:
    if not isinstance(entry, Mapping):
        raise ScheduleError(f"{where}: a group is a mapping with keys {GROUP_KEYS}, got {entry!r}")
    unknown = sorted(set(map(str, entry)) - set(GROUP_KEYS))
    if unknown:
        raise ScheduleError(f"{where}: unknown key(s) {unknown}; a group has {GROUP_KEYS}")
    for key in ("layers", "lambda", "alpha"):
        if key not in entry:
            raise ScheduleError(f"{where}: missing '{key}'")
    extra = _str_list(entry["extra"], "extra", where) if entry.get("extra") is not None else ()
    stacks = _str_list(entry["stacks"], "stacks", where) if entry.get("stacks") is not None else None
    try:
        return LayerGroup(
            parse_layers(entry["layers"], where),
            _number(entry, "lambda", where),
            _number(entry, "alpha", where),
            extra,
            stacks,
        )
    except ValueError as e:
        if isinstance(e, ScheduleError):
            raise
        raise ScheduleError(f"{where}: {e}") from e


def schedule_from_object(obj: Any, source: str = "schedule") -> Schedule:
    """A :class:`Schedule` from loaded YAML (see the module docstring for the forms)."""
    if isinstance(obj, list):
        obj = {"groups": obj}
    if not isinstance(obj, Mapping):
        raise ScheduleError(f"{source}: expected a list of groups or a mapping, got {type(obj).__name__}")
    forms = [k for k in ("groups", "coefficients", "schedule") if k in obj]
    if len(forms) != 1:
        raise ScheduleError(f"{source}: give exactly one of 'groups', 'coefficients', 'schedule'; found {forms or sorted(map(str, obj))}")
    form = forms[0]
    allowed = {"groups": {"groups"}, "coefficients": {"coefficients"}, "schedule": {"schedule", "lambda", "alpha"}}[form]
    unknown = sorted(set(map(str, obj)) - allowed)
    if unknown:
        raise ScheduleError(f"{source}: unknown key(s) {unknown} in a '{form}' schedule")
    try:
        if form == "groups":
            if not isinstance(obj["groups"], list) or not obj["groups"]:
                raise ScheduleError(f"{source}: 'groups' must be a non-empty list")
            groups = tuple(parse_group(g, f"{source}: group {k}") for k, g in enumerate(obj["groups"], start=1))
            return Schedule("groups", groups=groups, source=source)
        if form == "coefficients":
            coefs = obj["coefficients"]
            if isinstance(coefs, list):
                coefs = {"*": coefs}
            if not isinstance(coefs, Mapping) or not all(
                isinstance(v, list) and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v)
                for v in coefs.values()
            ):
                raise ScheduleError(f"{source}: 'coefficients' must be a list of numbers or {{stack: list}}")
            return Schedule.explicit(coefs, source=source)
        if obj["schedule"] not in FORMULAS:
            raise ScheduleError(f"{source}: schedule must be one of {FORMULAS}, got {obj['schedule']!r}")
        return Schedule(obj["schedule"], _number(obj, "lambda", source), _number(obj, "alpha", source), source=source)
    except ScheduleError:
        raise
    except ValueError as e:
        raise ScheduleError(f"{source}: {e}") from e


def load_schedule(path: Union[str, "os.PathLike[str]"]) -> Schedule:
    """Read a schedule file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such schedule file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        obj = yaml.safe_load(read_text_file(path, "schedule file"))
    except TableError as e:  # not UTF-8: names the file and line
        raise ScheduleError(str(e)) from None
    except yaml.YAMLError as e:
        raise ScheduleError(f"{path}: not valid YAML: {yaml_problem(e)}") from None
    if obj is None:
        raise ScheduleError(f"{path}: the schedule file is empty")
    return schedule_from_object(obj, str(path))


def resolve_schedule(spec: Union[str, Schedule], lam: float, alpha: float) -> Schedule:
    """``spec`` is a :class:`Schedule`, a formula name (with ``lam``, ``alpha``) or a schedule file."""
    if isinstance(spec, Schedule):
        return spec
    if spec in FORMULAS:
        return Schedule.formula(spec, lam, alpha)
    if not isinstance(spec, (str, os.PathLike)) or not (str(spec).endswith((".yaml", ".yml")) or Path(spec).is_file()):
        raise ValueError(f"unknown schedule {spec!r}; expected one of {FORMULAS} or a schedule .yaml file")
    return load_schedule(spec)
