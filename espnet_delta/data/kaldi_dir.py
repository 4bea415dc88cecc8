"""Kaldi-style data directories: write atomically, read back, validate.

A data dir holds ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt`` and
``utt2dur``, each sorted by its first column in C-locale byte order (what
Kaldi's ``sort`` with ``LC_ALL=C`` produces and what ESPnet expects).

Utterance ids must start with their speaker id: Kaldi sorts ``utt2spk`` by
utterance and ``spk2utt`` by speaker and needs both orders to agree.  We check
that (prefix rule) and the stronger property itself (sorting by speaker, then
utterance, gives the same order as sorting by utterance), which a ``_``
separator with speaker ids of different lengths would break -- use ``-``.

``wav.scp`` entries written by this package are plain paths to 16 kHz mono
audio that soundfile reads; ESPnet's ``sound`` loader reads them directly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from espnet_delta.fileio import TableError, read_table

__all__ = [
    "DataDirError",
    "Utterance",
    "c_sort_key",
    "check_utterances",
    "id_problem",
    "read_data_dir",
    "validate_data_dir",
    "write_data_dir",
]

_FILES = ("wav.scp", "text", "utt2spk", "utt2dur")


class DataDirError(TableError):
    """A data dir (or a set of utterances about to become one) is invalid.

    ``path`` and ``line`` (1-based, ``None`` when not tied to a line) name the
    offending spot; both are part of the message.
    """


@dataclass(frozen=True)
class Utterance:
    """One row of a data dir."""

    utt_id: str
    spk_id: str
    wav: str  # the wav.scp entry: a path soundfile can read
    text: str
    duration: float  # seconds


def c_sort_key(key: str) -> bytes:
    """Sort key matching ``LC_ALL=C sort`` (byte order of the UTF-8 encoding)."""
    return key.encode("utf-8")


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a Kaldi utterance or speaker id (``None``: it can)."""
    if not value:
        return "is empty"
    if any(ch.isspace() for ch in value):
        return "contains whitespace"
    return None


def _check_id(kind: str, value: str) -> None:
    if (problem := id_problem(value)) is not None:
        raise DataDirError(f"{kind} {value!r} {problem}")


def check_utterances(utts: Iterable[Utterance]) -> list[Utterance]:
    """Check ids, prefix rule, duplicates, texts; return utterances sorted by id."""
    ordered = sorted(utts, key=lambda u: c_sort_key(u.utt_id))
    seen: set[str] = set()
    for u in ordered:
        _check_id("utterance id", u.utt_id)
        _check_id("speaker id", u.spk_id)
        if u.utt_id in seen:
            raise DataDirError(f"duplicate utterance id {u.utt_id!r}")
        seen.add(u.utt_id)
        if not u.utt_id.startswith(u.spk_id):
            raise DataDirError(f"utterance id {u.utt_id!r} does not start with its speaker id {u.spk_id!r}")
        if not u.text.strip() or "\n" in u.text:
            raise DataDirError(f"utterance {u.utt_id!r} has an empty or multi-line text")
        if not u.wav or "\n" in u.wav:
            raise DataDirError(f"utterance {u.utt_id!r} has an empty or multi-line wav.scp entry")
    by_spk = sorted(ordered, key=lambda u: (c_sort_key(u.spk_id), c_sort_key(u.utt_id)))
    for a, b in zip(ordered, by_spk):
        if a.utt_id != b.utt_id:
            raise DataDirError(
                f"sorting by speaker and by utterance disagree at {a.utt_id!r} / {b.utt_id!r}; "
                "separate speaker and utterance parts with '-'"
            )
    return ordered


def _render(utts: Sequence[Utterance]) -> dict[str, str]:
    """File name -> content for a sorted, checked list of utterances."""
    spk2utt: dict[str, list[str]] = {}
    for u in utts:
        spk2utt.setdefault(u.spk_id, []).append(u.utt_id)
    spks = sorted(spk2utt, key=c_sort_key)
    return {
        "wav.scp": "".join(f"{u.utt_id} {u.wav}\n" for u in utts),
        "text": "".join(f"{u.utt_id} {u.text}\n" for u in utts),
        "utt2spk": "".join(f"{u.utt_id} {u.spk_id}\n" for u in utts),
        "utt2dur": "".join(f"{u.utt_id} {u.duration:.3f}\n" for u in utts),
        "spk2utt": "".join(f"{s} {' '.join(spk2utt[s])}\n" for s in spks),
    }


