"""The espnet_ctc_wer model: validation stats carry the greedy-CTC word error rate."""

import torch

from espnet_delta.asr.encoder.identity import IdentityEncoder

TOKENS = ["<blank>", "<unk>", "<space>", "A", "B", "<sos/eos>"]
ID = {t: i for i, t in enumerate(TOKENS)}


def build_model():
    from espnet2.asr.ctc import CTC

    from espnet_delta.asr.ctc_wer_model import CTCWERModel

    V = len(TOKENS)
    ctc = CTC(odim=V, encoder_output_size=V)
    with torch.no_grad():  # logits = input frames: one-hot frames spell the greedy output
        ctc.ctc_lo.weight.copy_(torch.eye(V))
        ctc.ctc_lo.bias.zero_()
    return CTCWERModel(
        vocab_size=V, token_list=TOKENS, frontend=None, specaug=None, normalize=None, preencoder=None,
        encoder=IdentityEncoder(V), postencoder=None, decoder=None, ctc=ctc, joint_network=None, ctc_weight=1.0,
    )


def frames(symbols, length):
    """One-hot frames for a greedy CTC path, zero-padded to ``length`` with blanks."""
    x = torch.zeros(length, len(TOKENS))
    x[:, ID["<blank>"]] = 1.0
    for t, s in enumerate(symbols):
        x[t] = 0.0
        x[t, ID[s]] = 10.0
    return x


def text(symbols, length):
    ids = torch.full((length,), -1, dtype=torch.long)
    ids[: len(symbols)] = torch.tensor([ID[s] for s in symbols])
    return ids


def test_validation_stats_report_word_errors_over_reference_words():
    model = build_model().eval()
    # utt 0: "AB A" (frames A B <space> A) vs reference "AB B": 1 substitution in 2 words
    # utt 1: "BB" needs a blank between the two Bs; padding frames past the length say "A" and are ignored
    hyp1 = frames(["B", "<blank>", "B"], 8)
    hyp1[4:, :] = 0.0
    hyp1[4:, ID["A"]] = 10.0
    speech = torch.stack([frames(["A", "B", "<space>", "A"], 8), hyp1])
    lengths = torch.tensor([8, 4])
    refs = torch.stack([text(["A", "B", "<space>", "B"], 5), text(["B", "B"], 5)])
    ref_lens = torch.tensor([4, 2])
    with torch.no_grad():
        _, stats, _ = model(speech, lengths, refs, ref_lens)
    # 1 error / 3 reference words; repeated reference characters are not collapsed
    # (a float32 tensor like ESPnet's other stats, so that DDP can average it)
    assert stats["wer_ctc"].dtype == torch.float32
    assert abs(float(stats["wer_ctc"]) - 1 / 3) < 1e-7
    assert "cer_ctc" in stats


def test_training_steps_do_not_decode():
    model = build_model().train()
    speech = torch.stack([frames(["A"], 3)])
    _, stats, _ = model(speech, torch.tensor([3]), text(["A"], 1)[None], torch.tensor([1]))
    assert "wer_ctc" not in stats


def test_ctc_blank_prior_sets_the_blank_probability_of_the_bias():
    from espnet2.asr.ctc import CTC

    from espnet_delta.asr.ctc_wer_model import CTCWERModel

    V = len(TOKENS)
    model = CTCWERModel(
        vocab_size=V, token_list=TOKENS, frontend=None, specaug=None, normalize=None, preencoder=None,
        encoder=IdentityEncoder(V), postencoder=None, decoder=None, ctc=CTC(odim=V, encoder_output_size=V),
        joint_network=None, ctc_weight=1.0, ctc_blank_prior=0.5,
    )
    bias = model.ctc.ctc_lo.bias.detach()
    # hand computation: V = 6, blank bias log(0.5 * 5 / 0.5) = log 5, others 0 -> 5 / (5 + 5) = 0.5
    assert abs(float(bias[ID["<blank>"]]) - 1.6094379) < 1e-6
    assert torch.equal(bias[1:], torch.zeros(V - 1))
    assert abs(float(torch.softmax(bias, 0)[ID["<blank>"]]) - 0.5) < 1e-6


def test_ctc_blank_prior_outside_zero_one_is_refused():
    import pytest

    with pytest.raises(ValueError, match="ctc_blank_prior"):
        build_model().init_blank_prior(1.0)


def test_frontend_lr_is_a_parameter_group_of_espnets_optimizer_builder():
    """model_conf.frontend_lr: ESPnet's builder (exclude_weight_decay: true) puts the frontend's parameters
    in a group at that lr; the CTC head keeps optim_conf.lr, and the scheduler scales both alike."""
    import pytest
    from espnet2.asr.ctc import CTC
    from espnet2.asr.frontend.abs_frontend import AbsFrontend
    from espnet2.optimizers.optim_groups import configure_optimizer
    from espnet2.schedulers.warmup_lr import WarmupLR

    from espnet_delta.asr.ctc_wer_model import CTCWERModel

    class Frontend(AbsFrontend):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(2, 2)

        def output_size(self) -> int:
            return 2

        def forward(self, speech, lengths):
            return self.proj(speech), lengths

    V = len(TOKENS)
    model = CTCWERModel(
        vocab_size=V, token_list=TOKENS, frontend=Frontend(), specaug=None, normalize=None, preencoder=None,
        encoder=IdentityEncoder(2), postencoder=None, decoder=None, ctc=CTC(odim=V, encoder_output_size=2),
        joint_network=None, ctc_weight=1.0, frontend_lr=5e-5,
    )
    optim = configure_optimizer(model, torch.optim.Adam, {"lr": 5e-3},
                                {"bias_weight_decay": True, "normalization_weight_decay": True})
    lr_of = {id(p): group["lr"] for group in optim.param_groups for p in group["params"]}
    assert [lr_of[id(p)] for p in model.frontend.parameters()] == [5e-5, 5e-5]
    assert [lr_of[id(p)] for p in model.ctc.parameters()] == [5e-3, 5e-3]
    WarmupLR(optim, warmup_steps=4)  # step 1 of a 4-step warm-up: lr x 1/4 in both groups
    assert sorted(g["lr"] for g in optim.param_groups) == pytest.approx([5e-5 / 4, 5e-3 / 4])
    with pytest.raises(ValueError, match="frontend_lr"):
        model.set_frontend_lr(0.0)
