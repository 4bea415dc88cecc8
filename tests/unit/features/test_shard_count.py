"""The shard count of a feature cache is a scheduling knob, not part of the cache's identity."""

from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from conftest import first_utterances
from espnet_delta.data.wav_scp import read_wav_scp
from espnet_delta.features import extract as feature_extract
from espnet_delta.features.extract import extract_features

#: one utterance per batch: each matrix is computed alone, whichever shard holds it
BATCH = dict(batch_seconds=60.0, batch_size=1, progress=False, device="cpu")
N_UTTS = 5


@pytest.fixture(scope="module")
def data(mini_data, tmp_path_factory):
    return first_utterances(mini_data, tmp_path_factory.mktemp("data5") / "train", N_UTTS)


@pytest.fixture(scope="module")
def clean(cache_conf, cache_extractor, data, tmp_path_factory):
    """An uninterrupted 2-shard extraction."""
    out = tmp_path_factory.mktemp("clean") / "feats"
    result = extract_features(cache_conf, data, out, num_shards=2, extractor=cache_extractor, **BATCH)
    assert result.written == [1, 2] and result.merged
    return out


def features(out: Path) -> dict:
    return {utt: np.array(mat) for utt, mat in kaldiio.load_scp(str(out / "feats.scp")).items()}


def counting(monkeypatch) -> list:
    """Record the utterances whose matrices are written from now on."""
    real_write, calls = feature_extract.write_matrix, []
    monkeypatch.setattr(feature_extract, "write_matrix", lambda fd, utt, m: calls.append(utt) or real_write(fd, utt, m))
    return calls


def test_a_complete_cache_is_reused_with_another_shard_count(cache_conf, cache_extractor, clean, data,
                                                             tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "feats"
    shutil.copytree(clean, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    calls = counting(monkeypatch)
    result = extract_features(cache_conf, data, out, num_shards=3, extractor=cache_extractor, **BATCH)
    assert result.merged and result.written == [] and calls == []
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing rewritten or added
    assert list(features(out)) == [it.utt for it in read_wav_scp(data / "wav.scp")]


def test_a_partial_cache_is_resumed_with_another_shard_count(cache_conf, cache_extractor, clean, data,
                                                             tmp_path, monkeypatch):
    utts = [it.utt for it in read_wav_scp(data / "wav.scp")]  # sorted by id
    out = tmp_path / "feats"
    extract_features(cache_conf, data, out, num_shards=2, extractor=cache_extractor, **BATCH)
    # a run killed after shard 1: shard 2 and the merged files never written
    for name in ("feats.2.ark", "feats.2.scp", "feats.2.shape", "feats.scp", "feats_shape", "utt2num_frames"):
        (out / name).unlink()
    (out / "feats.2.ark.tmp").write_bytes(b"half a shard")  # what the killed shard left
    shard1 = (out / "feats.1.ark").read_bytes()
    assert sorted(kaldiio.load_scp(str(out / "feats.1.scp"))) == utts[0::2]  # round-robin: utterances 1, 3, 5

    calls = counting(monkeypatch)
    result = extract_features(cache_conf, data, out, num_shards=3, extractor=cache_extractor, **BATCH)
    assert result.merged and result.written == [1, 2, 3]
    assert sorted(calls) == utts[1::2]  # only what shard 1 lacked was computed, each utterance once
    assert (out / "feats.1.ark").read_bytes() == shard1  # the kept shard is not touched
    assert not (out / "feats.2.ark.tmp").exists()  # the killed shard's leftovers are removed
    # the kept shard 1, then the new shards after every earlier file: feats.3 .. feats.5
    assert json.loads((out / "shards.json").read_text())["kept"] == [1]
    assert sorted(p.name for p in out.glob("feats.*.scp")) == [f"feats.{k}.scp" for k in (1, 3, 4, 5)]

    got, want = features(out), features(clean)
    assert list(got) == list(want) == utts  # feats.scp in utterance order, as a clean run writes it
    for utt in utts:
        assert got[utt].dtype == want[utt].dtype and np.array_equal(got[utt], want[utt]), utt
    assert (out / "feats_shape").read_text() == (clean / "feats_shape").read_text()
    assert (out / "utt2num_frames").read_text() == (clean / "utt2num_frames").read_text()

    calls.clear()  # and once merged, any count reuses it
    assert extract_features(cache_conf, data, out, num_shards=2, extractor=cache_extractor,
                            **BATCH).merged and calls == []


def test_parallel_shard_jobs_resume_with_another_shard_count(cache_conf, cache_extractor, clean, data,
                                                             tmp_path, monkeypatch):
    """``--shard k`` jobs of the new count agree on the split; the last one merges."""
    out = tmp_path / "feats"
    extract_features(cache_conf, data, out, num_shards=2, shard=2, extractor=cache_extractor,
                     **BATCH)  # shard 1 never ran
    calls = counting(monkeypatch)
    first = extract_features(cache_conf, data, out, num_shards=2 + 1, shard=3, extractor=cache_extractor, **BATCH)
    assert first.written == [3] and not first.merged
    rest = [extract_features(cache_conf, data, out, num_shards=3, shard=k, extractor=cache_extractor,
                             **BATCH) for k in (1, 2)]
    assert rest[-1].merged
    utts = [it.utt for it in read_wav_scp(data / "wav.scp")]
    assert sorted(calls) == utts[0::2]  # shard 2 of the old split kept
    got, want = features(out), features(clean)
    assert all(np.array_equal(got[u], want[u]) for u in utts) and list(got) == utts
