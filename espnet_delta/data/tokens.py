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

from espnet_delta.fileio import TableError, read_table, write_text_atomic

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
            if any(ch.isspace() and ch != " " for ch in row.value):
                raise TableError("transcript holds a tab or other whitespace than a space, which would become "
                                 "a token of its own; separate words by spaces", path, row.lineno)
            counts.update(char_tokens(row.value))
    return counts


def _refuse_empty(counts: Counter, text_files: List[Path], what: str) -> None:
    """A token list of the specials alone would train a model that can output nothing."""
    if not counts:
        raise ValueError(f"{', '.join(map(str, text_files))}: no {what} (empty set?); refusing to write a token list")


def char_token_list(text_files: Iterable[Path]) -> List[str]:
    text_files = list(text_files)
    counts = char_counts(text_files)
    _refuse_empty(counts, text_files, "characters")
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
    text_files = list(text_files)
    counts = phone_counts(text_files)
    _refuse_empty(counts, text_files, "phones")
    reserved = sorted(set(counts) & {*SPECIALS_HEAD, SPECIAL_TAIL})
    if reserved:
        raise ValueError(f"{', '.join(map(str, text_files))}: phone text uses ESPnet's reserved token(s) {reserved} as phones")
    body = sorted(counts, key=lambda t: (-counts[t], t))
    return [*SPECIALS_HEAD, *body, SPECIAL_TAIL]


def write_token_list(tokens: List[str], out: Path) -> Path:
    return write_text_atomic(out, "".join(t + "\n" for t in tokens))


def read_token_list(path: Path) -> List[str]:
    """A token list as ESPnet reads it (one token per line, ``line.rstrip()``), checked here so
    that a list brought from elsewhere fails with the file and line before a training starts,
    not as ESPnet's "Symbol is duplicated" traceback inside one: a byte-order mark (ESPnet would
    make it part of the first token), an empty line, a repeated token, no ``<blank>`` first or no
    ``<unk>`` are errors."""
    path = Path(path)
    if not path.is_file():
        raise TableError("token list not found", path)
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raise TableError("token list starts with a UTF-8 byte-order mark, which ESPnet reads as part of the first token",
                         path, 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TableError("token list is not valid UTF-8", path, raw.count(b"\n", 0, e.start) + 1) from None
    tokens = [line.rstrip() for line in text.split("\n")]
    if tokens and tokens[-1] == "":
        tokens.pop()
    first: dict = {}
    for lineno, token in enumerate(tokens, 1):
        if not token:
            raise TableError("empty token (blank line) in the token list", path, lineno)
        if token in first:
            raise TableError(f"token {token!r} repeated (first on line {first[token]}); ESPnet refuses duplicates",
                             path, lineno)
        first[token] = lineno
    if not tokens or tokens[0] != SPECIALS_HEAD[0] or SPECIALS_HEAD[1] not in first:
        raise TableError(f"a token list starts with {SPECIALS_HEAD[0]} and holds {SPECIALS_HEAD[1]}", path)
    return tokens
