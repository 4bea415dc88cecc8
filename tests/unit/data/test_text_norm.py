"""normalize_transcript: one rule per test, plus reference/hypothesis symmetry; the number speller."""

from __future__ import annotations

import pytest

from espnet_delta.data.text_norm import FILLERS, cardinal, normalize_transcript, ordinal


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
        # underscores are punctuation; digits are spelled out
        ("side_speech 3 wires", "SIDE SPEECH THREE WIRES"),
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


@pytest.mark.parametrize(
    ("digits", "words"),
    [
        ("0", "zero"),
        ("7", "seven"),
        ("13", "thirteen"),
        ("20", "twenty"),
        ("42", "forty two"),
        ("100", "one hundred"),
        ("115", "one hundred fifteen"),
        ("909", "nine hundred nine"),
        ("1000", "one thousand"),
        ("1250", "one thousand two hundred fifty"),
        ("20007", "twenty thousand seven"),
        ("1000001", "one million one"),
        ("3000000000", "three billion"),
        ("007", "zero zero seven"),  # leading zero: digit by digit
        ("1234567890123456", "one two three four five six seven eight nine zero one two three four five six"),
    ],
)
def test_cardinal(digits: str, words: str) -> None:
    assert cardinal(digits) == words


@pytest.mark.parametrize(
    ("digits", "words"),
    [("1", "first"), ("2", "second"), ("3", "third"), ("4", "fourth"), ("5", "fifth"), ("8", "eighth"),
     ("9", "ninth"), ("11", "eleventh"), ("12", "twelfth"), ("20", "twentieth"), ("21", "twenty first"),
     ("32", "thirty second"), ("100", "one hundredth"), ("103", "one hundred third")],
)
def test_ordinal(digits: str, words: str) -> None:
    assert ordinal(digits) == words


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("i have 2 cats", "I HAVE TWO CATS"),
        ("1,250,000 stars", "ONE MILLION TWO HUNDRED FIFTY THOUSAND STARS"),
        ("count 1,2,3", "COUNT ONE TWO THREE"),  # a list, not a thousands comma
        ("3.5 grams", "THREE POINT FIVE GRAMS"),
        ("0.05 and .25", "ZERO POINT ZERO FIVE AND POINT TWO FIVE"),
        ("it is 3. Then", "IT IS THREE THEN"),  # a full stop, not a decimal point
        ("the 1st 2nd 3rd and 4th 21ST", "THE FIRST SECOND THIRD AND FOURTH TWENTY FIRST"),
        ("the 1970s and 6s", "THE ONE THOUSAND NINE HUNDRED SEVENTIES AND SIXES"),
        ("50% and 10 %", "FIFTY PERCENT AND TEN PERCENT"),
        ("$5 or $1", "FIVE DOLLARS OR ONE DOLLAR"),
        ("CO2 H2O 3D", "CO TWO H TWO O THREE D"),
        ("at 3:30", "AT THREE THIRTY"),
        ("Two cats, 2 dogs.", "TWO CATS TWO DOGS"),
    ],
)
def test_numbers_in_transcripts(raw: str, expected: str) -> None:
    assert normalize_transcript(raw) == expected


def test_spelled_and_digit_forms_agree() -> None:
    # a MyST-style reference against a Whisper-style hypothesis of the same words
    assert normalize_transcript("um the second magnet weighs twenty five grams") == normalize_transcript(
        "The 2nd magnet weighs 25 grams."
    )
