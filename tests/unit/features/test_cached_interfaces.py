"""The feature cache with every hidden state (``layer: all``) and fusion through layer interfaces on it."""

from __future__ import annotations

import json

import kaldiio
import numpy as np
import pytest
import torch

from conftest import first_utterances

from espnet_delta.asr.frontend.cached_fusion import CachedFusionFrontend
from espnet_delta.asr.frontend.delta_fusion import DeltaFusionFrontend
from espnet_delta.features.extract import extract_features
from espnet_delta.features.layout import FeatureLayout, unflatten_states

BATCH = dict(batch_seconds=4.0, batch_size=3, progress=False, device="cpu")


def spec(arch, upstreams, finetuned, name=None):
    out = {"upstream": f"{arch}_local", "path_or_url": str(upstreams[arch]), "finetuned": str(finetuned[arch])}
    return {**out, "name": name} if name else out


@pytest.fixture(scope="module")
def conf(tiny_upstreams, finetuned):
    return {"reference": spec("wavlm", tiny_upstreams, finetuned), "others": [spec("hubert", tiny_upstreams, finetuned)]}


@pytest.fixture(scope="module")
def data(mini_data, tmp_path_factory):
    return first_utterances(mini_data, tmp_path_factory.mktemp("data5") / "dev", 5)


@pytest.fixture(scope="module")
def all_states(conf, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("all") / "feats"
    extract_features({**conf, "layer": "all"}, data, out, num_shards=1, **BATCH)
    return out


def read(out):
    return dict(kaldiio.load_scp(str(out / "feats.scp")))


def test_layout_records_states_and_sizes(all_states):
    layout = json.loads((all_states / "layout.json").read_text())
    assert layout["layer"] == "all"
    loaded = FeatureLayout.load(all_states)
    # conftest.TINY: 3 transformer layers of 32 dims -> L = 4 hidden states, D = 32: 128 columns per stream
    assert [(s.states, s.state_dim, s.dim) for s in loaded.streams] == [(4, 32, 128)] * 3
    assert all(m.shape[1] == 3 * 128 for m in read(all_states).values())


def test_state_i_equals_a_single_layer_cache_of_layer_i(conf, data, all_states, tmp_path):
    layout = FeatureLayout.load(all_states)
    n_states, dim = layout.stream_states("wavlm_local.ft")
    many = read(all_states)
    for i in (0, n_states // 2, n_states - 1):
        out = tmp_path / f"layer{i}"
        extract_features({**conf, "layer": i}, data, out, num_shards=1, **BATCH)
        one, one_layout = read(out), FeatureLayout.load(out)
        for utt, matrix in one.items():
            for name in one_layout.names:  # state i of every stream (E_ft and the delta alike)
                want = one_layout.stream(matrix, name)
                got = layout.stream(many[utt], name)[:, i * dim:(i + 1) * dim]
                np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_unflatten_states_is_state_major():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # (B, T, L, D)
    y = unflatten_states(x.flatten(2), 4)
    assert y.shape == (2, 4, 3, 5)
    assert torch.equal(y[1, 2, 0], x[1, 0, 2])  # utterance 1, state 2, frame 0


@pytest.mark.parametrize("interface,iconf", [("hconv", None), ("weighted_sum", None), ("concat", None),
                                             ("cls_pooling", {"num_heads": 4}), ("pca", {"output_dim": 8, "fit_frames": 16})])
def test_cached_interface_fusion_equals_on_the_fly(tiny_upstreams, finetuned, interface, iconf, tmp_path):
    online = DeltaFusionFrontend(
        reference=spec("wavlm", tiny_upstreams, finetuned), deltas=[spec("hubert", tiny_upstreams, finetuned)],
        fusion="concat", interface=interface, interface_conf=iconf,
    ).eval()
    ext = online.extractor
    from espnet_delta.ssl.embeddings import SSLEmbeddingExtractor

    cache_ext = SSLEmbeddingExtractor(ext.reference_spec, ext.other_specs, mode="delta", layer="all")
    wavs = 0.1 * torch.randn(2, 7000, generator=torch.Generator().manual_seed(5))
    lens = torch.tensor([7000, 4800])
    streams, frames = cache_ext.streams(wavs, lens)
    n_states = len(ext.reference_ft.hidden_sizes)
    layout = {"layer": "all", "streams": [{"name": n, "dim": s.size(-1), "states": n_states}
                                          for n, s in zip(cache_ext.stream_names(), streams)]}
    cached = CachedFusionFrontend(layout=layout, deltas=["hubert_local"], fusion="concat", interface=interface,
                                  interface_conf=iconf)
    if interface == "pca":  # fitted on a training batch of the cache (16 of 35 frames per stream), then fixed
        cached.train()(torch.cat(streams, dim=-1), frames)
        assert [float(i.fixed_frames) for i in (cached.interfaces.ref, *cached.interfaces.others)] == [16, 16]
        assert not list(cached.interfaces.parameters())
    cached.eval()
    # the same parameter (and buffer) names: a module trained on the cache loads into the on-the-fly
    # frontend, and the other way round
    online.load_state_dict(cached.state_dict())
    cached.load_state_dict(online.state_dict())
    assert cached.output_size() == online.output_size()
    z_cached, l_cached = cached(torch.cat(streams, dim=-1), frames)
    z_online, l_online = online(wavs, lens)
    assert torch.equal(l_cached, l_online)
    torch.testing.assert_close(z_cached, z_online, atol=1e-5, rtol=0)


def test_interface_and_cache_must_agree(all_states):
    with pytest.raises(ValueError, match="every hidden state.*set frontend_conf.interface"):
        CachedFusionFrontend(layout=str(all_states / "layout.json"), deltas=["hubert_local"])
    single = {"streams": [{"name": "wavlm.ft", "dim": 8}, {"name": "hubert.delta", "dim": 8}, {"name": "hubert.ft", "dim": 8}]}
    with pytest.raises(ValueError, match="needs every hidden state.*layer: all"):
        CachedFusionFrontend(layout=single, deltas=["hubert"], interface="hconv")


def test_hconv_output_size_from_the_cached_shape(all_states):
    frontend = CachedFusionFrontend(layout=str(all_states), deltas=["hubert_local"], interface="hconv", head_norm=False)
    # L = 4, D = 32: floor(log3 4) = 1 conv, layer axis (4 - 1) // 3 + 1 = 2, D // 2 = 16 channels -> 32 per
    # stream; concat fusion of the reference and one delta stream -> 64
    assert frontend.output_size() == 64
