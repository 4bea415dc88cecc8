"""Pair reference and hypothesis ``text`` files into normalised, aligned utterances."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

from espnet_delta.data.kaldi_dir import c_sort_key
from espnet_delta.data.text_norm import normalize_transcript
from espnet_delta.fileio import TableError, read_table

from espnet_delta.data.word_align import Counts, Op, alignment_ops, counts_from_ops, steps_from_ops

__all__ = ["ScoredUtterance", "ScoringInputError", "pair_utterances"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class ScoringInputError(TableError):
    """An input of the scorer (text, utt2spk, score dir) is invalid; the message names the file."""


def _read_text(path: Path, what: str) -> dict[str, str]:
    """``<utt_id> <words...>`` lines (Kaldi ``text``, ``utt2spk``); an id alone = empty
    transcript; blank lines skipped; repeated ids and non-UTF-8 refused."""
    return {row.key: row.value for row in read_table(path, what=what, skip_blank=True, error=ScoringInputError)}


@dataclass(frozen=True)
class ScoredUtterance:
    """One reference utterance, its (possibly empty) hypothesis and their alignment.

    ``ref`` and ``hyp`` hold the normalised words, ``ops`` the sclite-compatible
    alignment as a string of ``C``/``S``/``D``/``I``
    (:func:`~espnet_delta.data.word_align.alignment_ops`).
    """

    utt_id: str
    spk_id: str
    ref: tuple[str, ...]
    hyp: tuple[str, ...]
    ops: str

    @classmethod
    def align(cls, utt_id: str, spk_id: str, ref: Sequence[str], hyp: Sequence[str]) -> "ScoredUtterance":
        """Build one by aligning ``ref`` with ``hyp``."""
        ref, hyp = tuple(ref), tuple(hyp)
        return cls(utt_id, spk_id, ref, hyp, alignment_ops(ref, hyp))

    @cached_property
    def counts(self) -> Counts:
        return counts_from_ops(self.ops)

    def steps(self) -> list[tuple[Op, str | None, str | None]]:
        """The alignment as ``(op, ref_word, hyp_word)`` steps."""
        return steps_from_ops(self.ops, self.ref, self.hyp)


def _check_id(kind: str, value: str, path: Path) -> None:
    # sclite reads the id between the last "(" and ")" of a trn line.
    if "(" in value or ")" in value:
        raise ScoringInputError(f"{path}: {kind} {value!r} contains a parenthesis, which trn ids cannot hold")


def pair_utterances(
    ref: PathLike,
    hyp: PathLike,
    utt2spk: PathLike | None = None,
    normalizer: Callable[[str], str] = normalize_transcript,
) -> list[ScoredUtterance]:
    """Read, normalise and align every reference utterance with its hypothesis.

    * speaker = ``utt2spk`` entry, or the utterance id itself without ``utt2spk``;
    * a reference utterance without hypothesis gets an empty one (one warning
      with the count);
    * a hypothesis utterance without reference raises :class:`ScoringInputError`
      naming the hypothesis file and the utterance(s).

    Utterances come back sorted by id in C-locale byte order.
    """
    ref_path, hyp_path = Path(ref), Path(hyp)
    refs = _read_text(ref_path, "reference text")
    hyps = _read_text(hyp_path, "hypothesis text")
    if not refs:
        raise ScoringInputError(f"{ref_path}: reference text has no utterances")
    extra = [u for u in hyps if u not in refs]
    if extra:
        shown = ", ".join(repr(u) for u in sorted(extra, key=c_sort_key)[:5])
        raise ScoringInputError(
            f"{hyp_path}: {len(extra)} hypothesis utterance(s) have no reference in {ref_path}: {shown}"
            + (" ..." if len(extra) > 5 else "")
        )
    if utt2spk is not None:
        spk_path = Path(utt2spk)
        speakers = _read_text(spk_path, "utt2spk")
        missing_spk = [u for u in refs if not speakers.get(u)]
        if missing_spk:
            raise ScoringInputError(f"{spk_path}: no speaker for utterance {missing_spk[0]!r} of {ref_path}")
    else:
        spk_path, speakers = ref_path, {u: u for u in refs}

    missing = [u for u in refs if u not in hyps]
    if missing:
        logger.warning(
            "%d of %d reference utterances have no hypothesis in %s; scored as empty hypotheses (first: %s)",
            len(missing), len(refs), hyp_path, sorted(missing, key=c_sort_key)[0],
        )
    utterances = []
    for utt in sorted(refs, key=c_sort_key):
        spk = speakers[utt]
        _check_id("utterance id", utt, ref_path)
        _check_id("speaker id", spk, spk_path)
        ref_words = normalizer(refs[utt]).split()
        hyp_words = normalizer(hyps.get(utt, "")).split()
        utterances.append(ScoredUtterance.align(utt, spk, ref_words, hyp_words))
    return utterances
