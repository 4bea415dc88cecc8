"""Errors raised by model merging; each names the tensor that caused it when there is one."""

from __future__ import annotations

from typing import Optional


class MergeError(ValueError):
    """Inputs that cannot be merged. ``key`` is the first offending tensor name (or None)."""

    def __init__(self, message: str, key: Optional[str] = None):
        super().__init__(message)
        self.key = key


class CheckpointFormatError(MergeError):
    """A file that is not one of the supported checkpoint containers."""


class ArchitectureMismatchError(MergeError):
    """Inputs of different (or, for SA merging, unknown) architectures."""


class KeyMismatchError(MergeError):
    """A tensor present in one input but missing from another."""


class ShapeMismatchError(MergeError):
    """A tensor whose shape or dtype differs between inputs."""


class ScheduleError(MergeError):
    """An SA schedule that cannot be applied: a bad schedule file, a layer the model lacks, overlapping groups."""
