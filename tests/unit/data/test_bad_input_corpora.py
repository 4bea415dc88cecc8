"""MyST and LibriSpeech trees as years of copying and hand edits leave them (issue 24, part 7).

Each odd file is either prepared as meant or dropped with a WARNING naming it and counted
under one reason in the summary (``prep_summary.tsv``); expected counts come from the
trees built here. ``test_data_prep.py`` covers the first list of bad input (missing
transcript or audio, unreadable or empty audio, Latin-1 ``.trn``, markup-only transcripts,
8 kHz and stereo audio); this file covers what it did not.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_delta.bin import prepare_data as prepare_cli
from espnet_delta.data.kaldi_dir import read_data_dir
from espnet_delta.data.shapes import speech_shape_lines
from espnet_delta.data.prepare import SUMMARY_NAME, PrepConfig, prepare_data

BOM = b"\xef\xbb\xbf"


def audio(path: Path, seconds: float = 1.0, fmt: str = "FLAC") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), 0.1 * np.sin(np.arange(int(16000 * seconds)) / 5.0), 16000, format=fmt, subtype="PCM_16")
    return path


def trn(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(MyST root, LibriSpeech root, Whisper hypotheses); the comments give each file's fate."""
    root = tmp_path_factory.mktemp("corpora") / "copied corpora"  # a space in every path
    s = root / "myst" / "data" / "train" / "myst_001" / "myst_001_sa"
    audio(s / "myst_001_sa_000.flac"), trn(s / "myst_001_sa_000.trn", b"the magnet sticks to the nail\n")  # kept
    audio(s / "myst_001_sa_001.flac"), trn(s / "myst_001_sa_001.trn", BOM + b"the wire is hot\r\n")  # kept
    audio(s / "myst_001_sa_002.flac"), trn(s / "myst_001_sa_002.trn", b"a copy exists as wav too\n")  # kept (flac)
    audio(s / "myst_001_sa_002.wav", fmt="WAV")  # duplicate_utt_id
    good = audio(s / "good.wav", fmt="WAV").read_bytes()
    (s / "good.wav").unlink()
    (s / "myst_001_sa_003.wav").write_bytes(good[: len(good) // 3])  # unreadable_audio: truncated copy
    trn(s / "myst_001_sa_003.trn", b"the copy was cut short\n")
    os.symlink(root / "elsewhere" / "gone.flac", s / "myst_001_sa_004.flac")  # unreadable_audio: dangling link
    trn(s / "myst_001_sa_004.trn", b"the audio moved away\n")
    audio(s / "myst_001_sa_005.FLAC"), trn(s / "myst_001_sa_005.trn", b"upper case suffix here\n")  # kept
    audio(s / "myst_001_sa_006.flac"), trn(s / "myst_001_sa_006.trn", "the café is naïve\n".encode())  # kept
    audio(s / "myst_001_sa_007.flac"), trn(s / "myst_001_sa_007.trn", b"")  # empty_after_cleaning (0-byte .trn)
    student = s.parent
    audio(student / "stray_000.flac"), trn(student / "stray_000.trn", b"one folder too few\n")  # misplaced_file
    audio(s / "extra" / "myst_001_sa_050.flac")  # misplaced_file (one folder too many)
    trn(s / "extra" / "myst_001_sa_050.trn", b"one folder too many\n")
    (s / ".DS_Store").write_bytes(b"\x00\x01")  # not audio or transcript: ignored
    (student.parent / "README.txt").write_text("notes of a former student\n")
    (s / "myst_001_sa_000.json").write_text("{}")

    lib = root / "librispeech" / "train-clean-100" / "19"
    for k in range(3):
        audio(lib / "198" / f"19-198-{k:04d}.flac")
    (lib / "198" / "19-198.trans.txt").write_bytes(
        BOM
        + b"19-198-0000 NORTHANGER ABBEY\r\n"  # kept (the BOM must not become part of the id)
        b"19-198-0001 THIS LITTLE WORK\r\n"  # kept
        b"19-198-0001 THIS LITTLE WORK\r\n"  # duplicate_utt_id (same transcript)
        b"19-198-0002 WAS FINISHED\r\n"  # kept
        b"19-198-0002 WAS NOT FINISHED\r\n"  # duplicate_utt_id (different transcript)
        b"\r\n"
        b"19-198-0003 A LINE WITHOUT ITS FLAC\r\n"  # missing_audio
    )
    audio(lib / "198" / "19-198-0001.wav", fmt="WAV")  # duplicate_utt_id: a converted copy beside the flac
    audio(lib / "199" / "19-199-0000.flac")  # missing_transcript: the chapter has no trans.txt
    audio(lib / "200" / "19-200-0000.wav", fmt="WAV")  # kept: a chapter converted to WAV
    (lib / "200" / "19-200.trans.txt").write_text("19-200-0000 CONVERTED BY HAND\n")
    audio(lib / "19-198-0009.flac")  # misplaced_file: no chapter folder

    hyp = root / "whisper.tsv"
    hyp.write_bytes(BOM + b"myst_001-myst_001_sa_000\tthe magnet sticks to the nail\r\nmyst_001_sa_001\tthe wire is hot\r\n")
    return root / "myst", root / "librispeech", hyp


@pytest.fixture(scope="module")
def prepared(corpora, tmp_path_factory):
    myst, libri, hyp = corpora
    out = tmp_path_factory.mktemp("prep") / "data"
    handler = _Records()
    logging.getLogger("espnet_delta").addHandler(handler)
    try:
        stats = {s.name: s for s in prepare_data(out, myst, libri, hyp, PrepConfig(subset_hours=()))}
    finally:
        logging.getLogger("espnet_delta").removeHandler(handler)
    return out, stats, handler.messages


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_myst_odd_files_are_kept_or_counted(prepared) -> None:
    out, stats, _ = prepared
    train = stats["train"]
    assert dict(train.dropped) == {"duplicate_utt_id": 1, "unreadable_audio": 2, "misplaced_file": 2, "empty_after_cleaning": 1}
    texts = {u.utt_id: u.text for u in read_data_dir(out / "train")}
    assert texts == {
        "myst_001-myst_001_sa_000": "THE MAGNET STICKS TO THE NAIL",
        "myst_001-myst_001_sa_001": "THE WIRE IS HOT",
        "myst_001-myst_001_sa_002": "A COPY EXISTS AS WAV TOO",
        "myst_001-myst_001_sa_005": "UPPER CASE SUFFIX HERE",
        "myst_001-myst_001_sa_006": "THE CAFÉ IS NAÏVE",
    }
    assert next(u for u in read_data_dir(out / "train") if u.utt_id.endswith("_002")).wav.endswith(".flac")
    # wav.scp paths hold a space; the shape reader (and ESPnet's, which splits at the first blank) reads them
    assert all(" " in u.wav for u in read_data_dir(out / "train"))
    assert speech_shape_lines(out / "train" / "wav.scp") == [f"{u} 16000\n" for u in sorted(texts)]  # 1 s each
    assert train.notes["no_whisper_hyp"] == 3  # 5 kept, 2 in the hypothesis file (one behind a BOM)


def test_librispeech_odd_files_are_kept_or_counted(prepared) -> None:
    out, stats, _ = prepared
    lib = stats["libri_train"]
    assert dict(lib.dropped) == {"duplicate_utt_id": 3, "missing_audio": 1, "missing_transcript": 1, "misplaced_file": 1}
    utts = read_data_dir(out / "libri_train")
    assert [(u.utt_id, u.text) for u in utts] == [
        ("19-198-0000", "NORTHANGER ABBEY"), ("19-198-0001", "THIS LITTLE WORK"), ("19-198-0002", "WAS FINISHED"),
        ("19-200-0000", "CONVERTED BY HAND")]
    assert utts[1].wav.endswith("19-198-0001.flac")  # the first in name order


@pytest.mark.parametrize(
    ("reason", "names"),
    [
        ("duplicate_utt_id", ["myst_001_sa_002.wav", "19-198.trans.txt", "19-198-0001.wav"]),
        ("unreadable_audio", ["myst_001_sa_003.wav", "myst_001_sa_004.flac"]),
        ("misplaced_file", ["stray_000.flac", "extra/myst_001_sa_050.flac", "19/19-198-0009.flac"]),
        ("empty_after_cleaning", ["myst_001_sa_007.trn"]),
    ],
)
def test_each_drop_is_a_warning_naming_the_file(prepared, reason, names) -> None:
    _, _, messages = prepared
    for name in names:
        assert any(f"({reason})" in m and name in m for m in messages), (reason, name)
    assert not any(".DS_Store" in m or "README" in m or ".json" in m for m in messages)


def test_summary_table_counts_the_new_reasons(prepared) -> None:
    out, _, _ = prepared
    rows = [line.split("\t") for line in (out / SUMMARY_NAME).read_text().splitlines()]
    table = {row[0]: dict(zip(rows[0], row)) for row in rows[1:]}
    assert (table["train"]["duplicate_utt_id"], table["train"]["misplaced_file"], table["train"]["utts"]) == ("1", "2", "5")
    assert (table["libri_train"]["duplicate_utt_id"], table["libri_train"]["misplaced_file"]) == ("3", "1")


@pytest.mark.parametrize(
    ("hyp", "message"),
    [
        (b"myst_001-myst_001_sa_000\tthe magnet\t-0.3\n", "whisper.tsv:1: expected 'utt_id<TAB>hypothesis'"),
        (b"a\tx\nb\ty\na\tz\n", "whisper.tsv:3: duplicate id 'a'"),
        (b"a\tcaf\xe9\n", "whisper.tsv:1: Whisper hypotheses is not valid UTF-8"),
    ],
    ids=["third_column", "duplicate_id", "latin1"],
)
def test_prepare_data_cli_bad_hypothesis_file_is_one_error(corpora, tmp_path, caplog, hyp, message) -> None:
    path = tmp_path / "whisper.tsv"
    path.write_bytes(hyp)
    assert prepare_cli.main(["--myst", str(corpora[0]), "--out", str(tmp_path / "data"), "--whisper_hyp", str(path)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(str(tmp_path)) and message in errors[0], errors
    assert not (tmp_path / "data").exists()


def test_empty_hypothesis_file_warns_that_the_filter_drops_nothing(corpora, tmp_path, caplog) -> None:
    (tmp_path / "whisper.tsv").write_bytes(b"\n")
    caplog.set_level(logging.WARNING)
    stats = prepare_data(tmp_path / "data", corpora[0], whisper_hyp=tmp_path / "whisper.tsv", config=PrepConfig(subset_hours=()))
    assert "whisper.tsv holds no hypotheses" in caplog.text
    assert stats[0].notes["no_whisper_hyp"] == stats[0].kept == 5


def test_an_empty_myst_split_is_a_comment_not_a_data_dir(tmp_path, caplog) -> None:
    (tmp_path / "myst" / "data" / "train" / "myst_009").mkdir(parents=True)  # a student without sessions
    caplog.set_level(logging.WARNING)
    assert prepare_cli.main(["--myst", str(tmp_path / "myst"), "--out", str(tmp_path / "data"), "--subset_hours", ""]) == 1
    assert "no utterances kept" in caplog.text and "MyST train has no usable utterances" in caplog.text
    assert not (tmp_path / "data" / "train").exists()


@pytest.mark.parametrize("spec", ["1,x", "nan", "-1", "inf", "0"])
def test_subset_sizes_that_are_not_positive_hours(spec) -> None:
    from espnet_delta.data.subsets import parse_hours

    with pytest.raises(ValueError, match=r"subset sizes must be (comma-separated|positive) hours, got '"):
        parse_hours(spec)
