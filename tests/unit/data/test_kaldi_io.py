"""The package's one Kaldi table reader, atomic writes, and the wav.scp / shape readers built on them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_delta.data.shapes import speech_shape_lines
from espnet_delta.data.wav_scp import AudioReader, read_wav_scp
from espnet_delta.fileio import TableError, TableRow, read_table, write_lines_atomic, write_text_atomic


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_rows_split_at_the_first_whitespace_run(tmp_path) -> None:
    path = write(tmp_path / "text", "u1 HELLO  WORLD \nu2\tTAB SEP\nu3\nu4 A\u2028B\n")
    assert read_table(path) == [
        TableRow(1, "u1", "HELLO  WORLD"),  # inner spaces kept, trailing ones dropped
        TableRow(2, "u2", "TAB SEP"),
        TableRow(3, "u3", ""),  # an id alone: empty value
        TableRow(4, "u4", "A\u2028B"),  # a Unicode line separator is not a line break
    ]


def test_errors_name_file_and_line(tmp_path) -> None:
    path = write(tmp_path / "utt2spk", "a s1\nb s1\na s2\n")
    with pytest.raises(TableError, match=r"utt2spk:3: duplicate id 'a' in utt2spk \(first on line 1\)") as e:
        read_table(path, what="utt2spk")
    assert (e.value.path, e.value.line) == (str(path), 3)
    blank = write(tmp_path / "blank", "a 1\n\nb 2\n")
    with pytest.raises(TableError, match=r"blank:2: empty line"):
        read_table(blank)
    assert [r.key for r in read_table(blank, skip_blank=True)] == ["a", "b"]
    with pytest.raises(TableError, match=r"latin:.*not valid UTF-8"):
        read_table(write(tmp_path / "latin", "a CAF\u00c9\n", encoding="latin-1"))
    with pytest.raises(TableError, match=r"nope: text not found"):
        read_table(tmp_path / "nope", what="text")


def test_callers_choose_their_error_type(tmp_path) -> None:
    class MyError(TableError):
        pass

    with pytest.raises(MyError, match=r"t:2: duplicate"):
        read_table(write(tmp_path / "t", "a 1\na 2\n"), error=MyError)


def test_atomic_writes_replace_whole_files_and_leave_no_temporaries(tmp_path) -> None:
    out = tmp_path / "sub" / "feats.scp"
    write_lines_atomic(out, (f"u{i} x\n" for i in range(3)), fsync=True)
    assert out.read_text() == "u0 x\nu1 x\nu2 x\n"
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask

    def failing():
        yield "partial\n"
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_lines_atomic(out, failing())
    assert out.read_text() == "u0 x\nu1 x\nu2 x\n"
    write_text_atomic(out, "new\n")
    assert out.read_text() == "new\n" and sorted(p.name for p in out.parent.iterdir()) == ["feats.scp"]


def flac(path: Path, samples: int, rate: int = 16000) -> Path:
    soundfile.write(str(path), np.zeros(samples, dtype=np.float32), rate, format="FLAC", subtype="PCM_16")
    return path


def test_wav_scp_is_sorted_and_refuses_pipes_and_duplicates(tmp_path) -> None:
    a, b = flac(tmp_path / "a.flac", 1000), flac(tmp_path / "b.flac", 2345)
    scp = write(tmp_path / "wav.scp", f"s-2 {b}\n\ns-1 {a}\n")
    items = read_wav_scp(scp)
    assert [(it.utt, it.lineno) for it in items] == [("s-1", 3), ("s-2", 1)]
    assert speech_shape_lines(scp) == ["s-1 1000\n", "s-2 2345\n"]  # samples written above
    with pytest.raises(ValueError, match=r"wav.scp:2: expected '<utt> <audio file>' \(no pipes\)"):
        read_wav_scp(write(tmp_path / "wav.scp", f"s-1 {a}\ns-2 sox {b} -t wav - |\n"))
    with pytest.raises(ValueError, match=r"wav.scp:2: duplicate id 's-1'"):
        read_wav_scp(write(tmp_path / "wav.scp", f"s-1 {a}\ns-1 {b}\n"))


def test_audio_reader_names_the_line_of_bad_audio(tmp_path) -> None:
    good = flac(tmp_path / "good.flac", 400)
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    scp = write(tmp_path / "wav.scp", f"u1 {good}\nu2 {empty}\nu3 {flac(tmp_path / 'slow.flac', 400, 8000)}\n")
    reader = AudioReader(scp)
    u1, u2, u3 = read_wav_scp(scp)
    assert reader.num_samples(u1) == 400 and reader.read(u1).shape == (400,)
    with pytest.raises(ValueError, match=r"wav.scp:2: u2: .*empty.wav holds no samples"):
        reader.read(u2)
    with pytest.raises(ValueError, match=r"wav.scp:2: u2: .*empty.wav holds no samples"):
        reader.num_samples(u2)
    with pytest.raises(ValueError, match=r"wav.scp:3: u3: .*slow.flac is 8000 Hz"):
        reader.num_samples(u3)
