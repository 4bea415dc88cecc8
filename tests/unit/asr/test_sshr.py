"""SSHR (arXiv 2309.16937): the split SSL stack (frontend: sshr, encoder: sshr), the language
frame, layer drop/replace, Cross-CTC through ESPnet's intermediate-CTC wiring, padding,
one ESPnet training step and reload."""

import pytest
import torch
import yaml

from espnet_delta.asr.encoder.sshr import SSHREncoder
from espnet_delta.asr.frontend.sshr import SSHRFrontend
from espnet_delta.ssl.tiny import TinyConfig, make_tiny_upstream, weights_of
from espnet_delta.ssl.upstream import FrozenUpstream, load_upstream

N_LAYERS, D, VOCAB = 4, 32, 7
TINY4 = TinyConfig(num_layers=N_LAYERS, embed_dim=D, ffn_dim=64, num_heads=4, conv_channels=16)


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory):
    out = tmp_path_factory.mktemp("sshr_upstreams")
    return {a: {"upstream": f"{a}_local", "path_or_url": str(make_tiny_upstream(a, out / f"{a}.pt", seed=3, config=TINY4))}
            for a in ("wavlm", "hubert", "wav2vec2")}


def batch():
    gen = torch.Generator().manual_seed(0)
    wav = torch.randn(2, 16000, generator=gen)
    lens = torch.tensor([16000, 9000])
    wav[1, 9000:] = 0.0
    return wav, lens


