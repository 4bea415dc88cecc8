"""DeltaFusionFrontend inside ESPnet: dims, initialiser safety, training and decoding."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from espnet_delta.asr.frontend.delta_fusion import DeltaFusionFrontend


def conf(tiny_upstreams, finetuned, fusion="concat", mode="delta", archs=("hubert",)):
    return {
        "reference": {"upstream": "wavlm_local", "path_or_url": str(tiny_upstreams["wavlm"]),
                      "finetuned": str(finetuned["wavlm"])},
        "deltas": [{"upstream": f"{a}_local", "path_or_url": str(tiny_upstreams[a]), "finetuned": str(finetuned[a])}
                   for a in archs],
        "fusion": fusion,
        "mode": mode,
        "fusion_conf": {"num_heads": 4} if fusion == "xattn" else None,
    }


@pytest.mark.parametrize("mode", ["delta", "full"])
@pytest.mark.parametrize(
    "fusion,archs,dim",
    [("concat", ("hubert",), 64), ("concat", ("hubert", "wav2vec2"), 96), ("weighted", ("hubert",), 32),
     ("xattn", ("hubert",), 32), ("moe", ("hubert", "wav2vec2"), 32)],
)
def test_output_dims_per_fusion_and_mode(tiny_upstreams, finetuned, fusion, archs, dim, mode):
    fe = DeltaFusionFrontend(fs="16k", **conf(tiny_upstreams, finetuned, fusion, mode, archs))
    assert fe.output_size() == dim
    feats, lens = fe(torch.randn(2, 8000), torch.tensor([8000, 5000]))
    assert feats.shape == (2, 24, dim) and lens.tolist() == [24, 15]


def test_only_fusion_parameters_are_trainable_and_saved(tiny_upstreams, finetuned):
    fe = DeltaFusionFrontend(**conf(tiny_upstreams, finetuned, "moe"))
    names = ["head.fusion.gate.weight", "head.norm.bias", "head.norm.weight"]
    assert sorted(fe.state_dict()) == names
    assert sorted(name for name, _ in fe.named_parameters()) == names
    # a backward pass reaches every head parameter and none of the frozen upstream weights
    feats, _ = fe(torch.randn(2, 6000), torch.tensor([6000, 4000]))
    (feats * torch.randn(feats.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    for name, p in fe.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    upstreams = [fe.extractor.reference_ft, *fe.extractor.others_ft, *fe.extractor.others_pt]
    for up in upstreams:
        assert all(not p.requires_grad and p.grad is None for p in up.upstream.parameters())


def test_espnet_initialiser_does_not_clobber_upstreams(tiny_upstreams, finetuned):
    from espnet2.torch_utils.initialize import initialize

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.frontend = DeltaFusionFrontend(**conf(tiny_upstreams, finetuned))

    model = Model().eval()
    wav, lens = torch.randn(1, 6000), torch.tensor([6000])
    before = model.frontend.extractor(wav, lens)
    initialize(model, "xavier_uniform")
    after = model.frontend.extractor(wav, lens)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1][0], after[1][0])


def test_frontend_dropout_only_in_head(tiny_upstreams, finetuned):
    """In train mode the upstreams stay deterministic; only the head's dropout varies the output."""
    p = 0.5
    fe = DeltaFusionFrontend(**conf(tiny_upstreams, finetuned), head_dropout=p)
    wav, lens = torch.randn(2, 7000), torch.tensor([7000, 6000])
    # the upstream features are the same in train and eval mode (upstream dropout stays off)
    ref_train, (other_train,), _ = fe.train().extractor(wav, lens)
    ref_eval, (other_eval,), _ = fe.eval().extractor(wav, lens)
    assert torch.equal(ref_train, ref_eval) and torch.equal(other_train, other_eval)
    clean, _ = fe.eval()(wav, lens)  # eval: no dropout anywhere
    fe.train()
    a, _ = fe(wav, lens)
    b, _ = fe(wav, lens)
    assert not torch.equal(a, b)  # the head's dropout is on in train mode
    for out in (a, b):
        # inverted dropout of the eval output, and nothing else: each entry is 0 or clean / (1 - p)
        dropped = out == 0
        torch.testing.assert_close(out[~dropped], clean[~dropped] / (1 - p))
        assert 0.4 < dropped.float().mean() < 0.6  # about p of 2 x 22 x 64 entries


