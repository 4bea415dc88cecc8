"""Streaming driver: align checkpoints, check them, and merge tensor by tensor.

Output keys, order, shapes and dtypes are exactly those of M1 (the first model), so
an ESPnet M1 gives a state dict that ESPnet loads with strict loading, and a bare
S3PRL M1 gives a checkpoint S3PRL's ``*_local`` upstreams load.

Tensors without a task vector ("head" tensors: present in the fine-tuned models but
not in the base, e.g. ``ctc.ctc_lo.*`` or ``frontend.featurizer.weights`` when the
base is a bare S3PRL upstream) are handled per method:

========== ============================================================
method     head tensors (no base counterpart)
========== ============================================================
lerp       interpolated like every other tensor (lerp needs no base)
ta         copied from M1
ties       copied from M1
sa         copied from M1 (as is every non-Q/K/V tensor)
transfer   copied from M1 (the target model)
========== ============================================================

Integer/bool (any non-floating) tensors, e.g. ``num_batches_tracked`` or position
ids, are copied from M1 for every method. ``keep_m1`` regexes copy the matching
tensors from M1 without any check against the other inputs (e.g. ``^ctc\\.`` when
the token lists differ).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
from typing import Counter, Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from . import ops
from .arch import attention_qkv_layer, detect_architecture, num_layers
from .checkpoint import Checkpoint, PathLike, load_checkpoint, save_checkpoint
from .errors import (
    ArchitectureMismatchError,
    KeyMismatchError,
    MergeError,
    ShapeMismatchError,
)
from .schedule import SCHEDULES, coefficient_tables, log_coefficient_table

METHODS = ("lerp", "ta", "ties", "sa", "transfer")


@dataclasses.dataclass
class MergeConfig:
    """What to merge and how.

    ``coefs``: lerp: ``[c]`` (weight of M1, default 0.5); ta: one weight per model
    or one shared weight (default 1/K each, i.e. the average task vector);
    transfer: ``[scale]`` (default 1.0); not used by sa and ties.
    ``sa_lambda``/``sa_alpha``/``schedule``: SA per-layer ratio, see :mod:`.schedule`.
    ``ties_topk``: percent of each task vector kept; ``ties_scale``: scale of the merged one.
    """

    method: str
    coefs: Optional[Sequence[float]] = None
    sa_lambda: float = 0.2
    sa_alpha: float = 0.8
    schedule: str = "depth_power"
    ties_topk: float = 20.0
    ties_scale: float = 1.0
    keep_m1: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown merge method {self.method!r}; expected one of {METHODS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if not 0.0 < self.ties_topk <= 100.0:
            raise ValueError(f"ties_topk is a percentage in (0, 100], got {self.ties_topk}")
        if self.coefs is not None:
            self.coefs = [float(c) for c in self.coefs]
        self.keep_m1 = list(self.keep_m1 or ())

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
    """What a merge did: architecture, per-layer SA ratios and tensor counts per action."""

    method: str
    architecture: Optional[str]
    layer_coefs: Dict[str, List[float]]
    actions: Counter[str]


class _Aligned:
    """One input seen through M1's key space (``ref key -> own key``)."""

    def __init__(self, ckpt: Checkpoint, ref: Checkpoint, role: str):
        self.ckpt = ckpt
        self.role = role
        self.index: Dict[str, str] = {}
        for key in ckpt.state:
            ref_key = ckpt.key_in(key, ref)
            if ref_key is None:
                raise KeyMismatchError(
                    f"{role} ({ckpt.name}) has tensor '{key}' with no counterpart in M1 "
                    f"({ref.name}, a {ref.container} checkpoint)",
                    key,
                )
            self.index[ref_key] = key

    def has(self, ref_key: str) -> bool:
        return ref_key in self.index

    def get(self, ref_key: str) -> torch.Tensor:
        return self.ckpt.state[self.index[ref_key]]

    def describe(self, ref_key: str) -> str:
        own = self.index.get(ref_key, ref_key)
        return f"'{ref_key}'" + (f" (as '{own}')" if own != ref_key else "")

    def release(self, ref_key: str) -> None:
        """Drop the reference to a tensor that is no longer needed (frees non-mmapped memory)."""
        self.ckpt.state.pop(self.index[ref_key], None)


def _expects_in_base(ref: Checkpoint, base: Checkpoint, key: str) -> bool:
    """A bare upstream base covers only M1's upstream tensors (all of M1 when M1 has no
    upstream prefix); an ESPnet base covers all of M1."""
    if base.is_bare_upstream and ref.upstream_prefix is not None:
        return ref.upstream_name(key) is not None
    return True


