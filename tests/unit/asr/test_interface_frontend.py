"""Layer interfaces as ESPnet frontends: ssl_interface (one upstream) and delta_fusion's
``interface`` option; sizes, state, padding, one ESPnet training step, reload."""

import pytest
import torch

from espnet_delta.asr.frontend.delta_fusion import DeltaFusionFrontend
from espnet_delta.asr.frontend.ssl_interface import SSLInterfaceFrontend
from espnet_delta.ssl.embeddings import SSLEmbeddingExtractor
from espnet_delta.ssl.upstream import FrozenUpstream, load_upstream

# tiny upstreams (tests/conftest.py): 3 transformer layers of 32 -> L = 4 hidden states, D = 32
L, D = 4, 32
# hconv by hand for L=4: floor(log3 4) = 1 conv; 4 -> floor((4 + 4 - 5) / 3) + 1 = 2; channels 32 // 2 = 16
INTERFACES = {  # name -> (interface_conf, output size, trainable parameters)
    "last": ({}, D, 0),
    "weighted_sum": ({"layer_norm": True}, D, L),
    "hconv": ({}, 2 * 16, D * 16 * 5 + 16),
    "concat": ({"output_dim": 24}, 24, L * D * 24 + 24),
    "pca": ({"output_dim": 24, "fit_frames": 30}, 24, 0),  # fixed buffers, nothing trained
    # query D + key D*D (no bias) + value and output D*D + D each
    "cls_pooling": ({}, D, D + D * D + 2 * (D * D + D)),
}


def upstream_conf(tiny_upstreams, arch="wavlm"):
    return {"upstream": f"{arch}_local", "path_or_url": str(tiny_upstreams[arch])}


def fusion_conf(tiny_upstreams, finetuned, **kw):
    return {
        "reference": {**upstream_conf(tiny_upstreams), "finetuned": str(finetuned["wavlm"])},
        "deltas": [{**upstream_conf(tiny_upstreams, "hubert"), "finetuned": str(finetuned["hubert"])}],
        "fusion": "concat",
        **kw,
    }


@pytest.mark.parametrize("name", list(INTERFACES))
def test_sizes_state_and_padding(tiny_upstreams, name):
    conf, size, n_params = INTERFACES[name]
    fe = SSLInterfaceFrontend(upstream=upstream_conf(tiny_upstreams), interface=name, interface_conf=conf)
    assert fe.output_size() == size
    assert sum(p.numel() for p in fe.parameters() if p.requires_grad) == n_params
    assert all(k.startswith("interface.") for k in fe.state_dict())  # the upstream is not saved
    wavs, lens = torch.randn(2, 8000), torch.tensor([8000, 5000])
    fe.train()(wavs, lens)  # a training batch (pca: fitted on its first 30 of 39 frames)
    fe.eval()
    feats, flens = fe(wavs, lens)
    # conv stack frames of the tiny upstreams: 8000 samples -> 24 frames, 5000 -> 15
    assert feats.shape == (2, 24, size) and flens.tolist() == [24, 15]
    assert not feats[1, 15:].any()
    alone, _ = fe(wavs[1:, :5000], lens[1:])
    torch.testing.assert_close(feats[1, :15], alone[0], rtol=1e-4, atol=1e-5)


def test_weighted_sum_frontend_starts_at_the_mean_of_the_hidden_states(tiny_upstreams):
    fe = SSLInterfaceFrontend(upstream=upstream_conf(tiny_upstreams), interface="weighted_sum")
    up = FrozenUpstream(load_upstream("wavlm_local", str(tiny_upstreams["wavlm"])))
    wav, lens = torch.randn(1, 6000), torch.tensor([6000])
    states, frames = up(wav, lens)
    assert len(states) == L
    n = int(frames[0])
    out, _ = fe(wav, lens)
    torch.testing.assert_close(out[0], sum(s[0, :n] for s in states) / L)
    picked = SSLInterfaceFrontend(upstream=upstream_conf(tiny_upstreams), interface="weighted_sum", layers=[0, -1])
    out, _ = picked(wav, lens)
    torch.testing.assert_close(out[0], (states[0][0, :n] + states[-1][0, :n]) / 2)


def test_delta_fusion_interface_last_equals_default(tiny_upstreams, finetuned):
    wav, lens = torch.randn(2, 7000), torch.tensor([7000, 4000])
    default = DeltaFusionFrontend(**fusion_conf(tiny_upstreams, finetuned)).eval()
    last = DeltaFusionFrontend(**fusion_conf(tiny_upstreams, finetuned, interface="last")).eval()
    torch.testing.assert_close(last(wav, lens)[0], default(wav, lens)[0])
    assert sorted(default.state_dict()) == sorted(last.state_dict()) == ["head.norm.bias", "head.norm.weight"]


