"""Running an upstream's layers ourselves (espnet_delta.ssl.layers): WavLM's buckets, waveform normalisation."""

import torch

from espnet_delta.ssl.layers import normalize_waveforms, relative_buckets


def test_relative_buckets_small_by_hand():
    # 8 buckets: keys to the left 0..3, to the right 4..7; distances below 8 // 4 = 2 get their own
    # bucket, so key - query = 0, -1, +1 fall into buckets 0, 1 and 4 + 1
    assert relative_buckets(2, 8, 16).tolist() == [[0, 5], [1, 0]]


def test_relative_buckets_match_wavlm():
    from s3prl.upstream.wavlm.modules import MultiheadAttention

    attn = MultiheadAttention(8, 2, self_attention=True, has_relative_attention_bias=True, num_buckets=32, max_distance=128)
    pos = torch.arange(300)
    assert torch.equal(relative_buckets(300, 32, 128), attn._relative_positions_bucket(pos[None, :] - pos[:, None]))


def test_normalize_waveforms_uses_each_utterances_own_samples():
    wavs = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 4.0, 8.0, 8.0]])
    out = normalize_waveforms(wavs, torch.tensor([3, 4]))
    # [1, 2, 3]: mean 2, variance 2/3 -> (x - 2) / sqrt(2/3 + 1e-5); the padded 9 becomes 0
    s = (2 / 3 + 1e-5) ** 0.5
    torch.testing.assert_close(out[0], torch.tensor([-1 / s, 0.0, 1 / s, 0.0]))
    # [4, 4, 8, 8]: mean 6, variance 4 -> +-2 / sqrt(4 + 1e-5)
    t = 2 / (4 + 1e-5) ** 0.5
    torch.testing.assert_close(out[1], torch.tensor([-t, -t, t, t]))
