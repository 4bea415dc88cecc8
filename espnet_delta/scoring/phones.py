"""Phone error rate (PER): phones are the tokens, compared exactly as written.

Phone transcripts (``text.phn``: ``<utt> <phone> <phone> ...``, e.g. the mini corpus's
espeak-ng IPA) are scored like words by :func:`espnet_delta.scoring.score` with
``normalizer=normalize_phones``: the aligned units are the whitespace-separated phones,
so the "WER" of such a score dir is the PER, as SUPERB's phone recognition reports it.
Word normalisation would be wrong here: it upper-cases (``ɪ`` -> ``Ɪ``) and its
punctuation rules merge distinct phones of the mini corpus (``a:`` -> ``A`` like ``a``,
``t̪`` -> ``T`` like ``t``), so only whitespace is normalised. The character (CER)
numbers that a score dir also holds have no meaning for phones and are not reported.
"""

from __future__ import annotations

__all__ = ["normalize_phones"]


def normalize_phones(text: str) -> str:
    """Single spaces between phones; nothing else changes (case and symbols kept)."""
    return " ".join(text.split())
