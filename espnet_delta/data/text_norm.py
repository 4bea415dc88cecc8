"""Transcript normalisation shared by data preparation and scoring.

One function, :func:`normalize_transcript`, turns a raw MyST ``.trn`` line,
a LibriSpeech transcript or an ASR hypothesis (e.g. Whisper output) into the
form used for training targets and for WER: upper-case words separated by
single spaces (the ESPnet/LibriSpeech convention).  Reference and hypothesis
must go through the *same* function, otherwise WER measures formatting.

Rules, applied in this order (each one is a small helper below):

1. Unicode NFKC, typographic apostrophes (U+2018, U+2019, U+02BC, `````)
   become ``'`` so "don’t" and "don't" are the same word.
2. Markup spans are removed *together with their content*:

   * ``<...>``  noise/event tags (``<NOISE>``, ``<SIDE_SPEECH>``, ``<no_signal>``).
   * ``[...]``  bracketed annotations (``[laughter]``).
   * ``((...))`` MyST unintelligible speech.  ``(( ))`` is empty; ``((word))``
     holds the transcriber's *guess*.  Guesses are dropped: they are not a
     reliable reference, and dropping them is what Whisper's English
     normaliser does with parenthesised text, so WERs stay comparable with
     the papers that score MyST that way.  Single ``(...)`` is treated alike
     (hypotheses sometimes contain ``(laughs)``).
   * ``+...+``  LDC-style marked (e.g. mispronounced) words, only when the
     ``+`` signs delimit whole tokens, so arithmetic such as ``2 + 2`` in a
     hypothesis is left alone.

3. Case-fold to upper case.
4. Punctuation becomes a space, except apostrophes and hyphens, which are
   resolved per token in the next step.
5. Per token:

   * fillers (:data:`FILLERS`, also hyphenated back-channels such as
     ``uh-huh``/``mm-hmm``) are dropped: they carry no lexical content and
     transcribers are inconsistent about them;
   * a token ending in ``-`` is a word fragment / false start (``th-``) and
     is dropped;
   * remaining hyphens split compounds (``x-ray`` -> ``X RAY``), as
     LibriSpeech has no hyphens;
   * apostrophes are kept only inside a word (``DON'T``, ``STUDENT'S``);
     leading/trailing ones are stripped (``'CAUSE`` -> ``CAUSE``).

6. Whitespace is collapsed; the result may be the empty string.

Numbers are *not* verbalised ("3" stays "3"): MyST and LibriSpeech references
spell numbers out, so a digit in a hypothesis counts as an error, as it would
in the papers' protocol.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["FILLERS", "normalize_transcript"]

#: Filler / hesitation tokens removed from references and hypotheses.  "OH" is
#: deliberately absent: it is lexical ("oh I see") and ASR systems output it.
#: Hyphenated back-channels are listed without their hyphen (UH-HUH -> UHHUH).
FILLERS: frozenset[str] = frozenset(
    {
        "AH", "AHH", "AHM",
        "EH", "ER", "ERM",
        "HM", "HMM", "HMMM",
        "MHM", "MM", "MMM", "MMHMM",
        "UH", "UHH", "UHM", "UHHUH", "UHHUM",
        "UM", "UMM", "UMHUM",
    }
)

_APOSTROPHES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'"})

# Markup spans, removed with their content (rule 2).
_MARKUP_RES: tuple[re.Pattern[str], ...] = (
    re.compile(r"<[^<>]*>"),
    re.compile(r"\[[^\[\]]*\]"),
    re.compile(r"\(\([^()]*\)\)"),
    re.compile(r"\([^()]*\)"),
    re.compile(r"(?<!\S)\+[^+\s][^+]*\+(?!\S)"),
)

# Everything except word characters, whitespace, apostrophes and hyphens
# (underscore is a word character for `re` but punctuation for us).
_PUNCT_RE = re.compile(r"[^\w\s'-]|_")


def _strip_markup(text: str) -> str:
    """Remove markup spans and their content (rule 2)."""
    for pattern in _MARKUP_RES:
        text = pattern.sub(" ", text)
    return text


def _clean_token(token: str) -> list[str]:
    """Resolve fillers, fragments, hyphens and apostrophes of one token (rule 5)."""
    if token.replace("-", "").replace("'", "") in FILLERS:
        return []
    if token.endswith("-"):
        return []
    words = []
    for part in token.split("-"):
        part = part.strip("'")
        if part and part not in FILLERS:
            words.append(part)
    return words


def normalize_transcript(text: str) -> str:
    """Normalise a reference or hypothesis transcript (see module docstring).

    >>> normalize_transcript("Um, the ((magnet)) <NOISE> sticks to it... don’t you think?")
    "THE STICKS TO IT DON'T YOU THINK"
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    text = _strip_markup(text)
    text = _PUNCT_RE.sub(" ", text.upper())
    words: list[str] = []
    for token in text.split():
        words.extend(_clean_token(token))
    return " ".join(words)
