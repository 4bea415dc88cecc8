"""Reproducible nested training subsets by total duration (1 h within 5 h within 10 h).

The utterances of train are sorted by id (so the input order does not
matter), shuffled once with ``random.Random(seed)``, and each subset is the
shortest prefix of that one order whose duration reaches its target.  Nesting
therefore holds by construction, and a subset's duration is in
``[target, target + longest utterance)``.

A target longer than the whole train set is **skipped with a warning**
rather than an error: the same recipe runs on the minute-scale mini corpus
and on full MyST, and a missing optional subset should not throw away a
finished preparation.  Skipped targets are reported in the summary table.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence

from .kaldi_dir import Utterance, c_sort_key

__all__ = ["nested_subsets", "parse_hours", "subset_name"]

logger = logging.getLogger(__name__)

# Tolerance (seconds) so that a target of exactly the train duration, after a
# round trip through hours, is still reachable.
_EPSILON = 1e-6


def parse_hours(spec: str) -> list[float]:
    """``"1,5,10"`` -> ``[1.0, 5.0, 10.0]``; an empty string gives no subsets."""
    try:
        hours = [float(x) for x in spec.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"subset sizes must be comma-separated hours, got {spec!r}") from None
    if any(not h > 0 or h == float("inf") for h in hours):
        raise ValueError(f"subset sizes must be positive hours, got {spec!r}")
    return hours


def subset_name(hours: float, prefix: str = "train") -> str:
    """``1 -> train_1h``, ``0.1 -> train_6min``, ``1.5 -> train_1p5h``, ``0.002 -> train_7p2s``.

    The largest unit in which the size is at least 1 is used; a decimal point
    becomes ``p`` so names stay plain identifiers.
    """
    for unit, scale in (("h", 1.0), ("min", 60.0), ("s", 3600.0)):
        value = round(hours * scale, 6)
        if value >= 1 or unit == "s":
            return f"{prefix}_{value:g}{unit}".replace(".", "p")
    raise AssertionError("unreachable")


def nested_subsets(utts: Iterable[Utterance], hours: Sequence[float], seed: int = 0) -> dict[float, list[Utterance]]:
    """Target hours -> utterances (sorted by id); targets beyond the total are left out."""
    pool = sorted(utts, key=lambda u: c_sort_key(u.utt_id))
    random.Random(seed).shuffle(pool)
    cumulative: list[float] = []
    acc = 0.0
    for u in pool:
        acc += u.duration
        cumulative.append(acc)
    total = acc
    out: dict[float, list[Utterance]] = {}
    for target in sorted(set(hours)):
        seconds = target * 3600.0 - _EPSILON
        if total < seconds:
            logger.warning("skipping %s: train has only %.3f h (< %g h)", subset_name(target), total / 3600.0, target)
            continue
        n = next(i + 1 for i, c in enumerate(cumulative) if c >= seconds)
        out[target] = sorted(pool[:n], key=lambda u: c_sort_key(u.utt_id))
    return out
