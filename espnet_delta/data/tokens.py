"""Character and phone token lists in ESPnet's format (stage 2).

Same layout as ``espnet2.bin.tokenize_text --token_type char --write_vocabulary true
--add_symbol '<blank>:0' --add_symbol '<unk>:1' --add_symbol '<sos/eos>:-1'``: blank
first, unk second, then characters by descending count (ties in code-point order),
``<space>`` for the word separator, ``<sos/eos>`` last. Written without spawning
ESPnet, whose import alone costs ~16 s here.

Phone lists (``data/token_list/phn/tokens.txt``) have the same layout over the
whitespace-separated phones of ``text.phn`` files (``<utt> <phone> <phone> ...``, the
mini corpus's espeak-ng IPA): a phone is one token however many characters it has
(``aɪ``, ``tʃ``), case is kept, there is no word separator. ESPnet reads such text with
``token_type: word`` (its word tokenizer splits on whitespace).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, List

from espnet_delta.fileio import read_table, write_text_atomic

SPACE = "<space>"
SPECIALS_HEAD = ("<blank>", "<unk>")
SPECIAL_TAIL = "<sos/eos>"


def char_tokens(text: str) -> List[str]:
    """The character tokens of a cleaned transcript (the CTC labels of ``token_type: char``)."""
    return [SPACE if ch == " " else ch for ch in text]


def char_counts(text_files: Iterable[Path]) -> Counter:
    counts: Counter = Counter()
    for path in text_files:
        for row in read_table(path, what="text"):
            counts.update(char_tokens(row.value))
    return counts


def char_token_list(text_files: Iterable[Path]) -> List[str]:
    counts = char_counts(text_files)
    body = sorted(counts, key=lambda t: (-counts[t], t))
    return [*SPECIALS_HEAD, *body, SPECIAL_TAIL]


def phone_counts(text_files: Iterable[Path]) -> Counter:
    counts: Counter = Counter()
    for path in text_files:
        for row in read_table(path, what="phone text"):
            counts.update(row.value.split())
    return counts


def phone_token_list(text_files: Iterable[Path]) -> List[str]:
    """blank, unk, phones by descending count (ties in code-point order), sos/eos."""
    counts = phone_counts(text_files)
    reserved = sorted(set(counts) & {*SPECIALS_HEAD, SPECIAL_TAIL})
    if reserved:
        raise ValueError(f"phone text uses ESPnet's reserved token(s) {reserved} as phones")
    body = sorted(counts, key=lambda t: (-counts[t], t))
    return [*SPECIALS_HEAD, *body, SPECIAL_TAIL]


def write_token_list(tokens: List[str], out: Path) -> Path:
    return write_text_atomic(out, "".join(t + "\n" for t in tokens))
