"""Per-split bookkeeping of data preparation and the summary table.

Every candidate utterance ends up either kept or dropped under exactly one
reason: the first check it fails, in the order of :data:`DROP_REASONS`,
except ``bad_sample_rate``, which can only happen last (audio is resampled
only once an utterance has passed every other check).
Bad input and ``too_short_for_ctc`` are logged at WARNING with the offending
file; the papers' protocol filters (too long, too few words, Whisper WER) are
expected in bulk and logged at DEBUG.  ``resampled``, ``no_whisper_hyp`` and
``kept_too_short_for_ctc`` count *kept* utterances; the ids of the last (test
sets keep such utterances, see :mod:`.screen`) are listed in the comment column.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from espnet_delta.fileio import write_text_atomic

__all__ = ["BAD_INPUT_REASONS", "DROP_REASONS", "FILTER_REASONS", "NOTES", "SplitStats", "format_summary", "write_summary_tsv"]

logger = logging.getLogger(__name__)

#: Unusable input files, in check order.
BAD_INPUT_REASONS: tuple[str, ...] = (
    "misplaced_file",  # audio or transcript outside the corpus layout's folder depth
    "duplicate_utt_id",  # a second file or transcript line with an id already seen (the first is screened)
    "bad_utt_id",  # utterance or speaker id (from file/folder names) empty or with whitespace
    "missing_transcript",  # audio without a transcript
    "missing_audio",  # transcript line without audio (LibriSpeech)
    "non_utf8_text",  # transcript bytes are not UTF-8
    "unreadable_audio",  # soundfile cannot open/decode the file
    "empty_audio",  # zero frames
    "empty_after_cleaning",  # nothing left after normalize_transcript
    "bad_sample_rate",  # not 16 kHz mono and resampling failed
)
#: Filters of good input: the MyST protocol of the papers (too_few_words, too_long,
#: whisper_wer) and CTC feasibility (fewer SSL frames than the transcript needs).
FILTER_REASONS: tuple[str, ...] = ("too_few_words", "too_long", "too_short_for_ctc", "whisper_wer")
DROP_REASONS: tuple[str, ...] = BAD_INPUT_REASONS + FILTER_REASONS
#: Filters expected to drop many utterances: logged at DEBUG.
_BULK_FILTERS: tuple[str, ...] = ("too_few_words", "too_long", "whisper_wer")
#: Counters about kept utterances.
NOTES: tuple[str, ...] = ("resampled", "no_whisper_hyp", "kept_too_short_for_ctc")


@dataclass
class SplitStats:
    """Counts of one output split (or subset)."""

    name: str
    kept: int = 0
    seconds: float = 0.0
    dropped: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    comment: str = ""
    too_short_for_ctc_kept: list[str] = field(default_factory=list)  # utterance ids

    def keep(self, duration: float) -> None:
        self.kept += 1
        self.seconds += duration

    def drop(self, reason: str, path: str | os.PathLike[str], detail: str = "") -> None:
        """Count a dropped utterance and log it with the file responsible."""
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}")
        self.dropped[reason] += 1
        level = logging.DEBUG if reason in _BULK_FILTERS else logging.WARNING
        logger.log(level, "[%s] dropped (%s): %s%s", self.name, reason, path, f" ({detail})" if detail else "")

    def keep_too_short_for_ctc(self, utt_id: str, path: str | os.PathLike[str], detail: str) -> None:
        """Note (and log) a kept utterance that CTC cannot align; call :meth:`keep` too."""
        self.notes["kept_too_short_for_ctc"] += 1
        self.too_short_for_ctc_kept.append(utt_id)
        logger.warning("[%s] kept although too short for CTC: %s (%s)", self.name, path, detail)

    @property
    def summary_comment(self) -> str:
        """The comment column: the free-text comment and the kept too-short-for-CTC ids."""
        parts = [self.comment] if self.comment else []
        if self.too_short_for_ctc_kept:
            parts.append("kept, too short for CTC: " + " ".join(self.too_short_for_ctc_kept))
        return "; ".join(parts)

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


def _columns() -> list[str]:
    return ["utts", "hours", *DROP_REASONS, *NOTES]


def _row(s: SplitStats) -> list[str]:
    return [str(s.kept), f"{s.hours:.3f}", *(str(s.dropped[r]) for r in DROP_REASONS), *(str(s.notes[n]) for n in NOTES)]


def format_summary(stats: Sequence[SplitStats]) -> str:
    """A plain-text table: one row per metric, one column per split."""
    header = ["", *(s.name for s in stats)]
    rows = [header] + [[col, *values] for col, *values in zip(_columns(), *(_row(s) for s in stats))]
    comments = [f"  {s.name}: {s.summary_comment}" for s in stats if s.summary_comment]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))) for r in rows]
    rule = "-" * len(lines[0])
    text = "\n".join([rule, lines[0], rule, *lines[1:], rule])
    return text + ("\nnotes:\n" + "\n".join(comments) if comments else "")


def write_summary_tsv(stats: Sequence[SplitStats], path: str | os.PathLike[str]) -> Path:
    """One row per split, one column per metric (plus a free-text comment)."""
    lines = ["\t".join(["split", *_columns(), "comment"])]
    lines += ["\t".join([s.name, *_row(s), s.summary_comment]) for s in stats]
    return write_text_atomic(path, "\n".join(lines) + "\n")
