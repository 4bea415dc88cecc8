"""The paper's fine-tuning protocol (Fan et al. 2024): the lr schedule of the rendered MyST
config step by step, and the masking of the CNN features inside the upstream."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

import espnet_delta.asr  # noqa: F401  (registers the plugin's classes)
from espnet_delta.asr.frontend.s3prl_exact import ExactS3prlFrontend
from espnet_delta.recipe import render_config
from espnet_delta.ssl.feature_masking import MaskingConfig, install_feature_masking, mask_features

PAPER_CONFIG = Path(__file__).resolve().parents[3] / "egs2/myst/asr1/conf/tuning/finetune_large.yaml"
PEAK, TOTAL = 3e-4, 12000


def protocol_lr(step: int, warmup: int) -> float:
    """lr of optimizer step ``step`` by the protocol: linear 0 -> 3e-4 over ``warmup``, then linear to 0 at 12,000."""
    if step <= warmup:
        return PEAK * step / warmup
    return PEAK * (TOTAL - step) / (TOTAL - warmup)


def render(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "train.yaml"
    render_config.main(["--base", str(PAPER_CONFIG), "--out", str(out), *args])
    return yaml.safe_load(out.read_text())


@pytest.mark.parametrize("model,warmup", [("wavlm", 500), ("hubert", 500), ("wav2vec2", 1000)])
def test_paper_lr_curve_in_optimizer_steps(tmp_path, model, warmup):
    from espnet2.schedulers.abs_scheduler import AbsBatchStepScheduler
    from espnet2.tasks.abs_task import optim_classes, scheduler_classes

    conf = render(tmp_path, "--per_model", model)
    assert "per_model" not in conf  # ESPnet would refuse the key
    # the step budget: epochs are bounded by iterations, one optimizer step per accum_grad iterations
    assert conf["num_iters_per_epoch"] % conf["accum_grad"] == 0
    assert conf["max_epoch"] * conf["num_iters_per_epoch"] // conf["accum_grad"] == TOTAL
    assert conf["optim"] == "adamw" and conf["optim_conf"]["lr"] == PEAK

    param = torch.nn.Parameter(torch.zeros(1))
    optim = optim_classes[conf["optim"]]([param], **conf["optim_conf"])
    scheduler = scheduler_classes[conf["scheduler"]](optim, **conf["scheduler_conf"])
    assert isinstance(scheduler, AbsBatchStepScheduler)  # ESPnet steps it after every optimizer step
    used = [None]  # used[n]: the lr of the n-th optimizer step, as ESPnet's trainer runs them
    for _ in range(TOTAL):
        used.append(optim.param_groups[0]["lr"])
        optim.step()
        scheduler.step()

    # hand values: lr(250) = 3e-4 * 250 / warmup, lr(warmup) = 3e-4,
    # lr(6250) = 3e-4 * 5750 / (12000 - warmup), lr(12000) = 0
    assert used[250] == pytest.approx(PEAK * 250 / warmup, rel=1e-9)
    assert used[warmup] == pytest.approx(3e-4, rel=1e-9)
    assert used[6250] == pytest.approx(3e-4 * (12000 - 6250) / (12000 - warmup), rel=1e-9)
    assert used[TOTAL] == pytest.approx(0.0, abs=1e-12)
    # step 0 (before any update): the warm-up line starts at 0
    assert used[1] - (used[2] - used[1]) == pytest.approx(0.0, abs=1e-12)
    if warmup == 500:
        assert used[250] == pytest.approx(1.5e-4, rel=1e-9)
    for n in range(1, TOTAL + 1):
        assert used[n] == pytest.approx(protocol_lr(n, warmup), rel=1e-9, abs=1e-15), n


def test_rendered_paper_config_masks_features_and_not_the_output(tmp_path):
    conf = render(tmp_path, "--per_model", "wavlm")
    fc = conf["frontend_conf"]
    assert (fc["mask_time_prob"], fc["mask_time_length"], fc["mask_feature_prob"], fc["mask_feature_length"]) == (
        0.3, 10, 0.1, 64)
    assert conf["specaug"] is None
    assert conf["freeze_param"] == ["frontend.upstream.upstream.model.feature_extractor"]


def test_per_model_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"scheduler_conf": {"a": 1, "b": 2}, "per_model": {"w2v": {"scheduler_conf.a": 5}}}))
    out = tmp_path / "out.yaml"
    render_config.main(["--base", str(base), "--out", str(out), "--per_model", "w2v"])
    assert yaml.safe_load(out.read_text()) == {"scheduler_conf": {"a": 5, "b": 2}}
    render_config.main(["--base", str(base), "--out", str(out), "--per_model", "other"])
    assert yaml.safe_load(out.read_text()) == {"scheduler_conf": {"a": 1, "b": 2}}
    # the command line wins over per_model
    render_config.main(["--base", str(base), "--out", str(out), "--per_model", "w2v", "--set", "scheduler_conf.a=7"])
    assert yaml.safe_load(out.read_text()) == {"scheduler_conf": {"a": 7, "b": 2}}
    base.write_text(yaml.safe_dump({"per_model": {"w2v": 3}}))
    with pytest.raises(SystemExit):
        render_config.main(["--base", str(base), "--out", str(out), "--per_model", "w2v"])


# ---------------------------------------------------------------------------- masking


def padded_batch(lengths, frames=60, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), frames, dim, generator=gen) + 3.0  # no exact zeros
    padding = torch.arange(frames)[None, :] >= torch.tensor(lengths)[:, None]
    return x, padding


def test_time_masks_put_mask_emb_on_valid_frames_only():
    x, padding = padded_batch([60, 41, 7])
    emb = torch.full((16,), -5.0)
    torch.manual_seed(0)
    out, time, channel = mask_features(x, padding, emb, MaskingConfig(time_prob=0.3, time_length=10))
    assert not channel.any()
    changed = (out != x).any(-1)
    assert torch.equal(changed, time)
    assert not (time & padding).any()
    assert torch.equal(out[padding], x[padding])
    assert torch.all(out[time] == emb)
    assert torch.equal(out[~time], x[~time])
    assert not time[2].any()  # 7 valid frames: shorter than one span of 10
    for row, n in enumerate([60, 41]):  # at least min_masks = 2 spans: >= 10 frames
        assert 10 <= int(time[row].sum()) <= n
    # masked frames come in runs whose lengths are sums of overlapping spans of 10: every run >= 10
    for row in range(2):
        runs = "".join("1" if v else "0" for v in time[row].tolist()).split("0")
        assert all(len(r) >= 10 for r in runs if r)


def test_channel_masks_zero_dims_on_valid_frames_only():
    x, padding = padded_batch([60, 30], dim=64)
    torch.manual_seed(1)
    cfg = MaskingConfig(feature_prob=0.2, feature_length=8, feature_min_masks=1)
    out, time, channel = mask_features(x, padding, torch.zeros(64), cfg)
    assert not time.any() and channel.any(dim=1).all()
    valid = ~padding
    for row in range(2):
        ch = channel[row]
        assert torch.all(out[row][valid[row]][:, ch] == 0)
        assert torch.equal(out[row][valid[row]][:, ~ch], x[row][valid[row]][:, ~ch])
    assert torch.equal(out[padding], x[padding])


def test_time_and_channel_masks_together():
    x, padding = padded_batch([60, 50], dim=64)
    emb = torch.linspace(1, 2, 64)
    torch.manual_seed(2)
    cfg = MaskingConfig(time_prob=0.3, time_length=10, feature_prob=0.1, feature_length=8, feature_min_masks=1)
    out, time, channel = mask_features(x, padding, emb, cfg)
    for row in range(2):
        ch = channel[row]
        assert torch.all(out[row][time[row]][:, ~ch] == emb[~ch])
        assert torch.all(out[row][~padding[row]][:, ch] == 0)
    assert torch.equal(out[padding], x[padding])


def expected_fraction(n: int, prob: float, length: int, min_masks: int) -> float:
    """Expected masked fraction of n positions: k spans at distinct uniform starts among N = n - length + 1.

    k = floor(prob * n / length + u): floor(x) with probability 1 - frac(x), else floor(x) + 1. Position t is
    covered by m_t starts; it stays unmasked when none of them is drawn: C(N - m_t, k) / C(N, k).
    """
    x = prob * n / length
    starts = n - length + 1
    fraction = 0.0
    for k, pk in ((math.floor(x), 1 - (x - math.floor(x))), (math.floor(x) + 1, x - math.floor(x))):
        k = min(max(k, min_masks), starts)
        unmasked = sum(
            math.comb(starts - (min(t, starts - 1) - max(0, t - length + 1) + 1), k) / math.comb(starts, k)
            for t in range(n)
        )
        fraction += pk * (1 - unmasked / n)
    return fraction


def test_mask_fraction_over_many_draws_matches_the_protocol():
    """Protocol: time prob 0.30 / span 10 on 1,000 frames, channel prob 0.10 / span 64 on 1,024 dims.

    Spans overlap, so the masked fraction is below the nominal probability: 0.2634 of the frames
    (30 spans) and 0.0976 of the dims (1 or 2 spans). Tolerance 0.005 absolute: about 15 standard
    errors of the time mean and 6 of the channel mean over 1,600 draws.
    """
    time_expected = expected_fraction(1000, 0.3, 10, 2)
    channel_expected = expected_fraction(1024, 0.1, 64, 0)
    assert time_expected == pytest.approx(0.2634, abs=1e-4)
    assert channel_expected == pytest.approx(0.0976, abs=1e-4)
    time_cfg = MaskingConfig(time_prob=0.3, time_length=10)
    channel_cfg = MaskingConfig(feature_prob=0.1, feature_length=64)
    torch.manual_seed(3)
    times, channels = [], []
    for _ in range(100):  # 16 utterances a draw; the axis not masked is kept to 1 for speed
        _, time, _ = mask_features(torch.ones(16, 1000, 1), None, torch.zeros(1), time_cfg)
        _, _, channel = mask_features(torch.ones(16, 1, 1024), None, torch.zeros(1024), channel_cfg)
        times.append(time.float().mean())
        channels.append(channel.float().mean())
    assert float(torch.stack(times).mean()) == pytest.approx(time_expected, abs=5e-3)
    assert float(torch.stack(channels).mean()) == pytest.approx(channel_expected, abs=5e-3)


def test_masking_needs_mask_emb_and_room_for_a_channel_span():
    with pytest.raises(ValueError, match="mask_emb"):
        install_feature_masking(torch.nn.Linear(2, 2), MaskingConfig(time_prob=0.3))
    model = torch.nn.Module()
    model.encoder, model.mask_emb = torch.nn.Identity(), torch.nn.Parameter(torch.zeros(32))
    with pytest.raises(ValueError, match="mask_feature_length=64"):
        install_feature_masking(model, MaskingConfig(feature_prob=0.1, feature_length=64))
    with pytest.raises(ValueError, match="mask_time_prob"):
        MaskingConfig(time_prob=1.5)


# ---------------------------------------------------------------------------- inside the upstream


@pytest.mark.parametrize("arch", ["wavlm", "hubert", "wav2vec2"])
def test_upstream_masks_cnn_features_with_its_mask_emb_in_training_only(tiny_upstreams, arch):
    conf = {"upstream": f"{arch}_local", "path_or_url": str(tiny_upstreams[arch])}
    masked = ExactS3prlFrontend(frontend_conf=conf, mask_time_prob=0.5, mask_time_length=4,
                                mask_feature_prob=0.2, mask_feature_length=4, mask_feature_min_masks=1)
    plain = ExactS3prlFrontend(frontend_conf=conf)
    assert set(masked.state_dict()) == set(plain.state_dict())  # checkpoints interchange
    model = masked.upstream.upstream.model
    seen = {}

    def capture(key):
        def hook(module, args, kwargs):
            seen[key] = (args[0].detach().clone(), kwargs.get("padding_mask"))
        return hook

    # around the masking hook: "before" runs first (prepended), "after" last
    model.encoder.register_forward_pre_hook(capture("before"), with_kwargs=True, prepend=True)
    model.encoder.register_forward_pre_hook(capture("after"), with_kwargs=True)

    # 16000 samples -> 49 conv frames, 9000 -> 27: the second row has 22 padded frames
    lengths = torch.tensor([16000, 9000])
    wavs = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    wavs[1, 9000:] = 0.0
    torch.manual_seed(0)
    masked.train()
    feats, _ = masked(wavs, lengths)
    before, padding = seen["before"]
    after, _ = seen["after"]
    valid = torch.ones(after.shape[:2], dtype=torch.bool) if padding is None else ~padding
    assert valid.sum(1).tolist() == [49, 27]
    emb = model.mask_emb.detach()
    assert torch.equal(after[~valid], before[~valid])  # padded frames untouched
    masked_frames = 0
    for row in range(2):
        a, b = after[row][valid[row]], before[row][valid[row]]
        zeroed = (a == 0).all(0)  # channel-masked dims: 0 on every valid frame
        assert 1 <= int(zeroed.sum()) < a.size(1)
        keep = ~zeroed
        is_emb = (a[:, keep] == emb[keep]).all(1)
        assert torch.equal(a[~is_emb][:, keep], b[~is_emb][:, keep])  # the rest is the CNN feature itself
        masked_frames += int(is_emb.sum())
    assert masked_frames >= 8  # two rows, at least 2 spans of 4 each
    feats.sum().backward()
    assert model.mask_emb.grad is not None and model.mask_emb.grad.abs().sum() > 0  # the embedding is learned

    masked.eval()
    plain.load_state_dict(masked.state_dict())
    plain.eval()
    with torch.no_grad():
        out, frames = masked(wavs, lengths)
        ref, ref_frames = plain(wavs, lengths)
    assert torch.equal(seen["after"][0], seen["before"][0])  # nothing masked in eval mode
    assert torch.equal(frames, ref_frames)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
