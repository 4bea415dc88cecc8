"""Per-layer merge ratios for selective attention (SA) merging.

SA merging (arXiv 2501.08468) mixes the attention Q/K/V task vectors of the child
model M1 and the adult model M2 as ``theta_base + c_i * tau_1 + (1 - c_i) * tau_2``:
``c_i`` is always the weight of the *child* model (as in the authors' released script,
which applies ``c = lambda ** alpha`` to the first, domain, task vector). The paper
writes the ratio as ``lambda^(alpha_i)`` with lower layers favouring the child; whose
weight that ratio is and how ``alpha_i`` depends on the layer i (i = 0 the bottom
layer) is read in five ways, all kept as data here:

* ``depth_power``: ``c_i = lambda ** (alpha ** (L - 1 - i))``: lambda at the top
  layer, approaching 1 (child) towards the bottom;
* ``linear_exponent``: ``c_i = lambda ** (alpha * i)``: 1 at the bottom layer,
  decaying geometrically towards the adult model;
* ``adult_power``: the ratio is the *adult's* weight, ``1 - c_i = lambda ** (alpha ** i)``,
  so ``c_i = 1 - lambda ** (alpha ** i)``: 1 - lambda at the bottom layer, approaching 0
  (adult) towards the top. The only formula reading under which both sentences of the
  seed's summary hold (lower layers take more of the child, and a smaller lambda
  favours the child at every layer); in the two readings above (and the authors'
  released code) a smaller lambda moves weight to the adult model;
* ``groups`` (the authors' release form): a list of layer groups, each with its own
  ``(lambda, alpha)`` and so ``c = lambda ** alpha``, optionally with extra tensors
  (convolutions, embeddings) given by name patterns; layers in no group keep M1;
* ``explicit``: the c_i of every layer written out.

Every stack (e.g. Whisper's encoder and decoder) is scheduled over its own depth.
YAML files holding a schedule are read by :mod:`.schedule_file`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from typeguard import typechecked

from .errors import ScheduleError

#: the closed-form readings, swept over a (lambda, alpha) grid
FORMULAS = ("depth_power", "linear_exponent", "adult_power")
SCHEDULES = FORMULAS  # the names ``--schedule`` accepts besides a schedule file
KINDS = FORMULAS + ("groups", "explicit")
ALL_STACKS = "*"
CHILD = "not listed: child"


def layer_coefficients(
    num_layers: int, lam: float, alpha: float, schedule: str = "depth_power"
) -> List[float]:
    """Weight c_i of M1 for layers i = 0 (lowest) .. L-1 (top); M2 gets 1 - c_i.

    Every formula gives c in [0, 1] for lambda in [0, 1] and alpha >= 0, so
    c_i * tau_1 + (1 - c_i) * tau_2 stays a convex combination of task vectors.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    _check_lambda_alpha(lam, alpha, "")
    top = num_layers - 1
    if schedule == "depth_power":
        return [lam ** (alpha ** (top - i)) for i in range(num_layers)]
    if schedule == "linear_exponent":
        return [lam ** (alpha * i) for i in range(num_layers)]
    if schedule == "adult_power":  # lambda^(alpha^i) is M2's (the adult's) weight
        return [1.0 - lam ** (alpha**i) for i in range(num_layers)]
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {FORMULAS}")


def _check_lambda_alpha(lam: float, alpha: float, where: str) -> None:
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"{where}lambda must be in [0, 1], got {lam}")
    if alpha < 0.0:
        raise ValueError(f"{where}alpha must be >= 0, got {alpha}")


def schedule_formula(schedule: str) -> str:
    """Human-readable formula of a schedule kind, for logs and reports."""
    return {
        "depth_power": "c_i = lambda^(alpha^(L-1-i))",
        "linear_exponent": "c_i = lambda^(alpha*i)",
        "adult_power": "c_i = 1 - lambda^(alpha^i) (M2's weight lambda^(alpha^i))",
        "groups": "c = lambda^alpha per layer group; other layers keep M1",
        "explicit": "c_i given per layer",
    }[schedule]