def _detect(ckpt: Checkpoint) -> tuple[Optional[str], Optional[str]]:
    """(arch, evidence key as stored in ``ckpt``)."""
    arch, name = detect_architecture(ckpt.arch_names())
    if name is not None and ckpt.upstream_prefix:
        name = ckpt.upstream_prefix + name
    return arch, name


def _check_architectures(inputs: Sequence[_Aligned], ref: Checkpoint) -> Optional[str]:
    """All inputs must be of M1's architecture; the error names the key that told them apart."""
    arch, evidence = _detect(ref)
    for other in inputs:
        other_arch, other_evidence = _detect(other.ckpt)
        if other_arch != arch:
            key = other_evidence or evidence
            raise ArchitectureMismatchError(
                f"architecture mismatch: M1 ({ref.name}) is {arch or 'unknown'}"
                + (f" (key '{evidence}')" if evidence else "")
                + f" but {other.role} ({other.ckpt.name}) is {other_arch or 'unknown'}"
                + (f" (key '{other_evidence}')" if other_evidence else ""),
                key,
            )
    return arch


def _check_key_sets(
    ref: Checkpoint, models: Sequence[_Aligned], base: Optional[_Aligned], keep: "re.Pattern[str] | None"
) -> None:
    def kept(key: str) -> bool:
        return bool(keep and keep.search(key))

    for other in models:
        for key in ref.state:
            if not kept(key) and not other.has(key):
                raise KeyMismatchError(
                    f"{other.role} ({other.ckpt.name}) lacks tensor '{key}' of M1", key
                )
        for key in other.index:
            if key not in ref.state and not kept(key):
                raise KeyMismatchError(
                    f"{other.role} ({other.ckpt.name}) has tensor {other.describe(key)} "
                    f"that M1 ({ref.name}) lacks",
                    key,
                )
    if base is None:
        return
    for key in base.index:
        if key not in ref.state and not kept(key):
            raise KeyMismatchError(
                f"base ({base.ckpt.name}) has tensor {base.describe(key)} that M1 ({ref.name}) lacks",
                key,
            )
    for key in ref.state:
        if not kept(key) and _expects_in_base(ref, base.ckpt, key) and not base.has(key):
            raise KeyMismatchError(f"base ({base.ckpt.name}) lacks tensor '{key}' of M1", key)


def _check_tensors(
    ref: Checkpoint, inputs: Sequence[_Aligned], keep: "re.Pattern[str] | None"
) -> None:
    """Shapes and dtypes must agree; checked before any arithmetic (metadata only, so
    memory-mapped inputs are not read)."""
    for key, t1 in ref.state.items():
        if keep is not None and keep.search(key):
            continue
        for other in inputs:
            if not other.has(key):
                continue
            t = other.get(key)
            if t.shape != t1.shape or t.dtype != t1.dtype:
                raise ShapeMismatchError(
                    f"tensor {other.describe(key)}: M1 has {tuple(t1.shape)} {t1.dtype}, "
                    f"{other.role} ({other.ckpt.name}) has {tuple(t.shape)} {t.dtype}",
                    key,
                )


def merge(
    models: Sequence[Checkpoint],
    config: MergeConfig,
    base: Optional[Checkpoint] = None,
    progress: bool = True,
    release_inputs: bool = False,
) -> tuple[Dict[str, torch.Tensor], MergeReport]:
    """Merge ``models`` (M1 first) into a new state dict in M1's key space.

    Tensors are processed one key at a time, so besides the inputs only the output
    and one tensor's temporaries are alive. With ``release_inputs`` each input
    tensor is dropped from its checkpoint once used (the inputs are consumed), which
    keeps peak memory near the size of the inputs even without memory-mapping.
    """
    config.check_inputs(len(models), base is not None)
    ref = models[0]
    if config.method == "lerp" and base is not None:
        logging.info("lerp does not use the base checkpoint %s", base.name)
        base = None
    others = [_Aligned(m, ref, f"M{k + 1}") for k, m in enumerate(models[1:], start=1)]
    aligned_base = _Aligned(base, ref, "base") if base is not None else None
    arch = _check_architectures(others + ([aligned_base] if aligned_base else []), ref)
    keep = re.compile("|".join(f"(?:{p})" for p in config.keep_m1)) if config.keep_m1 else None
    _check_key_sets(ref, others, aligned_base, keep)
    _check_tensors(ref, others + ([aligned_base] if aligned_base else []), keep)

    layer_coefs: Dict[str, List[float]] = {}
    sa_ratio: Dict[str, float] = {}  # Q/K/V key -> c_i of its layer
    if config.method == "sa":
        layer_coefs, sa_ratio = _sa_plan(ref, arch, config)
    coefs = config.model_coefs(len(models))
    logging.info(
        "merging %d model(s) with %s%s; architecture: %s",
        len(models),
        config.method,
        f" (coefs {coefs})" if coefs else "",
        arch or "unknown",
    )

    out: Dict[str, torch.Tensor] = {}
    actions: Counter[str] = collections.Counter()
    for key in tqdm(list(ref.state), desc=f"merge[{config.method}]", unit="tensor", disable=not progress):
        t1 = ref.state[key]
        result, action = _merge_one(key, t1, others, aligned_base, config, coefs, sa_ratio, keep)
        out[key] = result
        actions[action] += 1
        if release_inputs:
            for other in others + ([aligned_base] if aligned_base else []):
                if other.has(key):
                    other.release(key)
            ref.state.pop(key)
    logging.info("merge done: %s", ", ".join(f"{k}={v}" for k, v in sorted(actions.items())))
    return out, MergeReport(config.method, arch, layer_coefs, actions)


