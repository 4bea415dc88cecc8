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

Numbers are spelled out (:func:`spell_numbers`, between rules 2 and 3): MyST
and LibriSpeech transcripts write numbers as words, while ASR systems such as
Whisper write digits, so without this "i have 2 cats" would count an error
against "i have two cats" in the Whisper screening and in scoring.  Covered
(American style, no "and"; read as cardinals where speech is ambiguous):

* integers, with or without thousands commas: ``1,250`` -> ``one thousand two
  hundred fifty``; up to 15 digits, longer runs and runs with a leading zero
  (``007``) digit by digit;
* ordinals ``1st 2nd 3rd 4th 21st 100th`` -> ``first second third fourth
  twenty first one hundredth``; plurals ``1970s`` -> ``... seventies``;
* decimals ``3.5`` -> ``three point five``, ``.25`` -> ``point two five``
  (digits after the point one by one);
* ``50%`` -> ``fifty percent``; ``$5`` -> ``five dollars`` (``$1`` -> ``one dollar``);
* digits glued to letters are split off: ``CO2`` -> ``CO TWO``, ``3D`` -> ``THREE D``.

Not covered: years (``1990`` is read ``one thousand nine hundred ninety``, not
``nineteen ninety``), negative numbers (the minus is a hyphen, dropped), fractions
(``1/2`` -> ``ONE TWO``), times (``3:30`` -> ``THREE THIRTY``, which is right),
cents in money amounts, Roman numerals.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["FILLERS", "cardinal", "normalize_transcript", "ordinal", "spell_numbers"]

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


_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
#: powers of 1000 up to 10^12 (15-digit numbers)
_SCALES = ("", "thousand", "million", "billion", "trillion")
_MAX_DIGITS = 3 * len(_SCALES)
#: last word of a cardinal -> its ordinal where "+th" is wrong ("twenty" -> "twentieth" by rule)
_IRREGULAR_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                       "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def _below_thousand(n: int) -> list[str]:
    words = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


def cardinal(digits: str) -> str:
    """A run of ASCII digits read as a number ("1250" -> "one thousand two hundred fifty");
    a leading zero (``007``) or more than 15 digits: digit by digit."""
    if (len(digits) > 1 and digits[0] == "0") or len(digits) > _MAX_DIGITS:
        return " ".join(_ONES[int(d)] for d in digits)
    n = int(digits)
    if n == 0:
        return "zero"
    words: list[str] = []
    for power in range(len(_SCALES) - 1, -1, -1):
        group = n // 1000**power % 1000
        if group:
            words += _below_thousand(group) + ([_SCALES[power]] if power else [])
    return " ".join(words)


def ordinal(digits: str) -> str:
    """``"21"`` -> ``"twenty first"``: the cardinal with its last word made ordinal."""
    *head, last = cardinal(digits).split()
    if last in _IRREGULAR_ORDINALS:
        last = _IRREGULAR_ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def _plural(words: str) -> str:
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + ("es" if words.endswith("x") else "s")


# A thousands comma: between a digit and exactly three digits ("1,250,000"; not "1,2,3").
_THOUSANDS_RE = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
# int part, optional ".digits", then at most one suffix; the suffix counts only at a word end.
_SPELL_RE = re.compile(
    r"(?P<dollar>\$ ?)?"
    r"(?:(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]+))?|(?<![0-9])\.(?P<frac_only>[0-9]+))"
    r"(?:(?P<ord>st|nd|rd|th)(?![^\W\d_])|(?P<plural>s)(?![^\W\d_]))?"
    r"(?P<pct> ?%)?",
    re.IGNORECASE,
)


def _spell(m: re.Match[str]) -> str:
    int_part, frac = m["int"], m["frac"] if m["frac"] is not None else m["frac_only"]
    if frac is not None:
        words = (cardinal(int_part) + " " if int_part else "") + "point " + " ".join(_ONES[int(d)] for d in frac)
    elif m["ord"]:
        words = ordinal(int_part)
    else:
        words = cardinal(int_part)
    if m["plural"]:
        words = _plural(words)
    if m["pct"]:
        words += " percent"
    if m["dollar"]:
        words += " dollar" if words == "one" else " dollars"
    return f" {words} "


def spell_numbers(text: str) -> str:
    """Digits -> lower-case English words (coverage: module docstring)."""
    text = _THOUSANDS_RE.sub("", text)
    return _SPELL_RE.sub(_spell, text)


def normalize_transcript(text: str) -> str:
    """Normalise a reference or hypothesis transcript (see module docstring).

    >>> normalize_transcript("Um, the ((magnet)) <NOISE> sticks to it... don’t you think?")
    "THE STICKS TO IT DON'T YOU THINK"
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    text = spell_numbers(_strip_markup(text))
    text = _PUNCT_RE.sub(" ", text.upper())
    words: list[str] = []
    for token in text.split():
        words.extend(_clean_token(token))
    return " ".join(words)
