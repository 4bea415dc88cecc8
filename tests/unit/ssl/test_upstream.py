"""Upstream loading: tiny checkpoints through S3PRL, fine-tuned weights, mismatch errors."""

import pytest
import torch

from conftest import perturb_all, write_espnet_checkpoint
from espnet_delta.ssl.tiny import LOCAL_UPSTREAM, make_tiny_upstream
from espnet_delta.ssl.upstream import CheckpointMismatchError, load_upstream, read_upstream_weights


@pytest.mark.parametrize("arch", ["wavlm", "hubert", "wav2vec2"])
def test_tiny_upstream_round_trip(tiny_upstreams, tmp_path, arch):
    """Saved and re-saved with the same seed: identical bytes-level weights and hidden states."""
    again = make_tiny_upstream(arch, tmp_path / "again.pt", seed=list(tiny_upstreams).index(arch),
                               config=__import__("conftest").TINY)
    wav = torch.randn(1, 8000, generator=torch.Generator().manual_seed(1))
    lens = torch.tensor([8000])
    outs = []
    for path in (tiny_upstreams[arch], again):
        up = load_upstream(LOCAL_UPSTREAM[arch], str(path))
        hs, hl = up(wav, lens)
        outs.append(hs)
        assert len(hs) == 4  # 3 layers -> 4 hidden states
        assert hs[-1].shape == (1, 25, 32)  # ceil(8000 / 320) frames
        assert int(hl[-1][0]) == 25
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_load_upstream_keeps_callers_rng(tiny_upstreams):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_upstream("wavlm_local", str(tiny_upstreams["wavlm"]))
    assert torch.equal(torch.rand(3), expected)


def test_finetuned_weights_loaded_both_prefixes(tiny_upstreams, tmp_path):
    pt = load_upstream("hubert_local", str(tiny_upstreams["hubert"]))
    wav, lens = torch.randn(1, 6400, generator=torch.Generator().manual_seed(0)), torch.tensor([6400])
    pt_states, pt_lens = pt(wav, lens)
    outputs = []
    for prefix in ("frontend.upstream.upstream.model.", "frontend.upstream.model."):
        ckpt = write_espnet_checkpoint(tiny_upstreams["hubert"], tmp_path / "ft.pth", perturb_all(), prefix)
        ft = load_upstream("hubert_local", str(tiny_upstreams["hubert"]), finetuned=str(ckpt))
        weights = read_upstream_weights(str(ckpt))
        key = "encoder.layers.0.self_attn.q_proj.weight"
        assert torch.equal(ft.upstream.model.state_dict()[key], weights[key])
        assert not torch.equal(pt.upstream.model.state_dict()[key], weights[key])
        assert not ft.training and not any(p.requires_grad for p in ft.parameters())
        # the forward pass runs the fine-tuned weights: same frames, different transformer outputs
        states, state_lens = ft(wav, lens)
        assert len(states) == len(pt_states) == 4 and torch.equal(state_lens[-1], pt_lens[-1])
        assert states[-1].shape == pt_states[-1].shape
        assert (states[-1] - pt_states[-1]).abs().max() > 1e-3
        outputs.append(states)
    # both ESPnet prefixes load the same weights, hence the same hidden states
    assert all(torch.equal(a, b) for a, b in zip(*outputs))


def test_mismatched_checkpoint_names_keys(tiny_upstreams, tmp_path):
    # A wav2vec2 checkpoint loaded into a WavLM architecture.
    ckpt = write_espnet_checkpoint(tiny_upstreams["wav2vec2"], tmp_path / "w2v.pth")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys .*unexpected keys .*quantizer"):
        load_upstream("wavlm_local", str(tiny_upstreams["wavlm"]), finetuned=str(ckpt))


def test_checkpoint_without_upstream_is_refused(tmp_path):
    path = tmp_path / "asr.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointMismatchError, match=str(path)):
        read_upstream_weights(str(path))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_upstream_weights(str(tmp_path / "missing.pth"))


def test_tiny_upstreams_are_byte_identical_wherever_written(tmp_path):
    """The same seed gives the same file bytes in another folder under another name
    (torch.save to a temporary path would record that path's name inside the archive)."""
    a = make_tiny_upstream("wavlm", tmp_path / "one" / "wavlm.pt", seed=4)
    b = make_tiny_upstream("wavlm", tmp_path / "two" / "other_name.pt", seed=4)
    assert a.read_bytes() == b.read_bytes()