def test_delta_fusion_weighted_sum_is_the_mean_of_per_layer_deltas(tiny_upstreams, finetuned):
    """At initialisation each stream's weighted sum is the mean over layers of what the
    single-layer frontend gives for layer i (E_ft of the reference, E_delta of HuBERT)."""
    fe = DeltaFusionFrontend(**fusion_conf(tiny_upstreams, finetuned, interface="weighted_sum"), head_norm=False).eval()
    assert sorted(fe.state_dict()) == ["interfaces.others.0.weights", "interfaces.ref.weights"]
    assert fe.output_size() == 2 * D
    wav, lens = torch.randn(2, 7000), torch.tensor([7000, 4000])
    out, out_lens = fe(wav, lens)
    refs, deltas = [], []
    for i in range(L):
        ext = SSLEmbeddingExtractor(fe.extractor.reference_spec, fe.extractor.other_specs, layer=i)
        ref, (delta,), n = ext(wav, lens)
        refs.append(ref)
        deltas.append(delta)
    assert out_lens.tolist() == n.tolist()
    torch.testing.assert_close(out, torch.cat([sum(refs) / L, sum(deltas) / L], dim=-1), rtol=1e-4, atol=1e-5)


def test_delta_fusion_hconv_per_stream(tiny_upstreams, finetuned):
    fe = DeltaFusionFrontend(**fusion_conf(tiny_upstreams, finetuned, interface="hconv", fusion="xattn",
                                           fusion_conf={"num_heads": 4}))
    assert fe.output_size() == 32  # xattn keeps the reference's hconv size, 2 * 16
    convs = [k for k in fe.state_dict() if k.startswith("interfaces.")]
    assert sorted(convs) == ["interfaces.others.0.convs.0.bias", "interfaces.others.0.convs.0.weight",
                             "interfaces.ref.convs.0.bias", "interfaces.ref.convs.0.weight"]
    feats, lens = fe(torch.randn(2, 6000), torch.tensor([6000, 3000]))
    # conv stack (10,5),(3,2)x4,(2,2)x2: 3000 -> 599 -> 299 -> 149 -> 74 -> 36 -> 18 -> 9 frames
    assert feats.shape == (2, 18, 32) and lens.tolist() == [18, 9]


@pytest.mark.parametrize("name,conf,size", [("pca", {"output_dim": 8, "fit_frames": 16}, 8), ("cls_pooling", {}, D)])
def test_delta_fusion_pca_and_cls_pooling_per_stream(tiny_upstreams, finetuned, name, conf, size):
    fe = DeltaFusionFrontend(**fusion_conf(tiny_upstreams, finetuned, interface=name, interface_conf=conf))
    assert fe.output_size() == 2 * size  # concat of the reference's and the delta's interface outputs
    wav, lens = torch.randn(2, 6000), torch.tensor([6000, 3000])
    fe.train()(wav, lens)
    if name == "pca":  # one fit per stream, on that stream's frames: different projections
        assert float(fe.interfaces.ref.fixed_frames) == float(fe.interfaces.others[0].fixed_frames) == 16
        assert not torch.allclose(fe.interfaces.ref.fixed_mean, fe.interfaces.others[0].fixed_mean)
        assert not [p for p in fe.interfaces.parameters()]
    else:
        assert sum(p.numel() for p in fe.interfaces.parameters()) == 2 * (3 * D * D + 3 * D)
    feats, out_lens = fe.eval()(wav, lens)
    # conv stack of the tiny upstreams: 6000 samples -> 18 frames, 3000 -> 9
    assert feats.shape == (2, 18, 2 * size) and out_lens.tolist() == [18, 9]


def test_bad_options_are_named(tiny_upstreams, finetuned):
    with pytest.raises(ValueError, match="exclude each other"):
        DeltaFusionFrontend(**fusion_conf(tiny_upstreams, finetuned, interface="hconv", layer=2))
    with pytest.raises(ValueError, match="interface_conf is given but interface is not"):
        DeltaFusionFrontend(**fusion_conf(tiny_upstreams, finetuned, interface_conf={"layer_norm": True}))
    with pytest.raises(ValueError, match="frontend_conf.upstream is required"):
        SSLInterfaceFrontend(interface="hconv")
    with pytest.raises(ValueError, match="interface='sum'"):
        SSLInterfaceFrontend(upstream=upstream_conf(tiny_upstreams), interface="sum")
    with pytest.raises(ValueError, match=r"frontend_conf.upstream: unknown option\(s\) \['ckpt'\]"):
        SSLInterfaceFrontend(upstream={"upstream": "wavlm_local", "ckpt": "x"})


DOWNSTREAM = {  # the same small downstream for every interface: 2-layer BiLSTM + CTC
    "encoder": "rnn",
    "encoder_conf": {"rnn_type": "lstm", "bidirectional": True, "num_layers": 2, "hidden_size": 16,
                     "output_size": 16, "subsample": [1, 1, 1], "use_projection": True},
}


