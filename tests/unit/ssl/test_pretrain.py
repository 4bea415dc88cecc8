"""Self-supervised pre-training of the tiny upstreams (espnet_delta.ssl.pretrain)."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from espnet_delta.ssl import pretrain as pretrain_mod
from espnet_delta.ssl.pretrain import (
    PretrainConfig,
    build_model,
    detect_arch,
    masked_prediction_loss,
    padded_batch,
    pretrain,
    span_mask,
)
from espnet_delta.ssl.pretrain_targets import assign_units, kmeans, mfcc_frames, num_frames
from espnet_delta.ssl.tiny import ARCHITECTURES, LOCAL_UPSTREAM, TinyConfig, make_tiny_upstream, weights_of

#: Smaller than the suite's TINY: two layers, so iteration 2 can cluster hidden state 1.
SMALL = TinyConfig(num_layers=2, embed_dim=32, ffn_dim=64, num_heads=4, conv_channels=16)


def _tones(n: int = 6, seconds: float = 1.0, seed: int = 0):
    """Utterances of three 1/3-s segments, each a tone from a fixed set: MFCC units are
    predictable from the context, so masked prediction can learn something."""
    gen = torch.Generator().manual_seed(seed)
    freqs = torch.tensor([220.0, 470.0, 1100.0, 2500.0])
    wavs = []
    for i in range(n):
        length = int(16000 * seconds) + 320 * i  # different lengths -> padding in batches
        t = torch.arange(length) / 16000
        choice = freqs[torch.randint(len(freqs), (3,), generator=gen)]
        f = choice[torch.clamp((t * 3 / seconds).long(), max=2)]
        wavs.append(0.5 * torch.sin(2 * torch.pi * f * t) + 0.01 * torch.randn(length, generator=gen))
    return wavs


@pytest.fixture(scope="module")
def small_upstreams(tmp_path_factory):
    out = tmp_path_factory.mktemp("small_upstreams")
    return {a: make_tiny_upstream(a, out / f"{a}.pt", seed=k, config=SMALL) for k, a in enumerate(ARCHITECTURES)}


FAST = PretrainConfig(num_clusters=4, epochs=(3,), target_layer=1, lr=3e-3, batch_samples=16000 * 4,
                      kmeans_iters=10, seed=0)


def test_num_frames_matches_the_cnn_formula():
    # floor((n - 400) / 320) + 1, and none below one window
    assert num_frames(16000) == 49  # 15600 // 320 = 48
    assert num_frames(400) == 1 and num_frames(719) == 1 and num_frames(720) == 2 and num_frames(399) == 0
    assert num_frames(torch.tensor([16000, 720, 399])).tolist() == [49, 2, 0]
    assert mfcc_frames(torch.zeros(16000).uniform_(-0.1, 0.1)).shape == (49, 39)


def test_kmeans_finds_obvious_clusters():
    gen = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=gen) for c in centres])
    found = kmeans(x, 3, seed=0)
    # every true centre has a found centre within 0.1 (the noise is 0.1 per coordinate)
    dist = torch.cdist(centres, found)
    assert dist.min(1).values.max() < 0.1
    units = assign_units(x, found)
    for block in units.split(50):
        assert len(set(block.tolist())) == 1  # each blob is one unit
    assert len(set(units.tolist())) == 3
    # 1-D: {1, 2, 3} and {101, 102, 103}
    one_d = torch.tensor([[1.0], [2.0], [3.0], [101.0], [102.0], [103.0]])
    assert sorted(kmeans(one_d, 2, seed=3).flatten().tolist()) == [2.0, 102.0]


def test_span_mask_touches_only_valid_frames():
    gen = torch.Generator().manual_seed(0)
    frames = torch.tensor([5, 60, 0, 37])
    for _ in range(50):
        mask = span_mask(frames, 64, mask_prob=0.65, mask_length=10, generator=gen)
        for b, n in enumerate(frames.tolist()):
            assert not mask[b, n:].any(), "a padded frame was masked"
            assert mask[b, :n].any() == (n > 0)
    # short utterance: spans are at most n // 4 = 1 frame long; 5 frames -> int(0.65*5 + U) in {3, 4} spans
    assert 1 <= int(mask[0].sum()) <= 4


def test_padded_frames_are_never_scored(small_upstreams):
    checkpoint = torch.load(small_upstreams["wavlm"], weights_only=True)
    model, normalize = build_model(checkpoint)
    head = torch.nn.Linear(SMALL.embed_dim, 4)
    wavs = [torch.randn(16000), torch.randn(8000)]
    wav, lengths = padded_batch(wavs, normalize)
    frames = num_frames(lengths)  # 49 and 24
    targets = torch.full((2, 49), 99, dtype=torch.long)  # 99 is no unit: scoring it would fail
    targets[0, :49] = 1
    targets[1, :24] = 2
    mask = torch.ones(2, 49, dtype=torch.bool)  # even a mask over padding must not score it
    loss, _ = masked_prediction_loss(model, head, wav, lengths, targets, mask)
    assert torch.isfinite(loss)
    assert frames.tolist() == [49, 24]


def _epoch_losses(caplog):
    return [float(m.group(1)) for r in caplog.records
            if (m := re.search(r"cross-entropy ([0-9.]+),", r.getMessage()))]


def test_loss_falls_and_checkpoint_loads_through_s3prl(small_upstreams, tmp_path, caplog):
    from espnet_delta.ssl.upstream import load_upstream

    caplog.set_level(logging.INFO)
    wavs = _tones(8)
    cfg = PretrainConfig(num_clusters=4, epochs=(6,), lr=3e-3, batch_samples=16000 * 3, kmeans_iters=10)
    out = pretrain(small_upstreams["wavlm"], tmp_path / "wavlm.pt", wavs, tmp_path / "work", cfg, progress=False)
    losses = _epoch_losses(caplog)
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0], losses

    random_ckpt = torch.load(small_upstreams["wavlm"], weights_only=True)
    trained = torch.load(out, weights_only=True)
    assert set(trained) == set(random_ckpt) and trained["cfg"] == random_ckpt["cfg"]
    assert set(weights_of(trained)) == set(weights_of(random_ckpt))

    wav = wavs[0][None]
    lens = torch.tensor([wav.size(1)])
    with torch.no_grad():
        h_random, _ = load_upstream(LOCAL_UPSTREAM["wavlm"], str(small_upstreams["wavlm"]))(wav, lens)
        h_trained, _ = load_upstream(LOCAL_UPSTREAM["wavlm"], str(out))(wav, lens)
    assert len(h_random) == len(h_trained) == SMALL.num_layers + 1
    assert not torch.allclose(h_random[-1], h_trained[-1], atol=1e-3)


@pytest.mark.parametrize("arch", ["hubert", "wav2vec2"])
def test_other_architectures_keep_their_format(small_upstreams, tmp_path, arch):
    from espnet_delta.ssl.upstream import load_upstream

    cfg = PretrainConfig(num_clusters=4, epochs=(1, 1), target_layer=1, batch_samples=16000 * 4, kmeans_iters=5)
    out = pretrain(small_upstreams[arch], tmp_path / f"{arch}.pt", _tones(4), tmp_path / "work", cfg, progress=False)
    random_ckpt = torch.load(small_upstreams[arch], weights_only=True)
    trained = torch.load(out, weights_only=True)
    assert detect_arch(trained) == arch and set(trained) == set(random_ckpt)
    assert trained["model_cfg"] == random_ckpt["model_cfg"]
    changed = [k for k, v in weights_of(trained).items() if not torch.equal(v, weights_of(random_ckpt)[k])]
    assert any(k.startswith("encoder.layers.") for k in changed)
    assert "mask_emb" in changed
    load_upstream(LOCAL_UPSTREAM[arch], str(out))  # strict load through S3PRL


def test_rerun_skipped_when_output_exists(small_upstreams, tmp_path):
    from espnet_delta.bin.pretrain_upstreams import main

    out_dir = tmp_path / "pt"
    out_dir.mkdir()
    (out_dir / "wavlm.pt").write_bytes(b"done before")
    # a missing wav.scp proves that nothing is read or trained
    main(["--in_dir", str(small_upstreams["wavlm"].parent), "--out_dir", str(out_dir), "--work_dir",
          str(tmp_path / "work"), "--wav_scp", str(tmp_path / "missing.scp"), "--archs", "wavlm"])
    assert (out_dir / "wavlm.pt").read_bytes() == b"done before"
    assert not (tmp_path / "work").exists()


class _Killed(Exception):
    pass


def test_bit_reproducible_and_resumable(small_upstreams, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    wavs = _tones(5)
    first = pretrain(small_upstreams["hubert"], tmp_path / "a.pt", wavs, tmp_path / "wa", FAST, progress=False)
    second = pretrain(small_upstreams["hubert"], tmp_path / "b.pt", wavs, tmp_path / "wb", FAST, progress=False)
    assert first.read_bytes() == second.read_bytes()

    real_save = pretrain_mod.torch_save_atomic

    def save_then_die(obj, path):
        real_save(obj, path)
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            raise _Killed

    monkeypatch.setattr(pretrain_mod, "torch_save_atomic", save_then_die)
    with pytest.raises(_Killed):
        pretrain(small_upstreams["hubert"], tmp_path / "c.pt", wavs, tmp_path / "wc", FAST, progress=False)
    monkeypatch.setattr(pretrain_mod, "torch_save_atomic", real_save)
    assert not (tmp_path / "c.pt").exists()
    resumed = pretrain(small_upstreams["hubert"], tmp_path / "c.pt", wavs, tmp_path / "wc", FAST, progress=False)
    assert resumed.read_bytes() == first.read_bytes()
