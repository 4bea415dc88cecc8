"""The ESPnet-facing constructors (frontends, identity encoder) are type-checked with
typeguard, and their keyword arguments are exactly the YAML ``*_conf`` keys."""

import pytest
import torch
import yaml
from typeguard import TypeCheckError

from espnet_delta.asr.frontend.cached_fusion import CachedFusionFrontend
from espnet_delta.asr.frontend.delta_fusion import DeltaFusionFrontend
from espnet_delta.asr.encoder.identity import IdentityEncoder

WAVLM, HUBERT = {"upstream": "wavlm"}, {"upstream": "hubert"}
LAYOUT = {"streams": [{"name": "wavlm.ft", "dim": 8}, {"name": "hubert.pt", "dim": 8}, {"name": "hubert.ft", "dim": 8}]}


@pytest.mark.parametrize(
    "build",
    [
        lambda: IdentityEncoder(input_size="8"),
        lambda: IdentityEncoder(input_size=8.0),
        lambda: CachedFusionFrontend(layout=LAYOUT, head_norm="yes"),
        lambda: CachedFusionFrontend(layout=LAYOUT, deltas="hubert"),  # a string, not a list of names
        lambda: CachedFusionFrontend(layout=3),
        lambda: CachedFusionFrontend(layout=LAYOUT, fs=16000.0),
        # refused before any upstream is built, so no checkpoint is needed
        lambda: DeltaFusionFrontend(reference="wavlm_large", deltas=[HUBERT]),
        lambda: DeltaFusionFrontend(reference=WAVLM, deltas=HUBERT),  # a mapping, not a list of them
        lambda: DeltaFusionFrontend(reference=WAVLM, deltas=[HUBERT], head_dropout="0.1"),
        lambda: DeltaFusionFrontend(reference=WAVLM, deltas=[HUBERT], layer=[3]),
    ],
)
def test_wrong_types_are_refused(build):
    with pytest.raises(TypeCheckError):
        build()


def test_cached_frontend_takes_its_yaml_conf_as_keywords():
    conf = yaml.safe_load(
        """
        fs: 16k
        reference: wavlm
        deltas: [hubert]
        mode: delta
        fusion: xattn
        fusion_conf: {num_heads: 2}
        head_norm: true
        head_dropout: 0      # an int where a float is expected is fine (PEP 484 numeric tower)
        """
    )
    frontend = CachedFusionFrontend(layout=LAYOUT, **conf)
    assert frontend.output_size() == 8 and frontend.head.fusion.attention.num_heads == 2
    z, lengths = frontend(torch.randn(2, 5, 24), torch.tensor([5, 3]))
    assert z.shape == (2, 5, 8) and lengths.tolist() == [5, 3]


def test_identity_encoder_passes_features_through():
    encoder = IdentityEncoder(**yaml.safe_load("input_size: 8"))
    x, lengths = torch.randn(2, 5, 8), torch.tensor([5, 3])
    y, out_lengths, states = encoder(x, lengths)
    assert encoder.output_size() == 8 and y is x and out_lengths is lengths and states is None