@typechecked
@dataclasses.dataclass(frozen=True)
class LayerGroup:
    """One group of the authors' form: the Q/K/V of ``layers`` (in ``stacks``, default
    every stack) and every tensor whose name matches an ``extra`` regex get child
    weight ``c = lam ** alpha``. (lambda = 0 gives c = 0, the adult's, for alpha > 0 and
    c = 1 for alpha = 0; the authors' script keeps the child whenever lambda is 0.)"""

    layers: Tuple[int, ...]
    lam: float
    alpha: float
    extra: Tuple[str, ...] = ()
    stacks: Optional[Tuple[str, ...]] = None

    def __post_init__(self) -> None:
        # sequences given in code become tuples (hashable, immutable like the dataclass)
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        object.__setattr__(self, "extra", tuple(self.extra))
        if self.stacks is not None:
            object.__setattr__(self, "stacks", tuple(self.stacks))
        if not self.layers or any(i < 0 for i in self.layers):
            raise ValueError(f"a group needs layer indices >= 0, got {list(self.layers)}")
        _check_lambda_alpha(self.lam, self.alpha, "group ")
        for pattern in self.extra:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"extra pattern {pattern!r} is not a regular expression: {e}") from e

    @property
    def c(self) -> float:
        return self.lam**self.alpha


@dataclasses.dataclass(frozen=True)
class SchedulePlan:
    """A schedule resolved against a model: per stack, the c_i of every layer and the rule
    that set it; plus the extra (non-Q/K/V) tensor rules as ``(regex, c, rule)``."""

    tables: Dict[str, List[float]]
    rules: Dict[str, List[str]]
    extra: List[Tuple[str, float, str]]


