"""The cached-feature frontend trains the same head as the on-the-fly frontend."""

import pytest
import torch

from espnet_delta.asr.frontend.cached_fusion import CachedFusionFrontend
from espnet_delta.features.layout import LayoutError
from espnet_delta.asr.frontend.delta_fusion import DeltaFusionFrontend


def spec(arch, tiny_upstreams, finetuned, name):
    return {"upstream": f"{arch}_local", "path_or_url": str(tiny_upstreams[arch]),
            "finetuned": str(finetuned[arch]), "name": name}


@pytest.mark.parametrize("fusion,mode", [("concat", "delta"), ("moe", "delta"), ("concat", "full"), ("xattn", "delta")])
def test_cached_matches_on_the_fly(tiny_upstreams, finetuned, fusion, mode):
    conf = {"num_heads": 4} if fusion == "xattn" else None
    online = DeltaFusionFrontend(
        reference=spec("wavlm", tiny_upstreams, finetuned, "wavlm"),
        deltas=[spec("hubert", tiny_upstreams, finetuned, "hubert"), spec("wav2vec2", tiny_upstreams, finetuned, "w2v2")][
            : 1 if fusion == "xattn" else 2],
        fusion=fusion, mode=mode, fusion_conf=conf,
    ).eval()
    ext = online.extractor
    # the cache always holds E_pt and E_ft (delta-mode extraction), whatever the fusion mode
    from espnet_delta.ssl.embeddings import SSLEmbeddingExtractor

    cache_ext = SSLEmbeddingExtractor(ext.reference_spec, ext.other_specs, mode="delta")
    wavs = 0.1 * torch.randn(2, 7000, generator=torch.Generator().manual_seed(3))
    lens = torch.tensor([7000, 5200])
    streams, frames = cache_ext.streams(wavs, lens)
    layout = {"streams": [{"name": n, "dim": s.size(-1)} for n, s in zip(cache_ext.stream_names(), streams)]}
    cached = CachedFusionFrontend(layout=layout, deltas=[s.name for s in ext.other_specs], mode=mode,
                                  fusion=fusion, fusion_conf=conf).eval()
    cached.head.load_state_dict(online.head.state_dict())
    matrix = torch.cat(streams, dim=-1)
    z_cached, l_cached = cached(matrix, frames)
    z_online, l_online = online(wavs, lens)
    assert torch.equal(l_cached, l_online)
    torch.testing.assert_close(z_cached, z_online, atol=1e-5, rtol=0)


def test_cached_frontend_refuses_missing_streams():
    layout = {"streams": [{"name": "wavlm.ft", "dim": 8}, {"name": "hubert.ft", "dim": 8}]}
    with pytest.raises(LayoutError, match="hubert.pt"):
        CachedFusionFrontend(layout=layout, deltas=["hubert"], mode="delta")
    with pytest.raises(LayoutError, match="w2v2"):
        CachedFusionFrontend(layout=layout, deltas=["w2v2"], mode="full")
    assert CachedFusionFrontend(layout=layout, deltas=["hubert"], mode="full").output_size() == 16
