"""MyST/LibriSpeech preparation on small trees built here, bad input, data dir validation."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import needs_mini_corpus_tools
from espnet_delta.bin import prepare_data as prepare_cli
from espnet_delta.data.kaldi_dir import DataDirError, Utterance, read_data_dir, validate_data_dir, write_data_dir
from espnet_delta.data.prepare import SUMMARY_NAME, PrepConfig, prepare_data
from espnet_delta.data.report import BAD_INPUT_REASONS

REPO = Path(__file__).resolve().parents[3]


# ----------------------------------------------------------------- builders
def write_audio(path: Path, seconds: float, rate: int = 16000, channels: int = 1, fmt: str = "FLAC") -> Path:
    """A quiet sine (deterministic) so soundfile/sox have real content to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.1 * np.sin(2 * np.pi * 220 * t)
    data = wave if channels == 1 else np.stack([wave] * channels, axis=1)
    soundfile.write(str(path), data, rate, format=fmt, subtype="PCM_16")
    return path


def myst_utt(root: Path, split: str, student: str, session: str, n: int, text: bytes | str | None, seconds: float = 1.0, **audio_kw) -> Path:
    base = root / "data" / split / student / session / f"{session}_{n:03d}"
    write_audio(base.with_suffix(".flac"), seconds, **audio_kw)
    if text is not None:
        base.with_suffix(".trn").write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return base


@pytest.fixture()
def myst(tmp_path: Path) -> Path:
    """A MyST tree with every bad-input case in train; ids in comments are the utt ids."""
    root = tmp_path / "myst"
    s1, s2 = "myst_001_sa", "myst_002_sb"
    myst_utt(root, "train", "myst_001", s1, 0, "the magnet sticks to the nail\n")  # kept
    myst_utt(root, "train", "myst_001", s1, 1, "Um, the ((wire)) is HOT <NOISE> today.\n")  # kept, cleaned
    myst_utt(root, "train", "myst_001", s1, 2, None)  # missing_transcript
    bad = root / "data/train/myst_001" / s1 / f"{s1}_003"
    bad.with_suffix(".flac").write_bytes(b"this is not audio at all")  # unreadable_audio
    bad.with_suffix(".trn").write_text("a perfectly fine transcript here\n")
    empty = root / "data/train/myst_001" / s1 / f"{s1}_004"
    empty.with_suffix(".flac").write_bytes(b"")  # empty_audio (0 bytes)
    empty.with_suffix(".trn").write_text("there is no sound here\n")
    empty_wav = root / "data/train/myst_001" / s1 / f"{s1}_009"
    soundfile.write(str(empty_wav.with_suffix(".wav")), np.zeros(0), 16000)  # empty_audio (0 frames)
    empty_wav.with_suffix(".trn").write_text("there is no sound here either\n")
    myst_utt(root, "train", "myst_001", s1, 5, b"caf\xe9 is a french word\n")  # non_utf8_text
    myst_utt(root, "train", "myst_001", s1, 6, "<NOISE> (( )) um\n")  # empty_after_cleaning
    myst_utt(root, "train", "myst_001", s1, 7, "yes okay\n")  # too_few_words
    myst_utt(root, "train", "myst_001", s1, 8, "a very long answer indeed\n", seconds=31.0)  # too_long
    myst_utt(root, "train", "myst_002", s2, 0, "plants need water to grow\n", rate=8000)  # resampled, kept
    myst_utt(root, "train", "myst_002", s2, 1, "the sun makes heat and light\n", channels=2)  # resampled, kept
    myst_utt(root, "train", "myst_002", s2, 2, "the rock is heavy and big\n")  # whisper_wer (see hyp file)
    myst_utt(root, "train", "myst_002", s2, 3, "the circuit needs a battery\n")  # kept, hyp good
    orphan = root / "data/train/myst_002" / s2 / f"{s2}_004.trn"
    orphan.write_text("a transcript without its audio\n")  # missing_audio
    myst_utt(root, "development", "myst_003", "myst_003_sc", 0, "we can push the magnet\n")
    myst_utt(root, "test", "myst_004", "myst_004_sd", 0, "the ice melts when it is hot\n")
    myst_utt(root, "test", "myst_004", "myst_004_sd", 1, "a long test answer about rocks\n", seconds=31.0)
    return root


