"""Inputs seen through M1's key space, and the checks made before any arithmetic.

Every refusal names the offending tensor (and file), see :mod:`.errors`.
"""

from __future__ import annotations

import logging
import re
from typing import Dict, Optional, Sequence

import torch

from .arch import detect_architecture
from .checkpoint import Checkpoint
from .errors import ArchitectureMismatchError, KeyMismatchError, ShapeMismatchError

Pattern = Optional["re.Pattern[str]"]


def any_of(patterns: Sequence[str]) -> Pattern:
    """One regex searching for any of ``patterns`` (None for none)."""
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


class Aligned:
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
    """A bare base covers only M1's upstream tensors (all of M1 when M1 has no upstream
    prefix); an ESPnet base covers all of M1."""
    if base.is_bare_upstream and ref.prefixes is not None:
        return ref.upstream_name(key) is not None
    return True


def _detect(ckpt: Checkpoint) -> tuple[Optional[str], Optional[str]]:
    """(arch, evidence key as stored in ``ckpt``)."""
    arch, name = detect_architecture(ckpt.arch_names())
    if name is not None and ckpt.prefixes is not None:
        name = ckpt.own_key(name) or name
    return arch, name


def check_architectures(inputs: Sequence[Aligned], ref: Checkpoint) -> Optional[str]:
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


def check_key_sets(ref: Checkpoint, models: Sequence[Aligned], base: Optional[Aligned], keep: Pattern) -> None:
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


def drop_reinitialised(ref: Checkpoint, base: Aligned, reinit: Pattern) -> None:
    """Forget the base's counterpart of tensors matching ``reinit`` whose shape differs
    (re-created at fine-tuning, e.g. a token embedding for a new token list): they have
    no task vector and are merged like head tensors."""
    if reinit is None:
        return
    for key in list(base.index):
        if key in ref.state and reinit.search(key) and base.get(key).shape != ref.state[key].shape:
            logging.info(
                "%s: base has shape %s, M1 %s: re-initialised at fine-tuning, no task vector",
                key, tuple(base.get(key).shape), tuple(ref.state[key].shape),
            )  # fmt: skip
            del base.index[key]


def check_tensors(ref: Checkpoint, inputs: Sequence[Aligned], keep: Pattern) -> None:
    """Shapes and dtypes must agree; checked before any arithmetic (metadata only, so
    memory-mapped inputs are not read). The base may hold another floating-point dtype
    (openai-whisper's released checkpoints are float16): it is cast to M1's."""
    for key, t1 in ref.state.items():
        if keep is not None and keep.search(key):
            continue
        for other in inputs:
            if not other.has(key):
                continue
            t = other.get(key)
            dtype_ok = t.dtype == t1.dtype or (
                other.role == "base" and t.dtype.is_floating_point and t1.dtype.is_floating_point
            )
            if t.shape != t1.shape or not dtype_ok:
                raise ShapeMismatchError(
                    f"tensor {other.describe(key)}: M1 has {tuple(t1.shape)} {t1.dtype}, "
                    f"{other.role} ({other.ckpt.name}) has {tuple(t.shape)} {t.dtype}",
                    key,
                )