def test_bad_options_are_named(tiny_upstreams, finetuned):
    with pytest.raises(ValueError, match="16 kHz"):
        DeltaFusionFrontend(fs=8000, **conf(tiny_upstreams, finetuned))
    with pytest.raises(ValueError, match="fusion='gated'"):
        DeltaFusionFrontend(**conf(tiny_upstreams, finetuned, "gated"))


def test_help_lists_delta_fusion():
    out = subprocess.run([sys.executable, "-m", "espnet_delta.bin.asr_train", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "delta_fusion" in out.split("--frontend {")[1].split("}")[0]


def test_espnet_trainer_runs_and_saved_model_decodes(tiny_upstreams, finetuned, mini_data, tmp_path):
    """ESPnet's own trainer on mini_myst data with frontend: delta_fusion; the saved model decodes."""
    from espnet_training import train_tiny

    from espnet_delta.asr.inference import Speech2Text

    config = {
        "frontend": "delta_fusion",
        "frontend_conf": conf(tiny_upstreams, finetuned, "xattn"),
        "specaug": None,
        "normalize": None,
        "encoder": "identity",
        "decoder": "none",
        "model": "espnet_ctc_wer",
        "model_conf": {"ctc_weight": 1.0},
        "optim": "adamw",
        "optim_conf": {"lr": 0.005},
        "grad_clip": 1.0,
        "max_epoch": 2,
        "batch_type": "unsorted",
        "batch_size": 4,
        "best_model_criterion": [["valid", "wer_ctc", "min"]],
        "num_workers": 0,
    }
    exp = train_tiny(config, mini_data, tmp_path)
    model_file = exp / "valid.wer_ctc.best.pth"  # selected by the dev WER that espnet_ctc_wer reports
    assert model_file.is_file()
    saved = torch.load(model_file, weights_only=True)
    assert not any("upstream" in k for k in saved)  # the frozen SSL models are not in the checkpoint
    assert any(k.startswith("frontend.head.fusion.attention") for k in saved)

    s2t = Speech2Text(asr_train_config=str(exp / "config.yaml"), asr_model_file=str(model_file),
                      ctc_weight=1.0, beam_size=2, lm_weight=0.0, device="cpu")
    import soundfile
    utt, path = (mini_data / "test" / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)
    wav, sr = soundfile.read(path, dtype="float32")
    speech = torch.from_numpy(wav)
    text, tokens, token_ids, hyp = s2t(speech)[0]
    token_list = (mini_data / "tokens.txt").read_text().splitlines()
    assert tokens == [token_list[i] for i in token_ids]
    assert text == "".join(tokens).replace("<space>", " ").strip()
    # with ctc_weight 1.0 the beam search scores a finished hypothesis by its CTC log-likelihood
    # log P(y | x), a sum over all alignments: recompute it from the model's own log-probabilities
    with torch.no_grad():
        enc, enc_lens = s2t.asr_model.encode(speech[None], torch.tensor([speech.numel()]))
        log_probs = s2t.asr_model.ctc.log_softmax(enc)[0, : int(enc_lens[0])]
    nll = torch.nn.functional.ctc_loss(log_probs, torch.tensor(token_ids), [log_probs.size(0)], [len(token_ids)],
                                       blank=0, reduction="sum")
    assert float(hyp.score) == pytest.approx(-float(nll), abs=1e-3)
    # the decoded model carries the trained weights, not a fresh initialisation
    for key, value in s2t.asr_model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
