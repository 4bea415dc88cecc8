"""What to merge and how (:class:`MergeConfig`), and what a merge did (:class:`MergeReport`)."""

from __future__ import annotations

import dataclasses
from typing import Counter, Dict, List, Optional, Sequence, Tuple, Union

from .schedule import Schedule, SchedulePlan
from .schedule_file import resolve_schedule

METHODS = ("lerp", "ta", "ties", "sa", "transfer")


@dataclasses.dataclass
class MergeConfig:
    """What to merge and how.

    ``coefs``: lerp: ``[c]`` (weight of M1, default 0.5); ta: one weight per model
    or one shared weight, the task-arithmetic scale (default 1/K each, i.e. the
    average task vector); transfer: ``[scale]`` (default 1.0); not used by sa and ties.
    ``schedule``: SA per-layer ratio: a formula name (``depth_power``,
    ``linear_exponent``, ``adult_power``, with ``sa_lambda``/``sa_alpha``), a schedule YAML file (layer
    groups or explicit c_i, see :mod:`.schedule_file`) or a :class:`Schedule`.
    ``ties_topk``: percent of each task vector kept; ``ties_scale``: scale of the merged one.
    ``keep_m1``: regexes of tensors copied from M1 without any check.
    ``reinit``: regexes of tensors that fine-tuning re-created with another shape (e.g. a
    Whisper ``token_embedding`` for a new token list): where the base's shape differs
    they have no task vector and are treated like head tensors.
    """

    method: str
    coefs: Optional[Sequence[float]] = None
    sa_lambda: float = 0.2
    sa_alpha: float = 0.8
    schedule: Union[str, Schedule] = "depth_power"
    ties_topk: float = 20.0
    ties_scale: float = 1.0
    keep_m1: Sequence[str] = ()
    reinit: Sequence[str] = ()
    _schedule: Optional[Schedule] = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown merge method {self.method!r}; expected one of {METHODS}")
        if self.method == "sa":  # refuse a bad schedule (file) before any checkpoint is read
            self._schedule = resolve_schedule(self.schedule, self.sa_lambda, self.sa_alpha)
        if not 0.0 < self.ties_topk <= 100.0:
            raise ValueError(f"ties_topk is a percentage in (0, 100], got {self.ties_topk}")
        if self.coefs is not None:
            self.coefs = [float(c) for c in self.coefs]
        self.keep_m1 = list(self.keep_m1 or ())
        self.reinit = list(self.reinit or ())

    def sa_schedule(self) -> Schedule:
        """The resolved SA schedule."""
        if self._schedule is None:
            self._schedule = resolve_schedule(self.schedule, self.sa_lambda, self.sa_alpha)
        return self._schedule

    def check_inputs(self, num_models: int, has_base: bool) -> None:
        """Refuse input counts the method is not defined for."""
        m = self.method
        if m in ("lerp", "sa", "transfer") and num_models != 2:
            raise ValueError(f"{m} merges exactly 2 models (M1 M2), got {num_models}")
        if num_models < 1:
            raise ValueError("no models given")
        if m != "lerp" and not has_base:
            raise ValueError(f"{m} needs a base checkpoint (the pre-trained model)")
        if m in ("sa", "ties") and self.coefs is not None:
            raise ValueError(f"{m} takes no coefs (sa: sa_lambda/sa_alpha, ties: ties_scale)")
        n = len(self.coefs) if self.coefs is not None else None
        if m in ("lerp", "transfer") and n not in (None, 1):
            raise ValueError(f"{m} takes a single coefficient, got {n}")
        if m == "ta" and n not in (None, 1, num_models):
            raise ValueError(f"ta takes 1 or {num_models} coefficients, got {n}")

    def model_coefs(self, num_models: int) -> List[float]:
        """The resolved per-method coefficients (see the class docstring for defaults)."""
        if self.method == "lerp":
            return list(self.coefs) if self.coefs else [0.5]
        if self.method == "transfer":
            return list(self.coefs) if self.coefs else [1.0]
        if self.method == "ta":
            if not self.coefs:
                return [1.0 / num_models] * num_models
            return list(self.coefs) * num_models if len(self.coefs) == 1 else list(self.coefs)
        return []


@dataclasses.dataclass
class MergeReport:
    """What a merge did: architecture, tensor counts per action and, for SA, the schedule:
    per-stack c_i (``layer_coefs``), the rule behind each, the extra tensors' c and the
    table written beside the merged model (``schedule_tsv``)."""

    method: str
    architecture: Optional[str]
    layer_coefs: Dict[str, List[float]]
    actions: Counter[str]
    plan: Optional[SchedulePlan] = None
    extra_tensors: Dict[str, Tuple[float, str]] = dataclasses.field(default_factory=dict)
    schedule_tsv: str = ""
