"""normalize_transcript: one rule per test, plus reference/hypothesis symmetry."""

from __future__ import annotations

import pytest

from espnet_delta.data.text_norm import FILLERS, normalize_transcript


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # case folding and whitespace
        ("the magnet  sticks\tto the nail\n", "THE MAGNET STICKS TO THE NAIL"),
        # noise / event tags are removed with their content
        ("<NOISE> the wire <side_speech> is hot", "THE WIRE IS HOT"),
        ("the [laughter] bulb", "THE BULB"),
        # unintelligible spans: empty and with a transcriber guess are both dropped
        ("the (( )) magnet", "THE MAGNET"),
        ("the ((magnet)) pulls", "THE PULLS"),
        ("it (laughs) works", "IT WORKS"),
        # +...+ marked words are dropped; arithmetic is not markup
        ("the +wor+ wire", "THE WIRE"),
        ("two + two + two", "TWO TWO TWO"),
        # fillers, also hyphenated back-channels
        ("um so uh the hmm circuit mm-hmm", "SO THE CIRCUIT"),
        ("Uh-huh, ERM, okay", "OKAY"),
        ("oh I see", "OH I SEE"),
        # punctuation, apostrophes kept only inside words
        ("Don't you think? It's the students' magnet!", "DON'T YOU THINK IT'S THE STUDENTS MAGNET"),
        ("'cause it’s hot", "CAUSE IT'S HOT"),
        ("well... the sun, the moon; and: \"stars\"", "WELL THE SUN THE MOON AND STARS"),
        # hyphens: compounds split, trailing-hyphen fragments dropped
        ("an x-ray of the th- the bone", "AN X RAY OF THE THE BONE"),
        ("a - b", "A B"),
        # underscores are punctuation, digits stay
        ("side_speech 3 wires", "SIDE SPEECH 3 WIRES"),
        # nothing left
        ("<NOISE> (( )) um", ""),
        ("", ""),
    ],
)
def test_rules(raw: str, expected: str) -> None:
    assert normalize_transcript(raw) == expected


def test_unbalanced_markup_leaves_no_symbols() -> None:
    assert normalize_transcript("the ((magnet is <hot") == "THE MAGNET IS HOT"


def test_idempotent() -> None:
    once = normalize_transcript("Um, the ((x)) <NOISE> magnet's pull... isn't strong-ish?")
    assert normalize_transcript(once) == once


def test_reference_and_whisper_style_hypothesis_agree() -> None:
    ref = "um the magnet (( )) sticks to the paper-clip <NOISE>"
    hyp = "The magnet sticks to the paper clip."
    assert normalize_transcript(ref) == normalize_transcript(hyp) == "THE MAGNET STICKS TO THE PAPER CLIP"


def test_fillers_are_upper_case_words() -> None:
    assert all(f.isalpha() and f.isupper() for f in FILLERS)
    assert "OH" not in FILLERS
