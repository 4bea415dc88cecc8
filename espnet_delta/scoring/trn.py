"""sclite ``trn`` files as ESPnet writes them.

ESPnet's ``egs2/TEMPLATE/asr1/asr.sh`` builds ``score_wer/{ref,hyp}.trn`` with
``paste <(tokenized text) <(awk '{ print "(" $2 "-" $1 ")" }' utt2spk)``: one
line per utterance, the words, a TAB, then ``(<spk>-<utt_id>)``, in
``utt2spk`` order, and scores them with ``sclite ... -i rm``.  With ``-i rm``
sclite takes the speaker from the id up to its first ``-``, so per-speaker
rows of sclite's report group correctly when speaker ids contain no ``-``
(Kaldi utterance ids usually repeat the speaker: ``(spk-spk-utt)``).
An empty transcript is a line with nothing before the TAB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Literal

from espnet_delta.fileio import write_text_atomic

from .inputs import ScoredUtterance

__all__ = ["format_trn", "parse_trn_line", "trn_id", "write_trn"]


def trn_id(utt: ScoredUtterance) -> str:
    """The id in parentheses: ``<spk>-<utt_id>``."""
    return f"{utt.spk_id}-{utt.utt_id}"


def format_trn(utterances: Iterable[ScoredUtterance], side: Literal["ref", "hyp"]) -> str:
    """The trn text of the reference or hypothesis side."""
    return "".join(f"{' '.join(getattr(u, side))}\t({trn_id(u)})\n" for u in utterances)


def write_trn(path: str | os.PathLike[str], utterances: Iterable[ScoredUtterance], side: Literal["ref", "hyp"]) -> Path:
    return write_text_atomic(path, format_trn(utterances, side))


def parse_trn_line(line: str) -> tuple[list[str], str]:
    """``"A B\\t(spk-utt)"`` -> ``(["A", "B"], "spk-utt")``."""
    text, sep, rest = line.rstrip("\n").rpartition("(")
    if not sep or not rest.endswith(")"):
        raise ValueError(f"not a trn line: {line!r}")
    return text.split(), rest[:-1]