@pytest.fixture()
def whisper_hyp(tmp_path: Path) -> Path:
    path = tmp_path / "whisper.tsv"
    path.write_text(
        "myst_002-myst_002_sb_002\tthe dog is happy\n"  # by utt id: WER 0.8 -> dropped
        "myst_002_sb_003\tThe circuit needs a battery.\n"  # by MyST basename: WER 0 -> kept
        "myst_001-myst_001_sa_000\tthe magnet sticks to a nail\n",  # WER 0.17 -> kept
        encoding="utf-8",
    )
    return path


@pytest.fixture()
def libri(tmp_path: Path) -> Path:
    root = tmp_path / "librispeech"
    chap = root / "train-clean-100" / "19" / "198"
    for k in range(3):
        write_audio(chap / f"19-198-{k:04d}.flac", 1.0)
    write_audio(chap / "19-198-0009.flac", 1.0)  # no transcript line -> missing_transcript
    (chap / "19-198.trans.txt").write_bytes(
        b"19-198-0000 NORTHANGER ABBEY\n"  # two words: kept (no min_words filter for LibriSpeech)
        b"19-198-0001 THIS LITTLE WORK WAS FINISHED\n"
        b"19-198-0002 CAF\xc9 AU LAIT\n"  # non_utf8_text
        b"19-198-0005 A LINE WITHOUT AUDIO\n"  # missing_audio
    )
    dev = root / "dev-clean" / "84" / "121123"
    write_audio(dev / "84-121123-0000.flac", 1.0)
    (dev / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """relative path -> (size, mtime_ns, sha1) of every file and folder under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        digest = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns, digest)
    return out


def stats_by_name(stats):
    return {s.name: s for s in stats}


# ----------------------------------------------------------------- preparation
def test_myst_and_librispeech_bad_input(tmp_path, myst, libri, whisper_hyp, caplog) -> None:
    before = snapshot(myst), snapshot(libri)
    out = tmp_path / "data"
    caplog.set_level(logging.WARNING)
    stats = stats_by_name(prepare_data(out, myst, libri, whisper_hyp, PrepConfig(subset_hours=())))
    assert (snapshot(myst), snapshot(libri)) == before, "corpus tree changed"

    train = stats["train"]
    assert dict(train.dropped) == {
        "missing_transcript": 1,
        "missing_audio": 1,
        "unreadable_audio": 1,
        "empty_audio": 2,
        "non_utf8_text": 1,
        "empty_after_cleaning": 1,
        "too_few_words": 1,
        "too_long": 1,
        "whisper_wer": 1,
    }
    assert train.notes["resampled"] == 2
    assert train.notes["no_whisper_hyp"] == 3  # kept utterances absent from the hyp file
    utts = {u.utt_id: u for u in read_data_dir(out / "train")}
    assert sorted(utts) == [
        "myst_001-myst_001_sa_000",
        "myst_001-myst_001_sa_001",
        "myst_002-myst_002_sb_000",
        "myst_002-myst_002_sb_001",
        "myst_002-myst_002_sb_003",
    ]
    assert utts["myst_001-myst_001_sa_001"].text == "THE IS HOT TODAY"
    assert train.kept == 5 and train.seconds == pytest.approx(5.0, abs=0.01)

    # resampled audio lives under the output dir, at 16 kHz mono
    for utt_id in ("myst_002-myst_002_sb_000", "myst_002-myst_002_sb_001"):
        wav = Path(utts[utt_id].wav)
        assert out in wav.parents
        info = soundfile.info(str(wav))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert utts[utt_id].duration == pytest.approx(1.0, abs=0.01)

    # every bad input is logged with its file
    logged = caplog.text
    for name in ("myst_001_sa_002.flac", "myst_001_sa_003.flac", "myst_001_sa_004.flac", "myst_001_sa_009.wav", "myst_001_sa_005.trn",
                 "myst_001_sa_006.trn", "myst_002_sb_004.trn", "19-198-0009.flac", "19-198.trans.txt"):
        assert name in logged, name
    for reason in ("missing_transcript", "unreadable_audio", "empty_audio", "non_utf8_text", "empty_after_cleaning", "missing_audio"):
        assert f"({reason})" in logged

    # test is filtered like train by default
    assert stats["test"].kept == 1 and stats["test"].dropped["too_long"] == 1
    assert stats["dev"].kept == 1

    lib = stats["libri_train"]
    assert lib.kept == 2
    assert dict(lib.dropped) == {"missing_transcript": 1, "non_utf8_text": 1, "missing_audio": 1}
    assert [u.text for u in read_data_dir(out / "libri_train")] == ["NORTHANGER ABBEY", "THIS LITTLE WORK WAS FINISHED"]
    assert stats["libri_dev"].kept == 1 and "libri_test" not in stats

    for split in ("train", "dev", "test", "libri_train", "libri_dev"):
        validate_data_dir(out / split)
    rows = (out / SUMMARY_NAME).read_text().splitlines()
    header = rows[0].split("\t")
    train_row = dict(zip(header, next(r for r in rows if r.startswith("train\t")).split("\t")))
    assert train_row["utts"] == "5" and train_row["whisper_wer"] == "1" and train_row["resampled"] == "2"


def test_keep_long_test_and_no_whisper(tmp_path, myst) -> None:
    stats = stats_by_name(prepare_data(tmp_path / "data", myst, config=PrepConfig(keep_long_test=True, subset_hours=())))
    assert stats["test"].kept == 2 and stats["test"].dropped["too_long"] == 0
    assert stats["train"].dropped["too_long"] == 1  # only test is exempt
    assert stats["train"].dropped["whisper_wer"] == 0 and stats["train"].notes["no_whisper_hyp"] == 0
    assert stats["train"].kept == 6


def test_rerun_replaces_cleanly_and_subsets(tmp_path, myst) -> None:
    out = tmp_path / "data"
    prepare_data(out, myst, config=PrepConfig(subset_hours=(2 / 3600,)))
    (out / "train" / "stale_file").write_text("x")
    stats = stats_by_name(prepare_data(out, myst, config=PrepConfig(subset_hours=(2 / 3600, 1.0))))
    assert not (out / "train" / "stale_file").exists()
    assert not any(p.name.startswith(".") for p in out.iterdir()), "temporary dirs left behind"
    assert stats["train_2s"].kept >= 2  # 2 s target, 1 s utterances
    assert stats["train_1h"].kept == 0 and "skipped" in stats["train_1h"].comment
    assert not (out / "train_1h").exists()
    validate_data_dir(out / "train_2s")


def test_output_inside_corpus_is_refused(myst) -> None:
    with pytest.raises(ValueError, match="inside corpus"):
        prepare_data(myst / "data" / "prepared", myst)


def test_cli_prints_summary(tmp_path, myst, libri, capsys) -> None:
    argv = ["--myst", str(myst), "--librispeech", str(libri), "--out", str(tmp_path / "d")]
    rc = prepare_cli.main(argv + ["--subset_hours", "", "--log_level", "ERROR"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "libri_train" in table and "too_few_words" in table and "missing_transcript" in table
    assert set(BAD_INPUT_REASONS) <= set(table.split())


def test_data_sh_wrapper(tmp_path, myst) -> None:
    """egs2/myst/asr1/local/data.sh (run from anywhere) prepares MyST as the library does."""
    script = REPO / "egs2" / "myst" / "asr1" / "local" / "data.sh"
    argv = ["bash", str(script), "--myst", str(myst), "--data_dir", str(tmp_path / "d")]
    ok = subprocess.run(argv + ["--subset_hours", "", "--keep_long_test", "true"], capture_output=True, text=True,
                        cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert len((tmp_path / "d" / "test" / "text").read_text().splitlines()) == 2
    prepare_data(tmp_path / "ref", myst, config=PrepConfig(subset_hours=(), keep_long_test=True))
    assert tree_bytes(tmp_path / "d", myst) == tree_bytes(tmp_path / "ref", myst)
    bad = subprocess.run(["bash", str(script), "--myst", str(myst), "--bogus", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stdout + bad.stderr


def tree_bytes(root: Path, corpus: Path) -> dict:
    """relative path -> bytes of every file under root, with the root and corpus folders written D and C."""
    def rel(data: bytes) -> bytes:
        return data.replace(str(corpus).encode(), b"C").replace(str(root).encode(), b"D")

    return {p.relative_to(root).as_posix(): rel(p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


@needs_mini_corpus_tools
def test_mini_data_sh_generates_the_corpus_then_prepares_it_as_myst(tmp_path) -> None:
    """egs2/mini_myst/asr1/local/data.sh = make_mini_corpus + the MyST preparation (MyST and LibriSpeech parts)."""
    from espnet_delta.data.mini_corpus import make_mini_corpus

    script = REPO / "egs2" / "mini_myst" / "asr1" / "local" / "data.sh"
    corpus, data = tmp_path / "corpus", tmp_path / "data"
    argv = ["bash", str(script), "--mini_corpus_dir", str(corpus), "--mini_corpus_scale", "0.01", "--nj", "1",
            "--data_dir", str(data), "--subset_hours", "0.001", "--subset_seed", "3", "--min_words", "4"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ref_corpus = make_mini_corpus(tmp_path / "ref_corpus", scale=0.01, seed=0, nj=1)
    config = PrepConfig(subset_hours=(0.001,), seed=3, min_words=4)
    prepare_data(tmp_path / "ref", ref_corpus.myst_root, ref_corpus.librispeech_root, config=config)
    got, want = tree_bytes(data, corpus), tree_bytes(tmp_path / "ref", ref_corpus.root)
    assert {"train/text", "test/text", "libri_train/text", "train_3p6s/text"} <= set(got)  # 0.001 h = 3.6 s
    assert got == want


# ----------------------------------------------------------------- data dir validation
def utt(spk: str, n: int, text: str = "HELLO WORLD") -> Utterance:
    return Utterance(f"{spk}-{n:03d}", spk, f"/a/{spk}_{n}.flac", text, 1.5)


@pytest.fixture()
def good_dir(tmp_path) -> Path:
    return write_data_dir(tmp_path / "d", [utt("spkB", 1), utt("spkA", 2), utt("spkA", 1), utt("spkA10", 1)])


def test_write_sorted_and_valid(good_dir) -> None:
    assert validate_data_dir(good_dir) == 4
    keys = [line.split()[0] for line in (good_dir / "utt2spk").read_text().splitlines()]
    assert keys == sorted(keys, key=lambda k: k.encode())
    assert (good_dir / "spk2utt").read_text().splitlines()[0] == "spkA spkA-001 spkA-002"
    assert (good_dir / "utt2dur").read_text().splitlines()[0] == "spkA-001 1.500"


def _edit(path: Path, fn) -> None:
    lines = path.read_text().splitlines()
    path.write_text("".join(f"{x}\n" for x in fn(lines)))


@pytest.mark.parametrize(
    ("file", "edit", "message", "line"),
    [
        ("text", lambda ls: [ls[1], ls[0], *ls[2:]], "not sorted", 2),
        ("wav.scp", lambda ls: [ls[0], ls[0], *ls[1:]], "duplicate id", 2),
        ("wav.scp", lambda ls: ls[1:], "has no entry in wav.scp", 1),
        ("text", lambda ls: [ls[0].split()[0], *ls[1:]], "empty text", 1),
        ("spk2utt", lambda ls: [ls[0].rsplit(" ", 1)[0], *ls[1:]], "differ from utt2spk", 1),
        ("spk2utt", lambda ls: ls[:-1], "is missing", None),
        ("utt2spk", lambda ls: ls[1:], "has no entry in utt2spk", 1),
        ("utt2spk", lambda ls: [ls[0].split()[0] + " spkB", *ls[1:]], "does not start with its speaker", 1),
        ("utt2dur", lambda ls: [ls[0].split()[0] + " -1", *ls[1:]], "bad duration", 1),
    ],
)
def test_validation_errors(good_dir, file, edit, message, line) -> None:
    _edit(good_dir / file, edit)
    with pytest.raises(DataDirError, match=message) as info:
        validate_data_dir(good_dir)
    assert info.value.path is not None and Path(info.value.path).parent == good_dir
    assert info.value.line == line


def test_missing_file(good_dir) -> None:
    (good_dir / "utt2dur").unlink()
    with pytest.raises(DataDirError, match="utt2dur: file is missing"):
        validate_data_dir(good_dir)


@pytest.mark.parametrize(
    ("utts", "message"),
    [
        ([Utterance("a-1", "b", "/x.flac", "HI", 1.0)], "does not start with its speaker"),
        ([utt("s", 1), utt("s", 1)], "duplicate utterance id"),
        ([utt("s", 1, text="  ")], "empty"),
        ([Utterance("s x", "s", "/x.flac", "HI", 1.0)], "whitespace"),
        # '_' separator with speaker ids of different lengths: Kaldi sort orders disagree
        ([Utterance("ab_1", "ab", "/x", "HI", 1.0), Utterance("ab0_1", "ab0", "/y", "HI", 1.0)], "disagree"),
        ([], "no utterances"),
    ],
)
def test_write_refuses_bad_utterances(tmp_path, utts, message) -> None:
    with pytest.raises(DataDirError, match=message):
        write_data_dir(tmp_path / "d", utts)
    assert not (tmp_path / "d").exists()


def test_failed_write_keeps_previous_dir(good_dir) -> None:
    before = (good_dir / "text").read_text()
    with pytest.raises(DataDirError):
        write_data_dir(good_dir, [utt("s", 1), utt("s", 1)])
    assert (good_dir / "text").read_text() == before
    assert sorted(p.name for p in good_dir.parent.iterdir()) == ["d"]
    shutil.rmtree(good_dir)


# ----------------------------------------------------------------- ids with whitespace, CTC feasibility
def write_samples(path: Path, samples: int) -> Path:
    """A 16 kHz FLAC of exactly ``samples`` samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = 0.1 * np.sin(2 * np.pi * 220 * np.arange(samples) / 16000)
    soundfile.write(str(path), wave, 16000, format="FLAC", subtype="PCM_16")
    return path


def myst_file(root: Path, split: str, student: str, name: str, text: str, samples: int = 16000) -> Path:
    """``<root>/data/<split>/<student>/<student>_s/<name>.{flac,trn}``."""
    base = root / "data" / split / student / f"{student}_s" / name
    write_samples(base.with_name(base.name + ".flac"), samples)
    base.with_name(base.name + ".trn").write_text(text + "\n", encoding="utf-8")
    return base


def test_ids_with_whitespace_are_dropped_and_counted(tmp_path, caplog) -> None:
    root = tmp_path / "myst"
    myst_file(root, "train", "myst_001", "myst_001_s_000", "the magnet sticks to the nail")
    myst_file(root, "train", "myst_001", "myst_001_s_001 copy", "the wire is hot")  # space in the file name
    myst_file(root, "train", "myst 002", "myst 002_s_000", "plants need water")  # space in the student folder
    caplog.set_level(logging.WARNING)
    stats = stats_by_name(prepare_data(tmp_path / "data", root, config=PrepConfig(subset_hours=())))
    assert stats["train"].kept == 1 and dict(stats["train"].dropped) == {"bad_utt_id": 2}
    assert [u.utt_id for u in read_data_dir(tmp_path / "data" / "train")] == ["myst_001-myst_001_s_000"]
    assert "myst_001_s_001 copy.flac" in caplog.text and "myst 002_s_000.flac" in caplog.text
    assert "(bad_utt_id)" in caplog.text
    rows = (tmp_path / "data" / SUMMARY_NAME).read_text().splitlines()
    train_row = dict(zip(rows[0].split("\t"), rows[1].split("\t")))
    assert train_row["split"] == "train" and train_row["bad_utt_id"] == "2"


def test_utterances_too_short_for_ctc(tmp_path, caplog) -> None:
    # SSL frames = floor((samples - 400) / 320) + 1 (none below 400 samples).
    # "ADD ALL TOOLS": 13 labels (A D D <space> A L L <space> T O O L S) and 3 equal
    # neighbours (DD, LL, OO) that each need a blank between them: 16 frames.
    # 5200 samples: floor(4800 / 320) + 1 = 16 frames (enough); 5199: floor(4799 / 320) + 1 = 15.
    # "THE MAGNET IS SMALL": 19 labels + 1 (LL) = 20 frames; 0.01 s = 160 samples: 0 frames.
    root = tmp_path / "myst"
    myst_file(root, "train", "myst_001", "myst_001_s_000", "add all tools", samples=5200)
    myst_file(root, "train", "myst_001", "myst_001_s_001", "add all tools", samples=5199)
    myst_file(root, "train", "myst_001", "myst_001_s_002", "the magnet is small", samples=160)
    myst_file(root, "development", "myst_002", "myst_002_s_000", "the magnet is small", samples=160)
    myst_file(root, "development", "myst_002", "myst_002_s_001", "the magnet is small")
    myst_file(root, "test", "myst_003", "myst_003_s_000", "the magnet is small", samples=160)
    myst_file(root, "test", "myst_003", "myst_003_s_001", "add all tools", samples=5199)
    myst_file(root, "test", "myst_003", "myst_003_s_002", "the magnet is small")
    caplog.set_level(logging.WARNING)
    out = tmp_path / "data"
    stats = stats_by_name(prepare_data(out, root, config=PrepConfig(subset_hours=())))

    assert dict(stats["train"].dropped) == {"too_short_for_ctc": 2}
    assert [u.utt_id for u in read_data_dir(out / "train")] == ["myst_001-myst_001_s_000"]
    assert dict(stats["dev"].dropped) == {"too_short_for_ctc": 1} and stats["dev"].kept == 1
    assert "myst_001_s_001.flac" in caplog.text and "15 frames for 16" in caplog.text

    # test sets keep them (every reference counts in a WER) and the summary names them
    test = stats["test"]
    assert test.kept == 3 and not test.dropped and test.notes["kept_too_short_for_ctc"] == 2
    assert len(read_data_dir(out / "test")) == 3
    rows = (out / SUMMARY_NAME).read_text().splitlines()
    header = rows[0].split("\t")
    test_row = dict(zip(header, next(r for r in rows if r.startswith("test\t")).split("\t")))
    assert test_row["kept_too_short_for_ctc"] == "2" and test_row["too_short_for_ctc"] == "0"
    assert test_row["comment"] == "kept, too short for CTC: myst_003-myst_003_s_000 myst_003-myst_003_s_001"
    train_row = dict(zip(header, next(r for r in rows if r.startswith("train\t")).split("\t")))
    assert train_row["too_short_for_ctc"] == "2" and train_row["kept_too_short_for_ctc"] == "0"