def write_data_dir(path: str | os.PathLike[str], utts: Iterable[Utterance]) -> Path:
    """Write a validated data dir at ``path``, replacing any previous one.

    Files go to a temporary sibling directory first, which is validated and
    then renamed over the target, so readers never see a half-written dir and
    a re-run leaves no stale files behind.
    """
    target = Path(path)
    ordered = check_utterances(utts)
    if not ordered:
        raise DataDirError("refusing to write a data dir with no utterances", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.", dir=target.parent))
    try:
        for name, content in _render(ordered).items():
            (tmp / name).write_text(content, encoding="utf-8")
        validate_data_dir(tmp)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``, moving an existing ``target`` out of the way first."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.rename(target, old / target.name)
        os.rename(new, target)
        shutil.rmtree(old)
    else:
        os.rename(new, target)


def _read_table(path: Path) -> list[tuple[int, str, str]]:
    """``(line number, key, rest)`` for each line; checks C-sorted, unique keys."""
    if not path.is_file():
        raise DataDirError("file is missing", path)
    rows = read_table(path, what=path.name, error=DataDirError)
    for prev, row in zip(rows, rows[1:]):
        if c_sort_key(row.key) < c_sort_key(prev.key):
            raise DataDirError(f"not sorted (LC_ALL=C): {row.key!r} after the previous line", path, row.lineno)
    return rows


def validate_data_dir(path: str | os.PathLike[str]) -> int:
    """Check a data dir; return its number of utterances or raise :class:`DataDirError`.

    Checks: no ``segments`` file; each file present, UTF-8, sorted, no duplicate ids; the same
    utterances in ``wav.scp``, ``text``, ``utt2spk`` and ``utt2dur``; no
    empty text or wav entry; positive durations; utterance ids prefixed by
    their speaker; ``spk2utt`` exactly the inverse of ``utt2spk``.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataDirError("data dir does not exist", root)
    if (root / "segments").exists():  # wav.scp would hold recordings, every reader here expects utterances
        raise DataDirError("segments files are not supported: cut the recordings into one audio file per "
                           "utterance (e.g. with sox trim) and list those in wav.scp", root / "segments")
    tables = {name: _read_table(root / name) for name in _FILES}
    ref_name = "utt2spk"
    ref_ids = {key for _, key, _ in tables[ref_name]}
    for name, rows in tables.items():
        ids = {key for _, key, _ in rows}
        for lineno, key, rest in rows:
            if key not in ref_ids:
                raise DataDirError(f"utterance {key!r} has no entry in {ref_name}", root / name, lineno)
            if not rest.strip():
                what = "empty text" if name == "text" else "missing value"
                raise DataDirError(f"{what} for utterance {key!r}", root / name, lineno)
        for lineno, key, _ in tables[ref_name]:
            if key not in ids:
                raise DataDirError(f"utterance {key!r} has no entry in {name}", root / ref_name, lineno)
    for lineno, key, rest in tables["utt2dur"]:
        try:
            ok = float(rest) > 0
        except ValueError:
            ok = False
        if not ok:
            raise DataDirError(f"bad duration {rest!r} for {key!r}", root / "utt2dur", lineno)
    expected: dict[str, list[str]] = {}
    for lineno, utt, spk in tables[ref_name]:
        if len(spk.split()) != 1:
            raise DataDirError(f"expected one speaker id, got {spk!r}", root / ref_name, lineno)
        if not utt.startswith(spk):
            raise DataDirError(f"utterance id {utt!r} does not start with its speaker id {spk!r}", root / ref_name, lineno)
        expected.setdefault(spk, []).append(utt)
    _validate_spk2utt(root / "spk2utt", expected)
    return len(ref_ids)


def _validate_spk2utt(path: Path, expected: dict[str, list[str]]) -> None:
    """``spk2utt`` must list exactly the speakers and utterances of ``utt2spk``, in order."""
    rows = _read_table(path)
    seen: set[str] = set()
    for lineno, spk, rest in rows:
        if spk not in expected:
            raise DataDirError(f"speaker {spk!r} is not in utt2spk", path, lineno)
        if rest.split() != expected[spk]:
            raise DataDirError(f"utterances of speaker {spk!r} differ from utt2spk (or are not sorted)", path, lineno)
        seen.add(spk)
    missing = sorted(set(expected) - seen, key=c_sort_key)
    if missing:
        raise DataDirError(f"speaker {missing[0]!r} of utt2spk is missing", path)


def read_data_dir(path: str | os.PathLike[str]) -> list[Utterance]:
    """Read a valid data dir back into :class:`Utterance` rows (sorted by id)."""
    root = Path(path)
    validate_data_dir(root)
    cols = {name: {key: rest for _, key, rest in _read_table(root / name)} for name in _FILES}
    return [
        Utterance(utt, spk, cols["wav.scp"][utt], cols["text"][utt], float(cols["utt2dur"][utt]))
        for utt, spk in cols["utt2spk"].items()
    ]
