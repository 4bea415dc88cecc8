"""Commands that take a file, given files no test gave them before (issue 24, part 7).

Each command's ``main()`` runs in-process: good-but-odd input (a BOM, CRLF, a path with
spaces, 8-bit or FLAC audio, a symlink) gives the right output; bad input ends with a
non-zero exit status and one logged ERROR line naming the file, never a traceback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_delta.bin import speed_perturb as speed_perturb_cli
from espnet_delta.data.kaldi_dir import Utterance, write_data_dir
from espnet_delta.merge.errors import ScheduleError
from espnet_delta.merge.schedule_file import load_schedule
from espnet_delta.recipe import make_phone_text, make_shapes, make_tokens

BOM = b"\xef\xbb\xbf"


def tone(path: Path, samples: int, rate: int = 16000, channels: int = 1, subtype: str = "PCM_16", fmt: str = "WAV") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = 0.1 * np.sin(np.arange(samples) / 5.0)
    soundfile.write(str(path), wave if channels == 1 else np.stack([wave] * channels, 1), rate, subtype=subtype, format=fmt)
    return path


def one_error(caplog, *names: str) -> str:
    """The single ERROR record; it names every one of ``names`` and holds no traceback."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "\n" not in message and "Traceback" not in message and errors[0].exc_info is None
    for name in names:
        assert name in message, (name, message)
    return message


def exit_code(fn, cmd) -> int:
    """Exit status of ``fn(cmd)``: a returned int or a SystemExit code."""
    try:
        return fn(cmd) or 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1


# ----------------------------------------------------------------- make_shapes (wav.scp)
def _audio_cases(tmp_path: Path) -> dict[str, Path]:
    ok = tone(tmp_path / "ok.wav", 1600)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(ok.read_bytes()[: 44 + 1000])  # header + 500 of 1600 samples: a copy cut short
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is a transcript, not audio\n")
    os.symlink(tmp_path / "gone.wav", tmp_path / "dangling.wav")
    return {
        "missing": tmp_path / "never_written.wav",
        "zero_length": tmp_path / "zero.wav",
        "truncated": truncated,
        "not_audio": tmp_path / "text.wav",
        "dangling_symlink": tmp_path / "dangling.wav",
        "8_khz": tone(tmp_path / "slow.wav", 800, rate=8000),
        "stereo": tone(tmp_path / "stereo.wav", 1600, channels=2),
    }


BAD_AUDIO = [
    ("missing", "cannot read"),
    ("zero_length", "holds no samples"),
    ("truncated", "truncated WAV"),
    ("not_audio", "cannot read"),
    ("dangling_symlink", "cannot read"),
    ("8_khz", "8000 Hz"),
    ("stereo", "2 channel(s)"),
]


@pytest.mark.parametrize(("case", "message"), BAD_AUDIO, ids=[c[0] for c in BAD_AUDIO])
def test_make_shapes_bad_audio_is_one_error_naming_the_line_and_file(tmp_path, caplog, case, message) -> None:
    audio = _audio_cases(tmp_path)[case]
    scp = tmp_path / "data" / "dev" / "wav.scp"
    scp.parent.mkdir(parents=True)
    scp.write_text(f"s-1 {tone(tmp_path / 'fine.wav', 800)}\ns-2 {audio}\n")
    cmd = ["--data_dir", str(tmp_path / "data"), "--sets", "dev", "--out_dir", str(tmp_path / "shapes")]
    assert exit_code(make_shapes.main, cmd) == 1
    assert message in one_error(caplog, f"{scp}:2", audio.name)
    assert not (tmp_path / "shapes" / "dev" / "speech_shape").exists()


