"""Reading Kaldi-style tables and writing files atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["ScoringInputError", "read_table", "write_text_atomic"]


class ScoringInputError(ValueError):
    """An input of the scorer (text, utt2spk, score dir) is invalid; the message names the file."""


def read_table(path: str | os.PathLike[str], *, what: str = "table") -> dict[str, str]:
    """Read ``<key> <value...>`` lines (Kaldi ``text``, ``utt2spk``) into ``key -> value``.

    The value is the rest of the line after the first run of whitespace, and
    may be empty (an utterance id alone on its line = empty transcript).
    Blank lines are skipped; a repeated key or non-UTF-8 bytes raise
    :class:`ScoringInputError` naming the file and line.
    """
    path = Path(path)
    table: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.strip().split(maxsplit=1)
                if not parts:
                    continue
                key = parts[0]
                if key in table:
                    raise ScoringInputError(f"{path}:{lineno}: duplicate id {key!r} in {what}")
                table[key] = parts[1] if len(parts) > 1 else ""
    except UnicodeDecodeError as e:
        raise ScoringInputError(f"{path}: {what} is not valid UTF-8 ({e})") from e
    except FileNotFoundError as e:
        raise ScoringInputError(f"{path}: {what} not found") from e
    return table


from espnet_delta.fileio import write_text_atomic  # noqa: E402,F401  (re-exported)
