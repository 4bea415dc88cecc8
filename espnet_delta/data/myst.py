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

from espnet_delta.fileio import TableError, read_table

from .screen import Candidate, misplaced_files

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


def _is_myst_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES or path.suffix == ".trn"


def iter_myst_candidates(split_dir: Path) -> Iterator[Candidate]:
    """One candidate per audio file (and per transcript without audio), sorted by path.

    A dangling symlink is a candidate too (dropped as unreadable audio, not skipped);
    audio or transcripts at another depth than ``<student>/<session>/`` are one
    ``misplaced_file`` candidate per name, so a folder level added or lost by a copy is
    counted rather than ignored.
    """
    misplaced: dict[Path, Path] = {}
    for path in misplaced_files(split_dir, 3, _is_myst_file):
        misplaced.setdefault(path.with_suffix(""), path)
    for stem, path in misplaced.items():
        yield Candidate(stem.name, "", None, None, path,
                        problem=("misplaced_file", f"expected <student>/<session>/<utterance> under {split_dir}"))
    audio_files = sorted(p for p in split_dir.glob("*/*/*")
                         if p.suffix.lower() in AUDIO_SUFFIXES and (p.is_file() or p.is_symlink()))
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

    Keys may be our utterance ids or MyST basenames; both are looked up. A line with a
    third tab-separated column is an error naming the line (not a longer hypothesis).
    """
    rows = read_table(path, what="Whisper hypotheses", skip_blank=True)
    for row in rows:
        if "\t" in row.value:  # e.g. a score column: it would become part of the hypothesis
            raise TableError("expected 'utt_id<TAB>hypothesis', found more tab-separated columns", path, row.lineno)
    return {row.key: row.value for row in rows}