def train(tmp_path, mini_data, frontend, frontend_conf):
    from espnet_training import train_tiny

    config = {
        "frontend": frontend, "frontend_conf": frontend_conf, "specaug": None, "normalize": None, **DOWNSTREAM,
        "decoder": "none", "model": "espnet_ctc_wer", "model_conf": {"ctc_weight": 1.0},
        "optim": "adam", "optim_conf": {"lr": 0.01}, "max_epoch": 1, "num_iters_per_epoch": 3,
        "batch_type": "sorted", "batch_size": 2,  # RNN encoders need lengths sorted in the batch
        "best_model_criterion": [["valid", "loss", "min"]],
        "num_workers": 0,
    }
    exp = train_tiny(config, mini_data, tmp_path)
    model_file = exp / "valid.loss.best.pth"
    assert model_file.is_file()
    return exp / "config.yaml", model_file


def reload_and_compare(config_file, model_file, fresh_frontend, mini_data):
    """The saved model rebuilt by ESPnet (plugin registered) holds the trained weights, and its
    frontend gives the same features as a frontend built from the config + those weights."""
    import soundfile
    from espnet2.tasks.asr import ASRTask

    from espnet_delta.asr.register import register

    register()
    model, _ = ASRTask.build_model_from_file(str(config_file), str(model_file), "cpu")
    model.eval()
    saved = torch.load(model_file, weights_only=True)
    assert not any("upstream" in k for k in saved)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    fresh_frontend.load_state_dict({k[len("frontend."):]: v for k, v in saved.items() if k.startswith("frontend.")})
    fresh_frontend.eval()
    path = (mini_data / "test" / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)[1]
    speech = torch.from_numpy(soundfile.read(path, dtype="float32")[0])[None]
    lens = torch.tensor([speech.size(1)])
    with torch.no_grad():
        feats, _ = model.frontend(speech, lens)
        expected, _ = fresh_frontend(speech, lens)
        enc, enc_lens = model.encode(speech, lens)
    torch.testing.assert_close(feats, expected)
    assert enc.shape[0] == 1 and int(enc_lens[0]) == feats.size(1)  # subsample 1: one output per frame
    return saved


@pytest.mark.parametrize("name", ["last", "weighted_sum", "hconv", "concat", "pca"])
def test_espnet_training_step_and_reload(tiny_upstreams, mini_data, tmp_path, name):
    conf = {"upstream": upstream_conf(tiny_upstreams), "interface": name, "interface_conf": INTERFACES[name][0]}
    config_file, model_file = train(tmp_path, mini_data, "ssl_interface", conf)
    saved = reload_and_compare(config_file, model_file, SSLInterfaceFrontend(**conf), mini_data)
    if name == "weighted_sum":
        assert not torch.allclose(saved["frontend.interface.weights"], torch.zeros(L))  # trained, not initial
    if name == "pca":  # fitted in training, saved in the checkpoint, reloaded without a refit
        assert float(saved["frontend.interface.fixed_frames"]) == 30
        assert saved["frontend.interface.fixed_components"].shape == (L * D, 24)


def test_espnet_training_step_delta_fusion_hconv(tiny_upstreams, finetuned, mini_data, tmp_path):
    conf = fusion_conf(tiny_upstreams, finetuned, interface="hconv")
    config_file, model_file = train(tmp_path, mini_data, "delta_fusion", conf)
    saved = reload_and_compare(config_file, model_file, DeltaFusionFrontend(**conf), mini_data)
    assert "frontend.interfaces.ref.convs.0.weight" in saved and "frontend.interfaces.others.0.convs.0.weight" in saved


# ---- phone targets of the mini corpus (for phone CTC / PER with the interface systems)
def test_phonemes_are_espeak_phones_without_stress():
    from conftest import mini_corpus_tools_missing
    from espnet_delta.data.mini_corpus import phonemes

    if mini_corpus_tools_missing():
        pytest.skip("espeak-ng is required")
    # espeak-ng -q --ipa -v en-us "the magnet" prints "ðə mˈæɡnɪt"; one token per phoneme, no stress mark
    assert phonemes("the magnet", "en-us+f1") == "ð ə m æ ɡ n ɪ t"
    assert phonemes("i think", "en-us") == "aɪ θ ɪ ŋ k"  # the diphthong stays one token


def test_mini_corpus_phone_file_covers_every_utterance(mini_data, tmp_path):
    import hashlib
    import shutil

    from espnet_delta.data.mini_corpus import PHONES, make_mini_corpus

    corpus = mini_data.parent / "corpus"  # where the conftest fixture generated it (scale 0.02, seed 0)
    lines = (corpus / PHONES).read_text(encoding="utf-8").splitlines()
    phones = dict(line.split(" ", 1) for line in lines)
    assert len(phones) == len(lines)  # one line per utterance, unique ids
    for split in ("train", "dev", "test"):
        for line in (mini_data / split / "text").read_text().splitlines():
            utt = line.split()[0]
            assert phones[utt] and "ˈ" not in phones[utt] and "  " not in phones[utt], utt
    # a corpus from before phones.txt gets it on the next call, identical, and nothing else changes
    old = tmp_path / "old"
    shutil.copytree(corpus, old)
    (old / PHONES).unlink()

    def digest(root):
        return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}

    before = digest(old)
    make_mini_corpus(old, scale=0.02, seed=0)
    after = digest(old)
    assert after.pop(PHONES) == digest(corpus)[PHONES] and after == before