@typechecked
@dataclasses.dataclass(frozen=True)
class Schedule:
    """One SA schedule of any kind (see the module docstring); ``source`` names the file
    it came from, for error messages."""

    kind: str
    lam: float = 0.2
    alpha: float = 0.8
    groups: Tuple[LayerGroup, ...] = ()
    coefficients: Tuple[Tuple[str, Tuple[float, ...]], ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; expected one of {KINDS}")
        if self.kind in FORMULAS:
            _check_lambda_alpha(self.lam, self.alpha, "")
        if self.kind == "groups" and not self.groups:
            raise ScheduleError(f"{self._where()}a groups schedule needs at least one group")
        if self.kind == "explicit":
            if not self.coefficients:
                raise ScheduleError(f"{self._where()}an explicit schedule needs coefficients")
            for stack, coefs in self.coefficients:
                bad = [c for c in coefs if not 0.0 <= c <= 1.0]
                if bad or not coefs:
                    raise ScheduleError(f"{self._where()}coefficients of {stack!r} must be in [0, 1], got {list(coefs)}")

    @classmethod
    def formula(cls, kind: str, lam: float, alpha: float) -> "Schedule":
        if kind not in FORMULAS:
            raise ValueError(f"unknown schedule {kind!r}; expected one of {FORMULAS}")
        return cls(kind, lam=lam, alpha=alpha)

    @classmethod
    def explicit(cls, coefficients: Mapping[str, Sequence[float]], source: str = "") -> "Schedule":
        """``{stack: [c_0, .., c_{L-1}]}``; the stack ``"*"`` applies to every stack."""
        pairs = tuple((str(s), tuple(float(c) for c in cs)) for s, cs in coefficients.items())
        return cls("explicit", coefficients=pairs, source=source)

    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""

    def describe(self) -> str:
        """One line for logs: kind, formula and parameters."""
        text = f"{self.kind}: {schedule_formula(self.kind)}"
        if self.kind in FORMULAS:
            text += f" (lambda={self.lam:g}, alpha={self.alpha:g})"
        elif self.kind == "groups":
            text += " (" + "; ".join(
                f"layers {_ranges(g.layers)}{'' if g.stacks is None else ' of ' + '/'.join(g.stacks)}: "
                f"lambda={g.lam:g} alpha={g.alpha:g} c={g.c:.6g}" + (f" + {len(g.extra)} extra" if g.extra else "")
                for g in self.groups
            ) + ")"
        return text + (f" from {self.source}" if self.source else "")

    def plan(self, depths: Mapping[str, int]) -> SchedulePlan:
        """Resolve against a model whose stacks have ``depths`` layers; refuses a layer or
        stack the model lacks and a layer that two groups claim."""
        if self.kind in FORMULAS:
            tables = {s: layer_coefficients(n, self.lam, self.alpha, self.kind) for s, n in depths.items()}
            return SchedulePlan(tables, {s: [self.kind] * n for s, n in depths.items()}, [])
        tables = {s: [1.0] * n for s, n in depths.items()}
        rules = {s: [CHILD] * n for s, n in depths.items()}
        if self.kind == "explicit":
            self._plan_explicit(depths, tables, rules)
            return SchedulePlan(tables, rules, [])
        extra = []
        for k, group in enumerate(self.groups, start=1):
            label = f"group {k} (lambda={group.lam:g}, alpha={group.alpha:g})"
            for stack in self._stacks(group.stacks, depths, f"group {k}"):
                for layer in group.layers:
                    if layer >= depths[stack]:
                        raise ScheduleError(
                            f"{self._where()}group {k} lists layer {layer}, but the {stack} has "
                            f"{depths[stack]} layers (0..{depths[stack] - 1}); restrict the group with 'stacks'"
                        )
                    if rules[stack][layer] != CHILD:
                        raise ScheduleError(
                            f"{self._where()}layer {layer} of the {stack} is in two groups "
                            f"({rules[stack][layer].split(' (')[0]} and group {k})"
                        )
                    tables[stack][layer] = group.c
                    rules[stack][layer] = label
            extra.extend((pattern, group.c, label) for pattern in group.extra)
        return SchedulePlan(tables, rules, extra)

    def _plan_explicit(self, depths: Mapping[str, int], tables: Dict[str, List[float]], rules: Dict[str, List[str]]) -> None:
        for name, coefs in self.coefficients:
            for stack in self._stacks(None if name == ALL_STACKS else (name,), depths, "coefficients"):
                if len(coefs) != depths[stack]:
                    raise ScheduleError(
                        f"{self._where()}{len(coefs)} coefficients given for the {stack}, which has {depths[stack]} layers"
                    )
                tables[stack] = list(coefs)
                rules[stack] = ["explicit"] * len(coefs)

    def _stacks(self, wanted: Optional[Sequence[str]], depths: Mapping[str, int], what: str) -> List[str]:
        if wanted is None:
            return list(depths)
        missing = [s for s in wanted if s not in depths]
        if missing:
            raise ScheduleError(f"{self._where()}{what} names stack(s) {missing}; the model has {sorted(depths)}")
        return list(wanted)


def _ranges(layers: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    out, ordered = [], sorted(set(layers))
    start = prev = ordered[0]
    for i in ordered[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(out)


def format_coefficient_table(
    tables: Mapping[str, Sequence[float]], rules: Optional[Mapping[str, Sequence[str]]] = None
) -> str:
    """A fixed-width table ``stack layer c_i 1-c_i [rule]`` (one row per layer, bottom first)."""
    lines = [f"{'stack':<10} {'layer':>5} {'c_i (M1)':>10} {'1-c_i (M2)':>11}" + ("  rule" if rules else "")]
    for stack, coefs in tables.items():
        for i, c in enumerate(coefs):
            rule = f"  {rules[stack][i]}" if rules else ""
            lines.append(f"{stack:<10} {i:>5d} {c:>10.6f} {1.0 - c:>11.6f}{rule}")
    return "\n".join(lines)


def schedule_tsv(plan: SchedulePlan, extra_tensors: Mapping[str, Tuple[float, str]]) -> str:
    """The table written next to a merged model: one row per layer of every stack, then one
    per extra tensor (``stack`` column ``tensor``, ``layer`` column its name)."""
    lines = ["stack\tlayer\tc_child\tc_adult\trule"]
    for stack, coefs in plan.tables.items():
        for i, c in enumerate(coefs):
            lines.append(f"{stack}\t{i}\t{c:.9g}\t{1.0 - c:.9g}\t{plan.rules[stack][i]}")
    for key, (c, rule) in extra_tensors.items():
        lines.append(f"tensor\t{key}\t{c:.9g}\t{1.0 - c:.9g}\t{rule}")
    return "\n".join(lines) + "\n"


def log_schedule(schedule: Schedule, plan: SchedulePlan, extra_tensors: Mapping[str, Tuple[float, str]]) -> None:
    """Log the per-layer ratios so every merged model documents how it was built."""
    logging.info("SA merge schedule %s", schedule.describe())
    for line in format_coefficient_table(plan.tables, plan.rules).splitlines():
        logging.info("%s", line)
    for key, (c, rule) in extra_tensors.items():
        logging.info("extra tensor %s: c=%.6f (%s)", key, c, rule)


def coefficient_tables(
    num_layers: Mapping[str, int], lam: float, alpha: float, schedule: str
) -> Dict[str, List[float]]:
    """One formula schedule per layer stack (e.g. Whisper's encoder and decoder), each over its own depth."""
    return Schedule.formula(schedule, lam, alpha).plan(num_layers).tables
