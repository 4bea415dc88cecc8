"""Find MyST utterances on disk.

Layout (LDC2021S05)::

    <root>/data/{train,development,test}/<student>/<session>/<utt>.flac
    <root>/data/{train,development,test}/<student>/<session>/<utt>.trn

``<root>`` may also be the ``data`` folder itself.  The speaker is the
student.  Utterance ids are ``<student>-<utt basename>``: MyST basenames
already start with the session name (itself unique per student), so this is
unique and speaker-prefixed with the ``-`` separator Kaldi sorting needs.  A
basename that does not start with its session name gets the session inserted
(``<student>-<session>-<basename>``) to stay unique.

Only files are found here; checks and filters are in :mod:`.screen`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from espnet_delta.fileio import read_table

from .screen import Candidate

__all__ = ["AUDIO_SUFFIXES", "MYST_SPLITS", "find_myst_data_dir", "iter_myst_candidates", "myst_utt_id", "read_whisper_hyps"]

#: MyST folder -> output split name.
MYST_SPLITS: dict[str, str] = {"train": "train", "development": "dev", "test": "test"}
AUDIO_SUFFIXES: tuple[str, ...] = (".flac", ".wav")


def find_myst_data_dir(root: str | Path) -> Path:
    """The folder holding ``train/``, ``development/``, ``test/``."""
    root = Path(root)
    for cand in (root / "data", root):
        if any((cand / split).is_dir() for split in MYST_SPLITS):
            return cand
    raise FileNotFoundError(f"no MyST split folders ({', '.join(MYST_SPLITS)}) under {root} or {root / 'data'}")


def myst_utt_id(student: str, session: str, basename: str) -> str:
    """Speaker-prefixed, unique utterance id (see module docstring)."""
    if basename.startswith(session):
        return f"{student}-{basename}"
    return f"{student}-{session}-{basename}"


def iter_myst_candidates(split_dir: Path) -> Iterator[Candidate]:
    """One candidate per audio file (and per transcript without audio), sorted by path."""
    audio_files = sorted(p for p in split_dir.glob("*/*/*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    audio_stems = {p.with_suffix("") for p in audio_files}
    orphans = sorted(p for p in split_dir.glob("*/*/*.trn") if p.with_suffix("") not in audio_stems)
    for path in [*audio_files, *orphans]:
        student, session, stem = path.parent.parent.name, path.parent.name, path.stem
        trn = path.with_suffix(".trn")
        audio = None if path.suffix == ".trn" else path
        text = trn.read_bytes() if trn.is_file() else None
        yield Candidate(myst_utt_id(student, session, stem), student, audio, text, trn, alt_ids=(stem,))


def read_whisper_hyps(path: str | Path) -> dict[str, str]:
    """Read ``utt_id<TAB>hypothesis`` lines (an empty hypothesis is allowed).

    Keys may be our utterance ids or MyST basenames; both are looked up.
    """
    return {row.key: row.value for row in read_table(path, what="Whisper hypotheses", skip_blank=True)}
