"""Extraction compute paths: one CNN for bit-identical encoders, autocast, audio prefetch."""

from __future__ import annotations

import threading

import pytest
import torch

from conftest import perturb_all, write_espnet_checkpoint
from espnet_delta.features.audio import prefetched
from espnet_delta.ssl.embeddings import SSLEmbeddingExtractor
from espnet_delta.ssl.tiny import weights_of
from espnet_delta.ssl.upstream import SharedFeatureEncoder


def spec(arch, upstreams, finetuned=None):
    return {"upstream": f"{arch}_local", "path_or_url": str(upstreams[arch]), "finetuned": finetuned and str(finetuned)}


def batch(lengths, seed=0, pad_noise=0.0):
    """Waveforms padded with ``pad_noise``-amplitude noise (0: zeros) beyond each length."""
    gen = torch.Generator().manual_seed(seed)
    wavs = pad_noise * torch.randn(len(lengths), max(lengths), generator=gen)
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=gen)
    return wavs, torch.tensor(lengths)


def cnn_of(upstream):
    return upstream.upstream.upstream.model.feature_extractor


def test_shared_cnn_is_bit_identical_to_running_each(tiny_upstreams, finetuned):
    """conftest's fine-tuned twins change only encoder.* weights: the CNN is frozen-style."""
    others = [spec("hubert", tiny_upstreams, finetuned["hubert"]), spec("wav2vec2", tiny_upstreams, finetuned["wav2vec2"])]
    shared = SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams, finetuned["wavlm"]), others)
    separate = SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams, finetuned["wavlm"]), others, share_cnn=False)
    # forward order: wavlm ft, hubert pt, hubert ft, wav2vec2 pt, wav2vec2 ft
    assert shared.cnn_groups == [[0], [1, 2], [3, 4]]
    assert separate.cnn_groups == [[0], [1], [2], [3], [4]]
    assert not isinstance(cnn_of(shared.reference_ft), SharedFeatureEncoder)
    assert not any(isinstance(cnn_of(u), SharedFeatureEncoder) for u in separate._upstreams())
    memo = cnn_of(shared.others_pt[0]).memo
    assert memo is cnn_of(shared.others_ft[0]).memo
    for lengths in ([9600, 4100, 6400], [5000]):
        wavs, lens = batch(lengths)
        calls, runs = memo.calls, memo.runs
        a, la = shared.streams(wavs, lens)
        b, lb = separate.streams(wavs, lens)
        assert torch.equal(la, lb)
        assert all(torch.equal(x, y) for x, y in zip(a, b))  # bit for bit
        assert (memo.calls - calls, memo.runs - runs) == (2, 1)  # the pair ran its CNN once
        assert memo.input is None and memo.output is None  # nothing held between batches


def test_cnn_not_shared_when_it_differs(tiny_upstreams, tmp_path):
    """One CNN weight one ulp apart is a different CNN: each model runs its own."""

    def nudge(key, value):
        if key == "feature_extractor.conv_layers.0.0.weight":
            value = value.clone()
            value.view(-1)[0] = torch.nextafter(value.view(-1)[0], torch.tensor(float("inf")))
        return value

    ft = write_espnet_checkpoint(tiny_upstreams["hubert"], tmp_path / "ft.pth", nudge)
    pt_weights = weights_of(torch.load(tiny_upstreams["hubert"], weights_only=True))
    assert "feature_extractor.conv_layers.0.0.weight" in pt_weights  # the nudge hit a real CNN weight
    ext = SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams), [spec("hubert", tiny_upstreams, ft)])
    assert ext.cnn_groups == [[0], [1], [2]]
    assert not any(isinstance(cnn_of(u), SharedFeatureEncoder) for u in ext._upstreams())
    # a fine-tuned CNN (all weights changed) is not shared either
    trained = write_espnet_checkpoint(
        tiny_upstreams["hubert"], tmp_path / "trained.pth",
        lambda k, v: v + 0.01 if k.startswith("feature_extractor.") and v.is_floating_point() else v,
    )
    assert SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams), [spec("hubert", tiny_upstreams, trained)]).cnn_groups == [
        [0], [1], [2]
    ]


def test_shared_encoder_recomputes_for_another_input(tiny_upstreams, finetuned):
    ext = SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams), [spec("hubert", tiny_upstreams, finetuned["hubert"])])
    shared = cnn_of(ext.others_pt[0])
    x, y = batch([3000, 3000], seed=1)[0], batch([3000, 3000], seed=2)[0]
    with torch.no_grad():
        out_x, out_y = shared(x), cnn_of(ext.others_ft[0])(y)
        assert torch.equal(out_x, shared.encoder(x)) and torch.equal(out_y, shared.encoder(y))
        assert not torch.equal(out_x, out_y) and shared.memo.runs == 2
    shared.clear()


@pytest.mark.parametrize("autocast,u", [("bf16", 2**-9), ("fp16", 2**-11)])
def test_autocast_matches_float32_and_honours_masks(tiny_upstreams, finetuned, autocast, u):
    """Tolerance from the format's unit roundoff u (bf16: 8 significant bits, u = 2^-9;
    fp16: 11, u = 2^-11): a tiny model (3 layers) rounds each state about 6 times per
    block (cast, matmul, softmax, FFN in and out, residual) over 4 blocks (CNN + positional
    conv, 3 layers), 24 roundings; accumulated without cancellation that is 24 u of the
    state's norm (bf16 4.7 %, fp16 1.2 %). A delta is a difference of two such states:
    2 x 24 u of ||E_ft||. The short utterance is padded with loud noise and compared with
    its float32 run alone, so a mask that let padding through would exceed the bound."""
    others = [spec("hubert", tiny_upstreams, finetuned["hubert"])]
    ext32 = SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams, finetuned["wavlm"]), others)
    ext16 = SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams, finetuned["wavlm"]), others, autocast=autocast)
    wavs, lens = batch([9600, 4100], pad_noise=1.0)
    got, got_lens = ext16.streams(wavs, lens)
    assert all(s.dtype == torch.float32 for s in got)
    for i in range(2):
        n = int(lens[i])
        want, want_lens = ext32.streams(wavs[i : i + 1, :n], lens[i : i + 1])
        t = int(want_lens[0])
        assert t == int(got_lens[i])
        ref, delta, ft = (s[i, :t] for s in got)
        ref32, delta32, ft32 = (s[0] for s in want)
        assert (ref - ref32).norm() <= 24 * u * ref32.norm()
        assert (ft - ft32).norm() <= 24 * u * ft32.norm()
        assert (delta - delta32).norm() <= 2 * 24 * u * ft32.norm()
        assert torch.count_nonzero(got[0][i, t:]) == 0  # padded frames zeroed
    with pytest.raises(ValueError, match="autocast='tf32'"):
        SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams, finetuned["wavlm"]), others, autocast="tf32")


def test_prefetch_loads_the_next_batch_while_the_current_is_used():
    started = [threading.Event() for _ in range(3)]

    def load(b):
        started[b].set()
        return b * 10

    seen = []
    for b, value in prefetched([0, 1, 2], load):
        # the next batch's load has begun before the caller is done with this one
        assert b == 2 or started[b + 1].wait(timeout=10)
        seen.append((b, value))
    assert seen == [(0, 0), (1, 10), (2, 20)]

    def failing(b):
        if b == 1:
            raise ValueError("wav.scp:2: u2: cannot read")
        return b

    with pytest.raises(ValueError, match="wav.scp:2"):
        list(prefetched([0, 1, 2], failing))
    assert list(prefetched([], load)) == []