def test_make_shapes_reads_odd_but_good_audio(tmp_path) -> None:
    spaced = tone(tmp_path / "a folder with spaces" / "utt one.wav", 1000)
    flac = tone(tmp_path / "b.flac", 1200, fmt="FLAC")
    u8 = tone(tmp_path / "c.wav", 1300, subtype="PCM_U8")
    link = tmp_path / "d.wav"
    os.symlink(tone(tmp_path / "real" / "d.wav", 1400), link)
    scp = tmp_path / "data" / "x" / "wav.scp"
    scp.parent.mkdir(parents=True)
    # unsorted, BOM, CRLF, a tab as separator, a blank line
    scp.write_bytes(BOM + f"s-4 {link}\r\ns-1\t{spaced}\r\n\r\ns-3 {u8}\r\ns-2 {flac}\r\n".encode())
    assert exit_code(make_shapes.main, ["--data_dir", str(tmp_path / "data"), "--sets", "x", "--out_dir", str(tmp_path / "s")]) == 0
    # sample counts written above, sorted by utterance id
    assert (tmp_path / "s" / "x" / "speech_shape").read_text() == "s-1 1000\ns-2 1200\ns-3 1300\ns-4 1400\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no utterances"),
        (b"s-1 sox in.flac -r 16000 -t wav - |\n", "no pipes"),
        (b"s-1 a.wav\ns-1 b.wav\n", "duplicate id"),
        (b"rec-1 a.wav\n", "segments files are not supported"),
    ],
    ids=["empty_set", "pipe", "duplicate_id", "segments_file"],
)
def test_make_shapes_bad_wav_scp(tmp_path, caplog, data, message) -> None:
    scp = tmp_path / "data" / "x" / "wav.scp"
    scp.parent.mkdir(parents=True)
    scp.write_bytes(data)
    if b"rec-1" in data:  # a Kaldi data dir of recordings cut by a segments file (one past the end)
        (scp.parent / "segments").write_text("s-1 rec-1 0.0 1.0\ns-2 rec-1 0.5 99.0\n")
    assert exit_code(make_shapes.main, ["--data_dir", str(tmp_path / "data"), "--sets", "x", "--out_dir", str(tmp_path / "s")]) == 1
    assert message in one_error(caplog, str(scp.parent))


# ----------------------------------------------------------------- make_tokens (text)
def test_make_tokens_reads_bom_crlf_text_as_the_clean_one(tmp_path) -> None:
    clean, edited = tmp_path / "clean", tmp_path / "edited"
    clean.write_text("s-1 AB BA\ns-2 ABC\n")
    edited.write_bytes(BOM + b"s-1 AB BA  \r\ns-2 ABC\r\n")
    for src in (clean, edited):
        assert exit_code(make_tokens.main, ["--text", str(src), "--out", str(tmp_path / f"{src.name}.txt")]) == 0
    tokens = (tmp_path / "edited.txt").read_text()
    assert tokens == (tmp_path / "clean.txt").read_text()
    # A 3, B 3, <space> 1, C 1 (counted by hand), ties in code-point order
    assert tokens.split("\n") == ["<blank>", "<unk>", "A", "B", "<space>", "C", "<sos/eos>", ""]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"s-1 CAF\xc9\n", ":1: text is not valid UTF-8"),
        (b"s-1 AB\ns-2 A\tB\n", ":2: transcript holds a tab"),
        (b"s-1 AB\ns-1 AB\n", ":2: duplicate id 's-1'"),
        (b"", "no characters (empty set?)"),
        (b"s-1\ns-2\n", "no characters (empty set?)"),
        (b"s-1 A\n\x00\x00\x00\n", ":2: NUL bytes"),
    ],
    ids=["latin1", "tab_inside_transcript", "duplicate_id", "empty_file", "ids_without_text", "nul_tail"],
)
def test_make_tokens_bad_text(tmp_path, caplog, data, message) -> None:
    text = tmp_path / "text"
    text.write_bytes(data)
    assert exit_code(make_tokens.main, ["--text", str(text), "--out", str(tmp_path / "tokens.txt")]) == 1
    assert message in one_error(caplog, str(text))
    assert not (tmp_path / "tokens.txt").exists()


# ----------------------------------------------------------------- make_phone_text
def _phone_setup(tmp_path: Path, phones: bytes) -> list[str]:
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    (d / "text").write_text("s-1 HI\ns-2 HO\n")
    (tmp_path / "phones.txt").write_bytes(phones)
    return ["--phones", str(tmp_path / "phones.txt"), "--data_dir", str(tmp_path / "data"), "--sets", "train",
            "--train_set", "train", "--token_list", str(tmp_path / "phn.txt")]


def test_make_phone_text_reads_a_bom_crlf_table_with_tabs(tmp_path) -> None:
    cmd = _phone_setup(tmp_path, BOM + "s-2\th  oʊ\r\ns-1 h aɪ\r\ns-9 extra utterance\r\n".encode())
    assert exit_code(make_phone_text.main, cmd) == 0
    assert (tmp_path / "data" / "train" / "text.phn").read_text() == "s-1 h aɪ\ns-2 h oʊ\n"
    # h 2, aɪ 1, oʊ 1 (the utterance of no set is not counted); ties in code-point order
    assert (tmp_path / "phn.txt").read_text().split() == ["<blank>", "<unk>", "h", "aɪ", "oʊ", "<sos/eos>"]


