"""Feature extraction into sharded, resumable ark/scp files, and reading streams back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch

from conftest import first_utterances, perturb_all, write_espnet_checkpoint
from espnet_delta.features import extract as feature_extract
from espnet_delta.data.wav_scp import read_wav_scp
from espnet_delta.features.audio import shard_items
from espnet_delta.features.config import ExtractionConfig, LayoutMismatchError
from espnet_delta.features.extract import extract_features
from espnet_delta.features.shards import ShardBusyError, ShardFiles, _ShardLock
from espnet_delta.features.layout import FeatureLayout, LayoutError, read_streams

#: small batches so that each shard has several padded batches of different lengths
BATCH = dict(batch_seconds=4.0, batch_size=3, progress=False, device="cpu")


def spec(arch, upstreams, finetuned=None):
    return {"upstream": f"{arch}_local", "path_or_url": str(upstreams[arch]), "finetuned": finetuned and str(finetuned)}


@pytest.fixture(scope="module")
def conf(tiny_upstreams, finetuned):
    return {
        "reference": spec("wavlm", tiny_upstreams, finetuned["wavlm"]),
        "others": [
            spec("hubert", tiny_upstreams, finetuned["hubert"]),
            spec("wav2vec2", tiny_upstreams, finetuned["wav2vec2"]),
        ],
    }


@pytest.fixture(scope="module")
def extractor(conf):
    return ExtractionConfig.from_dict(conf).build_extractor()


@pytest.fixture(scope="module")
def data(mini_data, tmp_path_factory):
    """8 utterances of the mini corpus: 2 shards of 4, in 2 or more batches each."""
    return first_utterances(mini_data, tmp_path_factory.mktemp("data8") / "train", 8)


@pytest.fixture(scope="module")
def clean(conf, extractor, data, tmp_path_factory):
    """An uninterrupted 2-shard extraction (the reference for the other tests)."""
    out = tmp_path_factory.mktemp("clean") / "feats"
    result = extract_features(conf, data, out, num_shards=2, extractor=extractor, **BATCH)
    assert result.written == [1, 2] and result.merged
    return out


def read_scp(out: Path) -> dict:
    return dict(kaldiio.load_scp(str(out / "feats.scp")))


def relative_lines(path: Path, out: Path) -> list:
    return path.read_text().replace(str(out), "<out>").splitlines()


def test_matrices_equal_single_utterance_streams(clean, extractor, data):
    layout = FeatureLayout.load(clean / "layout.json")
    assert layout.names == extractor.stream_names() == [
        "wavlm_local.ft", "hubert_local.delta", "hubert_local.ft", "wav2vec2_local.delta", "wav2vec2_local.ft",
    ]
    assert [(s.start, s.end) for s in layout.streams] == [(0, 32), (32, 64), (64, 96), (96, 128), (128, 160)]
    assert layout.dtype == "float32" and layout.frame_shift == 320 and layout.frame_rate == 50.0
    assert layout.reference == "wavlm_local" and layout.others == ["hubert_local", "wav2vec2_local"]
    finetuned_file = layout.models["others"][0]["files"]["finetuned"]
    assert finetuned_file["size"] > 0 and os.path.isabs(finetuned_file["path"]) and "mtime" in finetuned_file

    feats = read_scp(clean)
    items = read_wav_scp(data / "wav.scp")
    assert list(feats) == [it.utt for it in items]  # sorted, complete
    for item in items[:2] + items[-2:]:
        wav, _ = soundfile.read(item.path, dtype="float32")
        streams, lens = extractor.streams(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
        stored = torch.from_numpy(np.array(feats[item.utt]))
        assert stored.dtype == torch.float32 and stored.shape == (int(lens[0]), layout.dim)
        torch.testing.assert_close(stored, torch.cat(streams, -1)[0], atol=1e-4, rtol=0)
        for name, s in zip(layout.names, streams):
            torch.testing.assert_close(layout.stream(stored, name), s[0], atol=1e-4, rtol=0)
        ref, (d_hubert, d_w2v2) = layout.fusion_inputs(stored, "wavlm_local", ["hubert_local", "wav2vec2_local"])
        ref1, others1, _ = extractor(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
        torch.testing.assert_close(ref, ref1[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(d_hubert, others1[0][0], atol=2e-4, rtol=0)
        torch.testing.assert_close(d_w2v2, others1[1][0], atol=2e-4, rtol=0)


def test_shape_files_are_espnet_csv_shapes(clean):
    from espnet2.fileio.read_text import load_num_sequence_text

    feats = read_scp(clean)
    shapes = load_num_sequence_text(clean / "feats_shape", loader_type="csv_int")
    frames = load_num_sequence_text(clean / "utt2num_frames", loader_type="text_int")
    assert list(shapes) == list(feats) == list(frames)
    for utt, mat in feats.items():
        assert shapes[utt] == [mat.shape[0], 160] and frames[utt] == [mat.shape[0]]
    first = (clean / "feats_shape").read_text().splitlines()[0]
    assert first.split(" ")[1] == f"{feats[first.split()[0]].shape[0]},160"


def test_kill_midway_and_rerun_gives_identical_features(conf, extractor, data, clean, tmp_path, monkeypatch):
    out = tmp_path / "feats"
    shard2 = [it.utt for it in shard_items(read_wav_scp(data / "wav.scp"), 2, 2)]
    real_write = feature_extract.write_matrix
    calls = []

    def dying_write(fd, utt, matrix):
        calls.append(utt)
        if len(calls) == 4 + 3:  # all of shard 1, then 2 utterances of shard 2
            raise KeyboardInterrupt("killed")
        return real_write(fd, utt, matrix)

    monkeypatch.setattr(feature_extract, "write_matrix", dying_write)
    with pytest.raises(KeyboardInterrupt):
        extract_features(conf, data, out, num_shards=2, extractor=extractor, **BATCH)
    assert (out / "feats.1.scp").is_file() and not (out / "feats.2.scp").exists()
    assert (out / "feats.2.ark.tmp").is_file() and not (out / "feats.scp").exists()
    done1 = {p: (out / p).stat().st_mtime_ns for p in ("feats.1.ark", "feats.1.scp", "feats.1.shape")}

    calls.clear()
    monkeypatch.setattr(feature_extract, "write_matrix", lambda fd, utt, m: calls.append(utt) or real_write(fd, utt, m))
    result = extract_features(conf, data, out, num_shards=2, extractor=extractor, **BATCH)
    assert result.skipped == [1] and result.written == [2] and result.merged
    assert sorted(calls) == sorted(shard2)  # only shard 2 recomputed
    assert {p: (out / p).stat().st_mtime_ns for p in done1} == done1
    assert not list(out.glob("*.tmp"))
    for name in ("feats.1.ark", "feats.2.ark"):
        assert (out / name).read_bytes() == (clean / name).read_bytes()
    for name in ("feats.scp", "feats_shape", "utt2num_frames", "feats.1.scp", "feats.2.scp"):
        assert relative_lines(out / name, out) == relative_lines(clean / name, clean)
    assert (out / "layout.json").read_text() == (clean / "layout.json").read_text()

    calls.clear()
    again = extract_features(conf, data, out, num_shards=2, extractor=extractor, **BATCH)
    assert again.written == [] and again.merged and calls == []


def test_parallel_shard_jobs_merge_when_last_finishes(conf, extractor, data, clean, tmp_path):
    out = tmp_path / "feats"
    # an ark left without scp by a killed job is removed and redone
    out.mkdir()
    with pytest.raises(RuntimeError, match=r"shard\(s\) \[1, 2\] of 2 are not complete"):
        extract_features(conf, data, out, num_shards=2, merge_only=True, extractor=extractor, **BATCH)
    (out / "feats.2.ark").write_bytes(b"partial")
    first = extract_features(conf, data, out, num_shards=2, shard=2, extractor=extractor, **BATCH)
    assert first.written == [2] and not first.merged and not (out / "feats.scp").exists()
    with pytest.raises(ShardBusyError, match="shard 1 is being written by another process"):
        with _ShardLock(ShardFiles(out, 1)):
            extract_features(conf, data, out, num_shards=2, shard=1, extractor=extractor, **BATCH)
    last = extract_features(conf, data, out, num_shards=2, shard=1, extractor=extractor, **BATCH)
    assert last.written == [1] and last.merged
    for name in ("feats.1.ark", "feats.2.ark"):
        assert (out / name).read_bytes() == (clean / name).read_bytes()
    assert relative_lines(out / "feats.scp", out) == relative_lines(clean / "feats.scp", clean)
    (out / "feats.scp").unlink()
    merged = extract_features(conf, data, out, num_shards=2, merge_only=True, extractor=extractor, **BATCH)
    assert merged.merged and merged.written == []
    assert relative_lines(out / "feats.scp", out) == relative_lines(clean / "feats.scp", clean)


def test_layout_mismatch_is_refused(conf, data, clean, tiny_upstreams, tmp_path):
    out = tmp_path / "feats"
    shutil.copytree(clean, out)
    other = write_espnet_checkpoint(tiny_upstreams["hubert"], tmp_path / "hubert2.pth", perturb_all(seed=7))
    changed = json.loads(json.dumps(conf))
    changed["others"][0]["finetuned"] = str(other)
    with pytest.raises(LayoutMismatchError) as e:
        extract_features(changed, data, out, num_shards=2, **BATCH)
    assert str(out / "layout.json") in str(e.value)
    assert "models.others[0].files.finetuned.path" in str(e.value) and "--overwrite" in str(e.value)

    with pytest.raises(LayoutMismatchError, match=r"layer: 'last' in the file, 2 now"):
        extract_features({**conf, "layer": 2}, data, out, num_shards=2, **BATCH)
    with pytest.raises(LayoutMismatchError, match=r"dtype: 'float32' in the file, 'float16' now"):
        extract_features(conf, data, out, num_shards=2, fp16=True, **BATCH)
    with pytest.raises(LayoutMismatchError, match=r"autocast: 'none' in the file, 'bf16' now"):
        extract_features(conf, data, out, num_shards=2, autocast="bf16", **BATCH)
    # the shard count is no part of the identity (test_shard_count.py): reused whatever num_shards
    assert extract_features(conf, data, out, num_shards=3, **BATCH).merged
    lines = (data / "wav.scp").read_text().splitlines(True)
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    (fewer / "wav.scp").write_text("".join(lines[:-1]))
    with pytest.raises(LayoutMismatchError, match=r"wav.scp changed.*num_utts: 8 in the file, 7 now"):
        extract_features(conf, fewer, out, num_shards=2, **BATCH)
    # a retrained checkpoint (same path, new mtime) is a different model
    touched = Path(conf["others"][1]["finetuned"])
    st = touched.stat()
    try:
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        with pytest.raises(LayoutMismatchError, match=r"models.others\[1\].files.finetuned.mtime"):
            extract_features(conf, data, out, num_shards=2, **BATCH)
    finally:
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ValueError, match="overwrite cannot be combined with shard"):
        extract_features(conf, data, out, num_shards=2, shard=1, overwrite=True, **BATCH)


def test_fp16_and_overwrite_on_a_tiny_set(conf, extractor, data, clean, tmp_path):
    from espnet2.train.dataset import ESPnetDataset

    small = tmp_path / "small"
    small.mkdir()
    (small / "wav.scp").write_text("".join((data / "wav.scp").read_text().splitlines(True)[:2]))
    out = tmp_path / "feats"
    extract_features(conf, small, out, num_shards=1, extractor=extractor, **BATCH)
    with pytest.raises(LayoutMismatchError):
        extract_features(conf, small, out, num_shards=1, fp16=True, extractor=extractor, **BATCH)
    result = extract_features(conf, small, out, num_shards=1, fp16=True, overwrite=True, extractor=extractor, **BATCH)
    assert result.written == [1] and result.merged
    layout = FeatureLayout.load(out)
    assert layout.dtype == "float16"
    full = read_scp(clean)
    for utt, mat in read_scp(out).items():
        assert mat.dtype == np.float16
        np.testing.assert_allclose(mat.astype(np.float32), full[utt], atol=1e-2, rtol=1e-2)
        d = layout.delta(mat, "hubert_local")
        assert d.dtype == np.float32  # the stored float16 delta, read as float32
    # ESPnet's kaldi_ark loader reads the float16 records and casts them to float32
    dataset = ESPnetDataset([(str(out / "feats.scp"), "speech", "kaldi_ark")])
    utt, batch = dataset[next(iter(full))]
    assert batch["speech"].dtype == np.float32 and batch["speech"].shape[1] == 160


def test_unreadable_audio_names_the_wav_scp_line(conf, extractor, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    good = tmp_path / "a.wav"
    soundfile.write(good, np.zeros(8000, dtype=np.float32), 16000)
    (tmp_path / "b.wav").write_bytes(b"RIFF not really")
    (bad / "wav.scp").write_text(f"u1 {good}\nu2 {tmp_path / 'b.wav'}\n")
    with pytest.raises(ValueError, match=r"wav.scp:2: u2: cannot read .*b.wav"):
        extract_features(conf, bad, tmp_path / "feats", extractor=extractor, **BATCH)
    soundfile.write(tmp_path / "b.wav", np.zeros(8000, dtype=np.float32), 8000)
    with pytest.raises(ValueError, match=r"wav.scp:2: u2: .* is 8000 Hz"):
        extract_features(conf, bad, tmp_path / "feats", extractor=extractor, **BATCH)


def test_cli_writes_all_shards_and_merges(conf, data, tmp_path, monkeypatch):
    from espnet_delta.bin.extract_features import main

    small = tmp_path / "small"
    small.mkdir()
    (small / "wav.scp").write_text("".join((data / "wav.scp").read_text().splitlines(True)[:3]))
    config = tmp_path / "extract.yaml"
    config.write_text(json.dumps({**conf, "others": conf["others"][:1]}))  # JSON is YAML; 3 models load faster
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the session's thread count
    out = tmp_path / "feats"
    args = ["--config", str(config), "--data_dir", str(small), "--out_dir", str(out), "--num_shards", "2"]
    args += ["--device", "cpu", "--progress", "false"]
    main(args + ["--feats_fp16", "true"])
    assert len(read_scp(out)) == 3 and FeatureLayout.load(out).dtype == "float16" and FeatureLayout.load(out).dim == 96
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 1


# --------------------------------------------------------------------------- reader


def test_feature_layout_from_dict_and_reading():
    layout = FeatureLayout.from_dict(
        {"streams": [{"name": "wavlm_large.ft", "dim": 4}, {"name": "hubert_large_ll60k.pt", "dim": 3},
                     {"name": "hubert_large_ll60k.ft", "dim": 3}]}
    )
    assert layout.dim == 10 and layout.columns("hubert_large_ll60k.ft") == slice(7, 10)
    assert FeatureLayout.from_dict(layout.to_dict()) == layout
    assert FeatureLayout.from_config(json.loads(json.dumps(layout.to_dict()))) == layout
    batch = torch.arange(2 * 5 * 10, dtype=torch.float16).reshape(2, 5, 10)
    ref, pt, ft = read_streams(batch, layout.to_dict(), layout.names)
    assert ref.shape == (2, 5, 4) and torch.equal(pt, batch[..., 4:7])
    delta = layout.delta(batch, "hubert_large_ll60k")
    assert delta.dtype == torch.float32 and torch.equal(delta, (ft.float() - pt.float()))
    ref2, (full,) = layout.fusion_inputs(batch, "wavlm_large.ft", ["hubert_large_ll60k"], mode="full")
    assert torch.equal(ref2, ref) and torch.equal(full, ft)

    with pytest.raises(LayoutError, match="feature matrix has 9 columns, the layout 10"):
        layout.stream(batch[..., :9], "wavlm_large.ft")
    full_only = FeatureLayout.from_dict(
        {"streams": [{"name": "a.ft", "dim": 2}, {"name": "b.ft", "dim": 2}], "mode": "full"}
    )
    with pytest.raises(LayoutError, match=r"no delta stream 'b.delta' \(nor a pre-trained stream 'b.pt'.*mode: full"):
        full_only.delta(np.zeros((3, 4), dtype=np.float32), "b")
    with pytest.raises(LayoutError, match="appears twice"):
        FeatureLayout.from_dict({"streams": [{"name": "a.ft", "dim": 2}, {"name": "a.ft", "dim": 2}]})
    with pytest.raises(LayoutError, match="contiguous"):
        FeatureLayout.from_dict(
            {"streams": [{"name": "a.ft", "start": 0, "end": 2}, {"name": "b.ft", "start": 3, "end": 5}]}
        )


def test_config_validation(conf):
    with pytest.raises(ValueError, match="unknown key"):
        ExtractionConfig.from_dict({**conf, "fusion": "concat"})
    with pytest.raises(ValueError, match=r"stream names \['hubert_local.delta', 'hubert_local.ft'\] occur twice"):
        ExtractionConfig.from_dict({**conf, "others": [conf["others"][0], conf["others"][0]]})
    deltas = ExtractionConfig.from_dict({"reference": conf["reference"], "deltas": conf["others"], "mode": "full"})
    assert deltas.stream_names() == ["wavlm_local.ft", "hubert_local.ft", "wav2vec2_local.ft"]
    hubert = conf["others"][0]
    named = ExtractionConfig.from_dict(
        {**conf, "others": [{**hubert, "name": "hubert_child"}, {**hubert, "name": "hubert_adult"}]}
    )
    assert named.stream_names() == [
        "wavlm_local.ft", "hubert_child.delta", "hubert_child.ft", "hubert_adult.delta", "hubert_adult.ft",
    ]


def test_old_format_cache_is_refused_naming_the_file(conf, data, clean, tmp_path):
    """Format 1 stored E_pt ('<name>.pt') and subtracted on read; its columns mean
    something else now, so reading or resuming it fails and says what to do."""
    out = tmp_path / "feats"
    shutil.copytree(clean, out)
    old = json.loads((out / "layout.json").read_text())
    assert old["format"] == "espnet_delta.features.layout/2"
    old["format"] = "espnet_delta.features.layout/1"
    old["streams"] = [{**s, "name": s["name"].replace(".delta", ".pt")} for s in old["streams"]]
    (out / "layout.json").write_text(json.dumps(old))
    for call in (lambda: FeatureLayout.load(out), lambda: extract_features(conf, data, out, num_shards=2, **BATCH)):
        with pytest.raises(LayoutMismatchError) as e:
            call()
        assert str(out / "layout.json") in str(e.value)
        assert "format 'espnet_delta.features.layout/1'" in str(e.value) and "--overwrite" in str(e.value)
    # a hand-written layout (no format) may still hold E_pt columns: delta = ft - pt
    del old["format"]
    hand = FeatureLayout.from_dict(old)
    mat = np.array(read_scp(clean)[next(iter(read_scp(clean)))])
    np.testing.assert_array_equal(hand.delta(mat, "hubert_local"), mat[:, 64:96] - mat[:, 32:64])