def conv_frames(samples):
    """Frames of the stacked CNN (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2), by hand."""
    for kernel, stride in [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2:
        samples = (samples - kernel) // stride + 1
    return samples


def ctc_and_projection():
    from espnet2.asr.ctc import CTC

    torch.manual_seed(1)
    return CTC(VOCAB, D), torch.nn.Linear(VOCAB, D)


@pytest.mark.parametrize("arch", ["wavlm", "hubert", "wav2vec2"])
def test_split_stack_reproduces_the_upstream(upstreams, arch):
    """Plain frontend(k) + encoder(k+1..L) = S3PRL's hidden states k and L (its own forward)."""
    wav, lens = batch()
    frontend = SSHRFrontend(upstream=upstreams[arch], layer=2).eval()
    encoder = SSHREncoder(D, upstream=upstreams[arch], language_frame_layer=2, language_frame=False).eval()
    reference = FrozenUpstream(load_upstream(upstreams[arch]["upstream"], upstreams[arch]["path_or_url"]))
    with torch.no_grad():
        mid, frames = frontend(wav, lens)
        out, out_lens, _ = encoder(mid, frames)
        states, _ = reference(wav, lens)
    assert frames.tolist() == [conv_frames(16000), conv_frames(9000)] == out_lens.tolist()
    for b, n in enumerate(frames.tolist()):
        torch.testing.assert_close(mid[b, :n], states[2][b, :n])
        torch.testing.assert_close(out[b, :n], states[N_LAYERS][b, :n])
    assert sorted(encoder.layers) == ["3", "4"] and len(frontend.layers) == 2


def test_language_frame_is_prepended_and_removed(upstreams):
    encoder = SSHREncoder(D, upstream=upstreams["wavlm"], language_frame_layer=2).eval()
    x = torch.randn(2, 6, D)
    lens = torch.tensor([6, 4])
    x[1, 4:] = 100.0  # padding must not enter the mean
    seen = {}
    encoder.layers["3"].register_forward_pre_hook(lambda m, args: seen.update(x=args[0].clone()))
    with torch.no_grad():
        out, out_lens, _ = encoder(x, lens)
    assert out.shape == (2, 6, D) and out_lens.tolist() == [6, 4]
    first = seen["x"]  # (T + 1, B, D): the language frame, then the frames
    assert first.shape == (7, 2, D)
    torch.testing.assert_close(first[0, 0], x[0].sum(0) / 6)
    torch.testing.assert_close(first[0, 1], x[1, :4].sum(0) / 4)
    torch.testing.assert_close(first[1:].transpose(0, 1), x)


def test_cross_ctc_query_is_projected_posteriors_and_key_value_the_layer_output(upstreams):
    encoder = SSHREncoder(D, upstream=upstreams["wavlm"], language_frame_layer=1, cross_ctc_layers=[2, 3],
                          cross_ctc_heads=2, cross_ctc_dropout=0.0).eval()
    assert encoder.interctc_use_conditioning and encoder.interctc_layer_idx == [2, 3]
    ctc, projection = ctc_and_projection()
    encoder.conditioning_layer = projection  # what ESPnetASRModel does for interctc_use_conditioning
    layer_out, attn_in = {}, {}
    encoder.layers["2"].register_forward_hook(lambda m, args, out: layer_out.update(h=out[0].transpose(0, 1)))
    encoder.cross_ctc["2"].attention.register_forward_pre_hook(
        lambda m, args, kwargs: attn_in.update(q=args[0], k=args[1], v=args[2], pad=kwargs["key_padding_mask"]),
        with_kwargs=True,
    )
    x = torch.randn(2, 5, D, requires_grad=True)
    lens = torch.tensor([5, 3])
    (out, intermediate), _, _ = encoder(x, lens, ctc=ctc)
    assert [j for j, _ in intermediate] == [2, 3] and all(h.shape == (2, 5, D) for _, h in intermediate)
    h = layer_out["h"]  # (B, T + 1, D) with the language frame
    normed = torch.nn.functional.layer_norm(h, (D,), encoder.final_norm.weight, encoder.final_norm.bias)
    posteriors = torch.softmax(normed[:, 1:] @ ctc.ctc_lo.weight.T + ctc.ctc_lo.bias, dim=-1)
    torch.testing.assert_close(intermediate[0][1], normed[:, 1:])
    torch.testing.assert_close(attn_in["q"], posteriors @ projection.weight.T + projection.bias)
    assert attn_in["q"].shape == (2, 5, D) and attn_in["k"].shape == (2, 6, D)
    torch.testing.assert_close(attn_in["k"], normed)
    assert attn_in["v"] is attn_in["k"]
    assert attn_in["pad"].tolist() == [[False] * 6, [False] * 4 + [True] * 2]
    # the main output alone trains the intermediate heads (through the cross-attention)
    out.pow(2).sum().backward()
    for name, param in [("ctc", ctc.ctc_lo.weight), ("projection", projection.weight),
                        ("cross-attention", encoder.cross_ctc["2"].attention.in_proj_weight)]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    with pytest.raises(RuntimeError, match="needs the model's ctc"):
        encoder(x, lens)


def test_dropped_layers_leave_the_state_and_replaced_ones_are_fresh(upstreams):
    encoder = SSHREncoder(D, upstream=upstreams["wavlm"], language_frame_layer=1, drop_layers=[4], replace_layers=[3])
    upstream = weights_of(torch.load(upstreams["wavlm"]["path_or_url"], weights_only=True))
    state = encoder.state_dict()
    assert not any(k.startswith("layers.4.") for k in state) and sorted(encoder.layers) == ["2", "3"]
    torch.testing.assert_close(state["layers.2.fc1.weight"], upstream["encoder.layers.1.fc1.weight"])
    assert not torch.allclose(state["layers.3.fc1.weight"], upstream["encoder.layers.2.fc1.weight"])
    assert abs(state["layers.3.fc1.weight"].std().item() - 0.02) < 0.004  # N(0, 0.02)
    with pytest.raises(ValueError, match=r"drop_layers=\[1\]: layers must be in 2..4"):
        SSHREncoder(D, upstream=upstreams["wavlm"], language_frame_layer=1, drop_layers=[1])
    with pytest.raises(ValueError, match="4 is the last layer"):
        SSHREncoder(D, upstream=upstreams["wavlm"], language_frame_layer=1, cross_ctc_layers=[4])
    with pytest.raises(ValueError, match="also dropped"):
        SSHREncoder(D, upstream=upstreams["wavlm"], language_frame_layer=1, drop_layers=[3, 4], cross_ctc_layers=[3])


@pytest.mark.parametrize("arch", ["wavlm", "hubert"])
def test_padded_batch_equals_alone(upstreams, arch):
    frontend = SSHRFrontend(upstream=upstreams[arch], layer=1).eval()
    encoder = SSHREncoder(D, upstream=upstreams[arch], language_frame_layer=1, replace_layers=[4],
                          cross_ctc_layers=[2]).eval()
    ctc, projection = ctc_and_projection()
    encoder.conditioning_layer = projection
    wav, lens = batch()
    with torch.no_grad():
        (out, inter), out_lens, _ = encoder(*frontend(wav, lens), ctc=ctc)
        (alone, inter_alone), _, _ = encoder(*frontend(wav[1:, :9000], lens[1:]), ctc=ctc)
    n = int(out_lens[1])
    assert alone.shape[1] == n
    torch.testing.assert_close(out[1, :n], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(inter[0][1][1, :n], inter_alone[0][1][0], atol=1e-5, rtol=1e-4)


def test_espnet_training_step_and_reload(upstreams, mini_data, tmp_path, caplog):
    """ESPnet builds the model from YAML (plugin registered), takes the Cross-CTC losses
    into its interctc loss, saves, and reloads the trained weights for inference."""
    import soundfile
    from espnet2.tasks.asr import ASRTask

    from espnet_delta.asr.register import register
    from espnet_training import train_tiny

    up = upstreams["wavlm"]
    config = {
        "frontend": "sshr", "frontend_conf": {"upstream": up, "layer": 1, "freeze_feature_extractor": False},
        "specaug": None, "normalize": None,
        "encoder": "sshr", "encoder_conf": {"upstream": up, "language_frame_layer": 1, "replace_layers": [4],
                                            "cross_ctc_layers": [2], "cross_ctc_heads": 2},
        "decoder": "none", "model": "espnet_ctc_wer", "model_conf": {"ctc_weight": 1.0, "interctc_weight": 0.3},
        "optim": "adam", "optim_conf": {"lr": 0.001}, "max_epoch": 1, "num_iters_per_epoch": 2,
        "batch_type": "sorted", "batch_size": 2, "num_workers": 0,
        "best_model_criterion": [["valid", "loss", "min"]],
    }
    caplog.set_level("INFO")
    exp = train_tiny(config, mini_data, tmp_path)
    assert "loss_interctc_layer2=" in caplog.text  # the epoch summary of ESPnet's reporter
    register()
    model_file = exp / "valid.loss.best.pth"
    model, _ = ASRTask.build_model_from_file(str(exp / "config.yaml"), str(model_file), "cpu")
    model.eval()
    saved = torch.load(model_file, weights_only=True)
    assert "encoder.conditioning_layer.weight" in saved and "encoder.cross_ctc.2.attention.in_proj_weight" in saved
    initial = weights_of(torch.load(up["path_or_url"], weights_only=True))
    assert not torch.allclose(saved["frontend.layers.0.fc1.weight"], initial["encoder.layers.0.fc1.weight"])  # fine-tuned
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    path = (mini_data / "test" / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)[1]
    speech = torch.from_numpy(soundfile.read(path, dtype="float32")[0])[None]
    with torch.no_grad():
        (enc, inter), enc_lens = model.encode(speech, torch.tensor([speech.size(1)]))
    assert enc.shape == (1, conv_frames(speech.size(1)), D) and int(enc_lens[0]) == enc.size(1)
    assert [j for j, _ in inter] == [2]


@pytest.mark.parametrize("build", [
    lambda: SSHREncoder(input_size="32", upstream={"upstream": "wavlm_local"}),
    lambda: SSHREncoder(32, upstream={"upstream": "wavlm_local"}, drop_layers=4),  # a list, not an int
    lambda: SSHREncoder(32, upstream={"upstream": "wavlm_local"}, cross_ctc_layers=["4"]),
    lambda: SSHRFrontend(upstream={"upstream": "wavlm_local"}, layer="2"),
    lambda: SSHRFrontend(upstream={"upstream": "wavlm_local"}, freeze_feature_extractor="yes"),
])
def test_wrong_types_are_refused_before_any_upstream_is_built(build):
    from typeguard import TypeCheckError

    with pytest.raises(TypeCheckError):
        build()


# ---- recipe glue: systems -> ESPnet configs, per-language error rates
# test_sshr_jobs_write_k_once_...: tests/unit/recipe/test_families.py (the job planner's SSHR family)


def test_sshr_results_per_language_and_average(tmp_path):
    from espnet_delta.recipe.sshr_results import format_tables
    from espnet_delta.scoring import score

    data = tmp_path / "data" / "test"
    data.mkdir(parents=True)
    (data / "text").write_text("de1-0 ab cd\nen1-0 xy\n")
    (data / "text.phn").write_text("de1-0 a b c\nen1-0 x y\n")
    (data / "utt2lang").write_text("de1-0 de\nen1-0 en\n")
    job = tmp_path / "exp" / "sshr_full_char"
    (job / "decode" / "test").mkdir(parents=True)
    (job / "config.yaml").write_text(yaml.safe_dump({"encoder_conf": {"language_frame_layer": 2, "language_frame": True}}))
    (job / "decode" / "test" / "text").write_text("de1-0 ab cd\nen1-0 xz\n")
    score(data / "text", job / "decode" / "test" / "text", job / "decode" / "test" / "score_wer", use_sctk=False)
    table = format_tables([job], tmp_path / "data", ["test"])
    # de: A B <space> C D all right -> 0 %; en: X Y vs X Z -> 1 of 2 characters -> 50 %;
    # avg of languages 25 %, pooled 1 error / 7 characters = 14.3 %
    assert "|full|k=2, LF|0.0|50.0|**25.0**|14.3|" in table and "|system|options|de|en|avg|all|" in table


@pytest.mark.parametrize("arch", ["wavlm", "hubert"])
def test_training_steps_keep_no_tensors_alive(upstreams, arch):
    """A training step leaves nothing behind: S3PRL's layer hooks once kept every layer's
    output (and its autograd graph) of every step, growing a multilingual training to 3.6 GB."""
    import gc

    frontend = SSHRFrontend(upstream=upstreams[arch], layer=2).train()
    encoder = SSHREncoder(D, upstream=upstreams[arch], language_frame_layer=2).train()
    wav, lens = batch()

    def step():
        feats, frames = frontend(wav, lens)
        out, _, _ = encoder(feats, frames)
        out.sum().backward()

    def live_tensors():
        gc.collect()
        return sum(1 for o in gc.get_objects() if torch.is_tensor(o))

    step()
    before = live_tensors()
    for _ in range(3):
        step()
    assert live_tensors() == before
