"""Find LibriSpeech utterances on disk (the adult-speech part).

Layout (OpenSLR 12)::

    <root>/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac
    <root>/{...}/<spk>/<chapter>/<spk>-<chapter>.trans.txt     lines "<utt> TEXT"

WAV files (a copy converted by hand) are read like the FLAC files.

LibriSpeech utterance ids already start with ``<spk>-``; they are kept.
Output split names carry a ``libri_`` prefix so they never clash with MyST's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .screen import Candidate, misplaced_files

__all__ = ["LIBRISPEECH_SPLITS", "iter_librispeech_candidates", "read_trans_lines", "read_trans_txt"]

#: LibriSpeech folder -> output split name.
LIBRISPEECH_SPLITS: dict[str, str] = {
    "train-clean-100": "libri_train",
    "dev-clean": "libri_dev",
    "test-clean": "libri_test",
}


def read_trans_lines(path: Path) -> list[tuple[str, bytes]]:
    """``(utterance id, raw transcript bytes)`` per non-blank line, in file order, repeated ids
    included (counted as duplicates later); bytes are decoded later, so bad UTF-8 is counted per
    line. A leading UTF-8 byte-order mark is skipped; CRLF and CR line ends both end a line."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out = []
    for raw in data.splitlines():
        parts = raw.split(None, 1)
        if parts:
            out.append((parts[0].decode("utf-8", "replace"), parts[1].strip() if len(parts) > 1 else b""))
    return out


def read_trans_txt(path: Path) -> dict[str, bytes]:
    """utterance id -> raw transcript bytes (the first line of a repeated id)."""
    out: dict[str, bytes] = {}
    for utt, text in read_trans_lines(path):
        out.setdefault(utt, text)
    return out


#: Audio suffixes read (any case): the corpus's FLAC, and WAV for copies converted by hand.
AUDIO_SUFFIXES: tuple[str, ...] = (".flac", ".wav")


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES and (path.is_file() or path.is_symlink())


def _is_libri_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES or path.name.endswith(".trans.txt")


def iter_librispeech_candidates(split_dir: Path) -> Iterator[Candidate]:
    """One candidate per utterance found as audio or as a transcript line. A repeated
    transcript line, or a second audio file of the same name (``.flac`` and a converted
    ``.wav``), is another candidate of the same id (a counted duplicate; the first line and the
    first file in name order are used); audio or transcripts outside ``<spk>/<chapter>/`` are
    counted as misplaced."""
    for path in misplaced_files(split_dir, 3, _is_libri_file):
        yield Candidate(path.name, "", None, None, path,
                        problem=("misplaced_file", f"expected <speaker>/<chapter>/<file> under {split_dir}"))
    for chapter_dir in sorted(p for p in split_dir.glob("*/*") if p.is_dir()):
        spk, chapter = chapter_dir.parent.name, chapter_dir.name
        trans = chapter_dir / f"{spk}-{chapter}.trans.txt"
        lines = read_trans_lines(trans)
        texts: dict[str, list[bytes]] = {}
        for name, text in lines:
            texts.setdefault(name, []).append(text)
        audios: dict[str, list[Path]] = {}
        for path in sorted(p for p in chapter_dir.iterdir() if _is_audio(p)):
            audios.setdefault(path.stem, []).append(path)
        for name in sorted(set(texts) | set(audios)):
            utt_id = name if name.startswith(f"{spk}-") else f"{spk}-{name}"
            name_texts, name_audios = texts.get(name, [None]), audios.get(name, [None])
            yield Candidate(utt_id, spk, name_audios[0], name_texts[0], trans, alt_ids=(name,))
            for text in name_texts[1:]:
                yield Candidate(utt_id, spk, name_audios[0], text, trans, alt_ids=(name,))
            for audio in name_audios[1:]:
                yield Candidate(utt_id, spk, audio, name_texts[0], trans, alt_ids=(name,))