@pytest.mark.parametrize(
    ("phones", "named", "message"),
    [
        (b"s-1 h a\n", "phones.txt", "no phones for 1 utterance(s)"),
        (b"s-1 h a\ns-2\n", "phones.txt:2", "has no phones"),
        (b"s-1 h a\ns-1 h o\n", "phones.txt:2", "duplicate id"),
        (b"s-1 h \xe0\ns-2 h o\n", "phones.txt:1", "not valid UTF-8"),
        (b"s-1 h <unk>\ns-2 h o\n", "text.phn", "reserved token"),
    ],
    ids=["utterance_without_phones_line", "empty_phones", "duplicate_id", "latin1", "reserved_token"],
)
def test_make_phone_text_bad_tables(tmp_path, caplog, phones, named, message) -> None:
    assert exit_code(make_phone_text.main, _phone_setup(tmp_path, phones)) == 1
    assert message in one_error(caplog, named)


# ----------------------------------------------------------------- speed_perturb
def test_speed_perturb_with_audio_gone_is_one_error(tmp_path, caplog) -> None:
    src = write_data_dir(tmp_path / "src", [Utterance("s-1", "s", str(tmp_path / "gone.wav"), "HI", 1.0)])
    cmd = ["--src", str(src), "--out", str(tmp_path / "sp"), "--factors", "0.9"]
    assert exit_code(speed_perturb_cli.main, cmd) == 2
    one_error(caplog, str(src / "wav.scp"), "s-1", "gone.wav")
    assert not (tmp_path / "sp").exists()


def test_speed_perturb_with_a_crlf_data_dir_is_one_error(tmp_path, caplog) -> None:
    src = write_data_dir(tmp_path / "src", [Utterance("s-1", "s", str(tone(tmp_path / "a.wav", 800)), "HI", 0.05)])
    (src / "text").write_bytes(b"s-1 HI\rs-2 HO\r")  # CR-only line ends: two utterances would silently become one
    assert exit_code(speed_perturb_cli.main, ["--src", str(src), "--out", str(tmp_path / "sp")]) == 2
    one_error(caplog, f"{src / 'text'}:1", "carriage return")


# ----------------------------------------------------------------- merge schedule files
GROUP = "- layers: [0, 1]\n  lambda: 0.3\n  alpha: 0.5\n"


def test_schedule_file_with_bom_and_crlf_loads(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(BOM + GROUP.replace("\n", "\r\n").encode())
    assert load_schedule(path).groups[0].layers == (0, 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("- layers: [0, 1]\n  lambda: 'caf\u00e9'\n  alpha: 0.5\n".encode("latin-1"), ":2: schedule file is not valid UTF-8"),
        (b"", "the schedule file is empty"),
        (b"- layers: [0, 1\n  lambda: 0.3\n", "not valid YAML: line "),
        (b"- layers: [0, 1]\n\tlambda: 0.3\n", "not valid YAML: line 2"),
        (b"- layers: [0, 1]\n  lambda: '0.3'\n  alpha: 0.5\n", "'lambda' must be a number"),
        (b"coeficients: [0.5, 0.5]\n", "give exactly one of"),
        (b"0.3\n", "expected a list of groups or a mapping"),
    ],
    ids=["latin1", "empty", "unclosed_list", "tab_indent", "number_as_string", "typo_top_key", "scalar"],
)
def test_bad_schedule_files_are_one_line_naming_the_file(tmp_path, data, message) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(data)
    with pytest.raises(ScheduleError) as info:
        load_schedule(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_schedule_path_that_is_a_folder(tmp_path) -> None:
    (tmp_path / "s.yaml").mkdir()
    with pytest.raises(FileNotFoundError, match=r"s.yaml: no such schedule file \(it is a folder\)"):
        load_schedule(tmp_path / "s.yaml")


def test_as_the_stage_engine_runs_it_stderr_has_one_error_line_and_no_traceback(tmp_path) -> None:
    import subprocess
    import sys

    scp = tmp_path / "data" / "dev" / "wav.scp"
    scp.parent.mkdir(parents=True)
    scp.write_bytes(BOM + f"s-1 {tmp_path / 'gone.wav'}\r\n".encode())
    proc = subprocess.run([sys.executable, "-m", "espnet_delta.recipe.make_shapes", "--data_dir", str(tmp_path / "data"),
                           "--sets", "dev", "--out_dir", str(tmp_path / "shapes")], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and f"{scp}:1: s-1: cannot read {tmp_path / 'gone.wav'}" in errors[0], proc.stderr
