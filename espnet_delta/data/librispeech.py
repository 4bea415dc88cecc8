"""Find LibriSpeech utterances on disk (the adult-speech part).

Layout (OpenSLR 12)::

    <root>/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac
    <root>/{...}/<spk>/<chapter>/<spk>-<chapter>.trans.txt     lines "<utt> TEXT"

LibriSpeech utterance ids already start with ``<spk>-``; they are kept.
Output split names carry a ``libri_`` prefix so they never clash with MyST's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .screen import Candidate

__all__ = ["LIBRISPEECH_SPLITS", "iter_librispeech_candidates", "read_trans_txt"]

#: LibriSpeech folder -> output split name.
LIBRISPEECH_SPLITS: dict[str, str] = {
    "train-clean-100": "libri_train",
    "dev-clean": "libri_dev",
    "test-clean": "libri_test",
}


def read_trans_txt(path: Path) -> dict[str, bytes]:
    """utterance id -> raw transcript bytes (decoded later, so bad UTF-8 is counted per line)."""
    out: dict[str, bytes] = {}
    if not path.is_file():
        return out
    for raw in path.read_bytes().splitlines():
        parts = raw.split(None, 1)
        if parts:
            out[parts[0].decode("utf-8", "replace")] = parts[1] if len(parts) > 1 else b""
    return out


def iter_librispeech_candidates(split_dir: Path) -> Iterator[Candidate]:
    """One candidate per utterance found as audio or as a transcript line."""
    for chapter_dir in sorted(p for p in split_dir.glob("*/*") if p.is_dir()):
        spk, chapter = chapter_dir.parent.name, chapter_dir.name
        trans = chapter_dir / f"{spk}-{chapter}.trans.txt"
        texts = read_trans_txt(trans)
        audios = {p.stem: p for p in chapter_dir.glob("*.flac") if p.is_file()}
        for name in sorted(set(texts) | set(audios)):
            utt_id = name if name.startswith(f"{spk}-") else f"{spk}-{name}"
            yield Candidate(utt_id, spk, audios.get(name), texts.get(name), trans, alt_ids=(name,))
