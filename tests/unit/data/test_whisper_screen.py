"""The Whisper screening stage: transcription with a tiny random Whisper (one hypothesis per
utterance, resume, shards, one-line load errors), the WER filter on a constructed MyST tree
with hand-computed WERs, and the MyST local/data.sh's two-pass screening."""

from __future__ import annotations

import logging
import os
import subprocess
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_delta.bin import transcribe_whisper as cli
from espnet_delta.data.kaldi_dir import read_data_dir
from espnet_delta.data.prepare import PrepConfig, prepare_data
from espnet_delta.data.screen import word_error_rate
from espnet_delta.whisper.load import WhisperLoadError
from espnet_delta.whisper.tiny import TinyWhisperConfig, make_tiny_whisper
from espnet_delta.whisper.transcribe import TranscribeConfig, load_whisper, transcribe_wav_scps, windows

REPO = Path(__file__).resolve().parents[3]
MYST_DATA_SH = REPO / "egs2" / "myst" / "asr1" / "local" / "data.sh"
TINY = TinyWhisperConfig(n_audio_state=32, n_audio_layer=1, n_text_state=32, n_text_layer=1)
MAX_TOKENS = 4  # a random model rarely ends by itself: every window decodes this many tokens


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny.pt", seed=0, config=TINY)


@pytest.fixture(scope="module")
def tiny_model(tiny_whisper):
    return load_whisper(str(tiny_whisper))


def write_wav(path: Path, seconds: float, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = 0.05 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))
    soundfile.write(str(path), noise, 16000, subtype="PCM_16")
    return path


@pytest.fixture()
def wav_scp(tmp_path) -> Path:
    ids = ["spk1-u2", "spk1-u0", "spk2-u1"]  # not sorted on purpose
    lines = [f"{utt} {write_wav(tmp_path / 'wav' / f'{utt}.wav', 0.4 + 0.3 * k, seed=k)}\n" for k, utt in enumerate(ids)]
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(lines))
    return scp


def rows(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t", 1)) for line in path.read_text(encoding="utf-8").split("\n")[:-1]]


def config(model: Path | str, **kw) -> TranscribeConfig:
    return TranscribeConfig(model=str(model), max_tokens=MAX_TOKENS, batch_size=2, **kw)


# ----------------------------------------------------------------------------- transcription
def test_one_hypothesis_per_utterance(tmp_path, wav_scp, tiny_whisper, tiny_model) -> None:
    out = tmp_path / "hyp.tsv"
    result = transcribe_wav_scps([wav_scp], out, config(tiny_whisper), progress=False, model=tiny_model)
    assert result.complete and result.num_utts == 3 and result.num_transcribed == 3
    lines = rows(out)
    assert [utt for utt, _ in lines] == ["spk1-u0", "spk1-u2", "spk2-u1"]  # every id once, sorted
    assert all("\t" not in hyp and "\n" not in hyp for _, hyp in lines)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("hyp.tsv")) == ["hyp.tsv", "hyp.tsv.json"]
    # deterministic: greedy, no sampling
    again = transcribe_wav_scps([wav_scp], tmp_path / "again.tsv", config(tiny_whisper), progress=False, model=tiny_model)
    assert again.complete and rows(tmp_path / "again.tsv") == lines


def test_resume_keeps_earlier_hypotheses(tmp_path, wav_scp, tiny_whisper, tiny_model) -> None:
    out = tmp_path / "hyp.tsv"
    transcribe_wav_scps([wav_scp], tmp_path / "ref.tsv", config(tiny_whisper), progress=False, model=tiny_model)
    fresh = dict(rows(tmp_path / "ref.tsv"))
    # an interrupted run: two finished lines (one an empty hypothesis), one torn line (no newline)
    (tmp_path / "hyp.tsv.part1of1").write_text("spk1-u2\tKEPT FROM BEFORE\nspk1-u0\t\nspk2-u1\thalf a li",
                                               encoding="utf-8")
    result = transcribe_wav_scps([wav_scp], out, config(tiny_whisper), progress=False, model=tiny_model)
    assert (result.num_skipped, result.num_transcribed, result.complete) == (2, 1, True)
    assert out.read_text(encoding="utf-8").startswith("spk1-u0\t\n")  # the empty hypothesis stays empty
    assert dict(rows(out)) == {"spk1-u0": "", "spk1-u2": "KEPT FROM BEFORE", "spk2-u1": fresh["spk2-u1"]}
    assert not (tmp_path / "hyp.tsv.part1of1").exists()
    # complete: a rerun loads no model (this name would fail to load) and changes nothing
    before = out.read_bytes()
    result = transcribe_wav_scps([wav_scp], out, config("no-such-model"), progress=False)
    assert (result.num_skipped, result.num_transcribed) == (3, 0) and out.read_bytes() == before


