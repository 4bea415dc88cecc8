"""The synthetic mini corpus: deterministic, idempotent, readable by the corpus preparation."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import soundfile

from conftest import needs_mini_corpus_tools
from espnet_delta.bin import make_mini_corpus as mini_cli
from espnet_delta.data.kaldi_dir import read_data_dir
from espnet_delta.data.mini_corpus import MARKER, make_mini_corpus, make_sentence
from espnet_delta.data.prepare import PrepConfig, prepare_data
from espnet_delta.data.report import BAD_INPUT_REASONS
from espnet_delta.data.text_norm import normalize_transcript

pytestmark = needs_mini_corpus_tools

TINY = 0.01  # 2 + 1 + 1 child speakers, 2 + 1 + 1 adult speakers, 26 utterances


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_mini_corpus(tmp_path_factory.mktemp("mini") / "corpus", scale=TINY, seed=0, nj=2).root


def test_deterministic_bytes(tiny, tmp_path) -> None:
    again = make_mini_corpus(tmp_path / "again", scale=TINY, seed=0, nj=1).root
    assert digest(again) == digest(tiny)
    assert len([p for p in digest(tiny) if p.endswith(".flac")]) == json.loads((tiny / MARKER).read_text())["utterances"]


def test_layout_and_audio_format(tiny) -> None:
    trn = sorted((tiny / "myst" / "data").glob("*/*/*/*.trn"))
    assert {p.parents[2].name for p in trn} == {"train", "development", "test"}
    assert all(p.with_suffix(".flac").is_file() for p in trn)
    assert sorted(p.name for p in (tiny / "librispeech").iterdir()) == ["dev-clean", "test-clean", "train-clean-100"]
    for flac in list((tiny / "myst").rglob("*.flac"))[:3] + list((tiny / "librispeech").rglob("*.flac"))[:3]:
        info = soundfile.info(str(flac))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 0.3 < info.duration < 60


def test_idempotent_and_parameter_change(tiny, tmp_path) -> None:
    root = tmp_path / "c"
    make_mini_corpus(root, scale=TINY)
    marker_mtime = (root / MARKER).stat().st_mtime_ns
    make_mini_corpus(root, scale=TINY)  # complete: nothing is rewritten
    assert (root / MARKER).stat().st_mtime_ns == marker_mtime
    make_mini_corpus(root, scale=TINY, seed=1)  # ours but stale: regenerated
    assert json.loads((root / MARKER).read_text())["seed"] == 1
    assert not any(p.name.startswith(".") and p.name != root.name for p in tmp_path.iterdir())


def test_refuses_foreign_folder(tmp_path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        make_mini_corpus(tmp_path / "x", scale=TINY)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_prepared_without_bad_input(tiny, tmp_path) -> None:
    before = digest(tiny)
    stats = {s.name: s for s in prepare_data(tmp_path / "data", tiny / "myst", tiny / "librispeech", config=PrepConfig(subset_hours=(0.002,)))}
    assert digest(tiny) == before
    assert set(stats) == {"train", "dev", "test", "libri_train", "libri_dev", "libri_test", "train_7p2s"}
    for s in stats.values():
        assert s.kept > 0, s.name
        assert not any(s.dropped[r] for r in BAD_INPUT_REASONS), (s.name, dict(s.dropped))
        assert s.notes["resampled"] == 0
    texts = [u.text for u in read_data_dir(tmp_path / "data" / "train")]
    assert all(t == normalize_transcript(t) and "<" not in t for t in texts)


def test_grammar_vocabulary_is_small() -> None:
    rng = random.Random(0)
    sentences = [make_sentence(rng) for _ in range(3000)]
    vocab = {w for s in sentences for w in normalize_transcript(s).split()}
    assert 50 <= len(vocab) <= 100
    assert all(3 <= len(s.split()) <= 8 for s in sentences)


def test_cli(tmp_path) -> None:
    assert mini_cli.main(["--out", str(tmp_path / "cli"), "--scale", str(TINY), "--nj", "1", "--log_level", "ERROR"]) == 0
    assert (tmp_path / "cli" / MARKER).is_file()