def _sa_plan(
    ref: Checkpoint, arch: Optional[str], config: MergeConfig
) -> tuple[Dict[str, List[float]], Dict[str, float]]:
    """Per-stack c_i tables (logged) and the ratio of every Q/K/V tensor of M1."""
    if arch is None:
        raise ArchitectureMismatchError(
            f"SA merging needs a known architecture; no name pattern matched M1 ({ref.name})"
        )
    tables = coefficient_tables(
        num_layers(arch, ref.arch_names()), config.sa_lambda, config.sa_alpha, config.schedule
    )
    ratio: Dict[str, float] = {}
    for key in ref.state:
        name = key if ref.upstream_prefix is None else ref.upstream_name(key)
        where = None if name is None else attention_qkv_layer(arch, name)
        if where is not None:
            stack, layer = where
            ratio[key] = tables[stack][layer]
    if not ratio:
        raise ArchitectureMismatchError(f"SA merging found no attention Q/K/V tensors in M1 ({ref.name})")
    log_coefficient_table(tables, config.schedule, config.sa_lambda, config.sa_alpha)
    logging.info("SA merge: %d Q/K/V tensors are merged, all others come from M1", len(ratio))
    return tables, ratio


def _merge_one(
    key: str,
    t1: torch.Tensor,
    others: Sequence[_Aligned],
    base: Optional[_Aligned],
    config: MergeConfig,
    coefs: List[float],
    sa_ratio: Dict[str, float],
    keep: "re.Pattern[str] | None",
) -> tuple[torch.Tensor, str]:
    """(merged tensor, action) for one key; see the module docstring for the rules."""
    if keep is not None and keep.search(key):
        return t1, "keep_m1"
    if not t1.is_floating_point():
        return t1, "int_from_m1"
    in_base = base is not None and base.has(key)
    method = config.method
    if method == "lerp":
        return ops.lerp(t1, others[0].get(key), coefs[0]), "merged"
    if not in_base:
        return t1, "head_from_m1"
    b = base.get(key)
    if method == "ta":
        return ops.task_arithmetic(b, [t1] + [o.get(key) for o in others], coefs), "merged"
    if method == "ties":
        thetas = [t1] + [o.get(key) for o in others]
        return ops.ties(b, thetas, config.ties_topk, config.ties_scale), "merged"
    if method == "transfer":
        return ops.transfer(t1, others[0].get(key), b, coefs[0]), "merged"
    if key not in sa_ratio:  # sa: everything but the attention Q/K/V projections
        return t1, "from_m1"
    return ops.selective_attention(b, t1, others[0].get(key), sa_ratio[key]), "merged"


def merge_files(
    model_paths: Sequence[PathLike],
    out_path: PathLike,
    config: MergeConfig,
    base_path: Optional[PathLike] = None,
    upstream_prefix: Optional[str] = None,
    allow_pickle: bool = False,
    progress: bool = True,
) -> MergeReport:
    """Load, merge and save; the output has M1's container (ESPnet or S3PRL)."""
    config.check_inputs(len(model_paths), base_path is not None)
    models = [load_checkpoint(p, str(p), upstream_prefix, allow_pickle) for p in model_paths]
    base = None
    if base_path is not None and config.method == "lerp":
        logging.info("lerp does not use the base checkpoint %s", base_path)
    elif base_path is not None:
        base = load_checkpoint(base_path, str(base_path), upstream_prefix, allow_pickle)
    template = dataclasses.replace(models[0], state={})
    state, report = merge(models, config, base, progress=progress, release_inputs=True)
    path = save_checkpoint(template, state, out_path)
    logging.info("wrote merged %s checkpoint to %s", template.container, path)
    return report


__all__ = ["METHODS", "MergeConfig", "MergeError", "MergeReport", "merge", "merge_files"]