def test_other_settings_are_not_mixed_in(tmp_path, wav_scp, tiny_whisper, tiny_model) -> None:
    out = tmp_path / "hyp.tsv"
    transcribe_wav_scps([wav_scp], out, config(tiny_whisper), nj=3, shard=1, progress=False, model=tiny_model)
    with pytest.raises(ValueError, match="max_tokens: 4 there, 5 now"):
        transcribe_wav_scps([wav_scp], out, TranscribeConfig(model=str(tiny_whisper), max_tokens=5),
                            nj=3, shard=2, progress=False, model=tiny_model)


def test_shards_write_the_output_once_all_are_done(tmp_path, wav_scp, tiny_whisper, tiny_model) -> None:
    out = tmp_path / "hyp.tsv"
    first = transcribe_wav_scps([wav_scp], out, config(tiny_whisper), nj=2, shard=1, progress=False, model=tiny_model)
    # round-robin over sorted ids: shard 1 holds spk1-u0 and spk2-u1
    assert (first.num_transcribed, first.complete) == (2, False) and not out.exists()
    assert [u for u, _ in rows(tmp_path / "hyp.tsv.part1of2")] == ["spk1-u0", "spk2-u1"]
    second = transcribe_wav_scps([wav_scp], out, config(tiny_whisper), nj=2, shard=2, progress=False, model=tiny_model)
    assert (second.num_transcribed, second.complete) == (1, True)
    assert [u for u, _ in rows(out)] == ["spk1-u0", "spk1-u2", "spk2-u1"]
    assert not list(tmp_path.glob("hyp.tsv.part*"))


def test_long_audio_is_cut_into_equal_windows_of_at_most_30_s() -> None:
    assert [len(w) for w in windows(np.zeros(30 * 16000))] == [480000]
    assert [len(w) for w in windows(np.zeros(31 * 16000))] == [248000, 248000]
    assert [len(w) for w in windows(np.zeros(61 * 16000 + 1))] == [325334, 325334, 325333]


def one_error_line(caplog) -> str:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "\n" not in message and "Traceback" not in caplog.text
    return message


def test_unknown_model_is_one_error_line(tmp_path, wav_scp, caplog) -> None:
    status = cli.main(["--model", "no-such-model", "--wav_scp", str(wav_scp), "--out", str(tmp_path / "h.tsv"),
                       "--progress", "false"])
    assert status == 1 and "'no-such-model'" in one_error_line(caplog)
    assert not (tmp_path / "h.tsv").exists()


