"""frontend: s3prl_exact: an utterance's features in a padded batch equal its features alone."""

import pytest
import torch

import espnet_delta.asr  # noqa: F401  (registers the plugin's classes)
from espnet_delta.asr.frontend.s3prl_exact import ExactS3prlFrontend


@pytest.mark.parametrize("arch", ["wavlm", "hubert", "wav2vec2"])
def test_padded_batch_equals_alone_with_conv_frame_counts(tiny_upstreams, arch):
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    conf = {"upstream": f"{arch}_local", "path_or_url": str(tiny_upstreams[arch])}
    exact = ExactS3prlFrontend(frontend_conf=conf).eval()
    torch.manual_seed(0)
    # 16000 samples: conv frames floor((16000 - 400) / 320) + 1 = 49 (S3PRL reports ceil(16000/320) = 50);
    # 9000 samples: floor(8600 / 320) + 1 = 27 (S3PRL: 29)
    lengths = torch.tensor([16000, 9000])
    wavs = torch.randn(2, 16000) * 0.1
    wavs[1, 9000:] = 0.0
    with torch.no_grad():
        feats, frames = exact(wavs, lengths)
        alone = [exact(wavs[i : i + 1, : int(n)], lengths[i : i + 1]) for i, n in enumerate(lengths)]
    assert frames.tolist() == [49, 27]
    assert feats.shape[1] == 49
    for i, (f, n) in enumerate(alone):
        assert int(n[0]) == int(frames[i])
        torch.testing.assert_close(feats[i, : int(frames[i])], f[0], atol=1e-4, rtol=0)
    assert torch.all(feats[1, 27:] == 0)

    # the same weights under ESPnet's own frontend: same state dict keys (checkpoints interchange)
    plain = S3prlFrontend(frontend_conf=conf)
    assert set(plain.state_dict()) == set(exact.state_dict())


def test_missing_frontend_conf_is_a_clear_error():
    with pytest.raises(ValueError, match="frontend_conf"):
        ExactS3prlFrontend()
