"""Delta embeddings: exact zeros, layer indexing, padding, eval mode."""

import pytest
import torch

from conftest import perturb_layer, write_espnet_checkpoint
from espnet_delta.ssl.embeddings import SSLEmbeddingExtractor
from espnet_delta.ssl.upstream import load_upstream


def spec(arch, upstreams, finetuned=None, name=None):
    return {
        "upstream": f"{arch}_local",
        "path_or_url": str(upstreams[arch]),
        "finetuned": finetuned and str(finetuned),
        "name": name,
    }


def batch(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=gen)
    return wavs, torch.tensor(lengths)


@pytest.mark.parametrize("arch", ["wavlm", "hubert", "wav2vec2"])
def test_delta_is_exactly_zero_when_finetuned_equals_pretrained(tiny_upstreams, tmp_path, arch):
    same = write_espnet_checkpoint(tiny_upstreams[arch], tmp_path / "same.pth")
    ext = SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams), [spec(arch, tiny_upstreams, same, name="other")])
    _, (delta,), _ = ext(*batch([7000, 5000]))
    assert torch.count_nonzero(delta) == 0


def test_same_upstream_twice_without_names_is_refused_with_a_hint(tiny_upstreams):
    """Two unnamed wavlm_local models would share cache stream names: say so and how to fix it."""
    with pytest.raises(ValueError, match=r"wavlm_local\.ft.*distinct names"):
        SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams), [spec("wavlm", tiny_upstreams, tiny_upstreams["wavlm"])])


@pytest.mark.parametrize("hidden_norm", ["none", "auto"])
def test_twin_differing_in_layer_one_pins_hidden_state_indexing(tiny_upstreams, tmp_path, hidden_norm):
    """Hidden state i is the input of transformer layer i: a change in layer 1 shows from state 2 on."""
    twin = write_espnet_checkpoint(tiny_upstreams["hubert"], tmp_path / "twin.pth", perturb_layer(1))
    wavs, lens = batch([6000])
    norms = {}
    for layer in (0, 1, 2, 3, "last"):
        ext = SSLEmbeddingExtractor(
            spec("wavlm", tiny_upstreams), [spec("hubert", tiny_upstreams, twin)], layer=layer, hidden_norm=hidden_norm
        )
        _, (delta,), _ = ext(wavs, lens)
        norms[layer] = float(delta.abs().max())
    assert norms[0] == 0.0 and norms[1] == 0.0
    assert norms[2] > 1e-4 and norms[3] > 1e-4
    assert norms["last"] == norms[3]


def test_padded_batch_matches_single_utterance(tiny_upstreams, finetuned):
    """Tolerance 1e-4 absolute: padding changes only float summation order."""
    ext = SSLEmbeddingExtractor(
        spec("wavlm", tiny_upstreams, finetuned["wavlm"]),
        [spec("hubert", tiny_upstreams, finetuned["hubert"]), spec("wav2vec2", tiny_upstreams, finetuned["wav2vec2"])],
    )
    wavs, lens = batch([9600, 4100, 6400])
    ref, others, out_lens = ext(wavs, lens)
    # frames the conv extractor computes alone: floor((n - 400) / 320) + 1
    assert out_lens.tolist() == [29, 12, 19]
    for i in range(3):
        n = int(lens[i])
        ref1, others1, lens1 = ext(wavs[i : i + 1, :n], lens[i : i + 1])
        t = int(lens1[0])
        assert t == int(out_lens[i])
        torch.testing.assert_close(ref[i, :t], ref1[0], atol=1e-4, rtol=0)
        for o, o1 in zip(others, others1):
            torch.testing.assert_close(o[i, :t], o1[0], atol=1e-4, rtol=0)
        # padded frames are zeroed
        assert torch.count_nonzero(ref[i, t:]) == 0
        assert all(torch.count_nonzero(o[i, t:]) == 0 for o in others)


def test_full_mode_returns_finetuned_embeddings(tiny_upstreams, finetuned):
    delta = SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams), [spec("hubert", tiny_upstreams, finetuned["hubert"])])
    full = SSLEmbeddingExtractor(
        spec("wavlm", tiny_upstreams), [spec("hubert", tiny_upstreams, finetuned["hubert"])], mode="full"
    )
    assert len(full.others_pt) == 0  # full mode never builds the pre-trained model
    wavs, lens = batch([5000])
    _, (d,), _ = delta(wavs, lens)
    _, (f,), _ = full(wavs, lens)
    # E_ft and E_pt from the upstreams loaded on their own, outside any extractor
    e_ft = load_upstream("hubert_local", str(tiny_upstreams["hubert"]), finetuned=str(finetuned["hubert"]))(wavs, lens)[0][-1]
    e_pt = load_upstream("hubert_local", str(tiny_upstreams["hubert"]))(wavs, lens)[0][-1]
    t = f.size(1)
    torch.testing.assert_close(f, e_ft[:, :t], atol=1e-6, rtol=0)  # full mode: E_ft itself
    torch.testing.assert_close(d, e_ft[:, :t] - e_pt[:, :t], atol=1e-6, rtol=0)  # delta mode: E_ft - E_pt
    assert (f - d).abs().max() > 1e-3  # the two modes differ by E_pt, which is not zero


def test_upstreams_stay_in_eval_mode_and_deterministic(tiny_upstreams, finetuned):
    ext = SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams), [spec("hubert", tiny_upstreams, finetuned["hubert"])])
    ext.train()
    wavs, lens = batch([8000, 6000])
    a = ext(wavs, lens)
    b = ext(wavs, lens)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1][0], b[1][0])
    assert not ext.reference_ft.upstream.training
    assert list(ext.parameters()) == []  # nothing trainable, nothing for ESPnet's initialiser
    assert ext.state_dict() == {}


def test_options_are_validated(tiny_upstreams):
    with pytest.raises(ValueError, match=r"deltas\[0\].*finetuned"):
        SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams), [spec("hubert", tiny_upstreams)])
    with pytest.raises(ValueError, match="unknown option.*'ckpt'"):
        SSLEmbeddingExtractor({"upstream": "wavlm_local", "ckpt": "x"}, [])
    with pytest.raises(ValueError, match="mode"):
        SSLEmbeddingExtractor(spec("wavlm", tiny_upstreams), [], mode="sum")