def test_hub_model_without_network_is_one_error_line(tmp_path, wav_scp, caplog, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    status = cli.main(["--model", "large-v2", "--download_root", str(tmp_path / "cache"), "--wav_scp", str(wav_scp),
                       "--out", str(tmp_path / "h.tsv"), "--progress", "false"])
    message = one_error_line(caplog)
    assert status == 1 and "'large-v2'" in message and str(tmp_path / "cache") in message


def test_corrupt_checkpoint_is_one_error_line(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WhisperLoadError) as info:
        load_whisper(str(bad))
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- the WER filter
#: (split, utt number, MyST transcript, Whisper hypothesis, hand-computed WER after normalisation)
CASES = [
    ("train", 0, "i have 2 cats", "I have two cats.", 0 / 4),
    ("train", 1, "the magnet sticks to the nail", "the magnet is stuck", 4 / 6),  # 2 S + 2 D
    ("train", 2, "the ice melts fast", "the ice", 2 / 4),  # exactly 50 %: kept (the filter is WER > 50 %)
    ("train", 3, "plants need water to grow", "", 5 / 5),  # empty hypothesis: all deletions
    ("train", 4, "um the ((wire)) is 3 inches long", "The wire is three inches long.", 1 / 5),  # 1 I (guess dropped)
    ("train", 5, "the sun is hot", "the sun is hot and bright and big today", 5 / 4),  # 5 I
    ("development", 0, "we can push the magnet", "we can push a magnet", 1 / 5),
    ("development", 1, "the 2nd bulb is brighter", "the dog is barking", 3 / 5),  # 2 S + 1 D
    ("test", 0, "the 2nd bulb is brighter", "The second bulb is brighter.", 0 / 5),
    ("test", 1, "it floats on water", "it flows on the water", 2 / 4),  # 1 S + 1 I
    ("test", 2, "the rock sinks fast", "no", 4 / 4),  # 1 S + 3 D
]
SPLIT = {"train": "train", "development": "dev", "test": "test"}


def utt_id(split: str, n: int) -> str:
    return f"s_{split}-s_{split}_a_{n:03d}"


def build_myst(root: Path) -> None:
    for split, n, text, _, _ in CASES:
        base = root / "data" / split / f"s_{split}" / f"s_{split}_a" / f"s_{split}_a_{n:03d}"
        write_wav(base.with_suffix(".flac"), 2.0, seed=n)
        base.with_suffix(".trn").write_text(text + "\n", encoding="utf-8")


@pytest.mark.parametrize(("ref", "hyp", "wer"), [(c[2], c[3], c[4]) for c in CASES])
def test_word_error_rate_after_normalisation(ref: str, hyp: str, wer: float) -> None:
    assert word_error_rate(ref, hyp) == pytest.approx(wer)


def test_filter_drops_exactly_the_utterances_above_50_percent(tmp_path) -> None:
    build_myst(tmp_path / "myst")
    hyp = tmp_path / "whisper.tsv"
    hyp.write_text("".join(f"{utt_id(s, n)}\t{h}\n" for s, n, _, h, _ in CASES), encoding="utf-8")
    stats = {s.name: s for s in prepare_data(tmp_path / "data", tmp_path / "myst", None, hyp,
                                               PrepConfig(subset_hours=()))}
    for folder, name in SPLIT.items():
        expected = sorted(utt_id(s, n) for s, n, _, _, wer in CASES if s == folder and wer <= 0.5)
        dropped = sum(1 for s, *_, wer in CASES if s == folder and wer > 0.5)
        assert sorted(u.utt_id for u in read_data_dir(tmp_path / "data" / name)) == expected, name
        assert stats[name].dropped["whisper_wer"] == dropped and stats[name].notes["no_whisper_hyp"] == 0
    assert [stats[n].dropped["whisper_wer"] for n in ("train", "dev", "test")] == [3, 1, 1]


# ----------------------------------------------------------- egs2/myst/asr1/local/data.sh
def test_data_sh_transcribes_a_missing_hypothesis_file_then_filters(tmp_path, tiny_whisper) -> None:
    build_myst(tmp_path / "myst")
    data, hyp = tmp_path / "data", tmp_path / "data" / "whisper_tiny.tsv"
    env = {**os.environ, "exp_dir": str(tmp_path / "exp")}

    def data_sh(model: str) -> subprocess.CompletedProcess:
        # a random Whisper writes noise: --max_wer 1e6 keeps everything, so the plumbing is what is tested
        cmd = ["bash", str(MYST_DATA_SH), "--myst", str(tmp_path / "myst"), "--data_dir", str(data),
               "--whisper_model", model, "--whisper_hyp", str(hyp), "--max_wer", "1e6", "--subset_hours", "",
               "--whisper_opts", f"--max_tokens {MAX_TOKENS} --progress false"]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)

    proc = data_sh(str(tiny_whisper))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pass 1" in proc.stdout
    screened = sorted(utt_id(s, n) for s, n, *_ in CASES)
    assert [u for u, _ in rows(hyp)] == screened  # train, dev and test, one line each
    summary = (data / "prep_summary.tsv").read_text().splitlines()
    header = summary[0].split("\t")
    for line in summary[1:]:
        row = dict(zip(header, line.split("\t")))
        if row["split"] in ("train", "dev", "test"):
            assert row["no_whisper_hyp"] == "0", row  # every screened utterance had a hypothesis
    kept = sorted(u.utt_id for name in ("train", "dev", "test") for u in read_data_dir(data / name))
    assert kept == screened
    # the file exists now: no transcription, so a model that cannot load is never touched
    proc = data_sh("no-such-model")
    assert proc.returncode == 0 and "pass 1" not in proc.stdout, proc.stdout + proc.stderr
