"""SSHR's paper configs build and train (arXiv 2309.16937, seed 004; issues 22 and 23).

Every system of ``conf/tuning/sshr_systems_paper.yaml``, rendered by the job planner onto the
paper base config, is built by ESPnet with a NARROW model of the paper topology (a wav2vec2
of 24 pre-LN layers with a layer-norm CNN, as MMS 300M and XLS-R 300M are, 32 wide instead of
1024) and takes one optimizer step; the full system also takes one through ESPnet's trainer.
The expected layers are seed 004's critical path, written here by hand: language frame
pooled from layer 8, Cross-CTC at layers 18, 20 and 22, then the final CTC (after layer 24,
the last of the 24 layers, which the project's reading re-initialises rather than drops).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from espnet_delta.ssl.tiny import TinyConfig, make_tiny_upstream, weights_of

REPO = Path(__file__).resolve().parents[3]
CONF = REPO / "egs2/mini_multilingual/asr1/conf/tuning"
PAPER_CONFIG = CONF / "sshr_mms300m.yaml"        # the default: MMS 300M, as seed 004 fine-tunes
XLSR_CONFIG = CONF / "sshr_xlsr300m.yaml"        # the named alternative
SYSTEMS = CONF / "sshr_systems_paper.yaml"
UPSTREAMS = CONF / "upstreams_sshr.yaml"

#: MMS 300M / XLS-R 300M: 24 transformer layers (seed 004's layer numbers go up to 22 of them)
DEPTH = 24
NARROW = TinyConfig(num_layers=DEPTH, embed_dim=32, ffn_dim=64, num_heads=16, conv_channels=16, conv_pos=16,
                    conv_pos_groups=16)
UPPER = list(range(9, DEPTH + 1))
#: seed 004's ablation, by hand: (language frame, layers above k = 8 that run, re-initialised
#: layers, Cross-CTC layers, interctc weight)
EXPECTED = {
    "baseline": (False, UPPER, [], [], 0.0),
    "lf": (True, UPPER, [], [], 0.0),
    "drop": (False, list(range(9, 23)), [], [], 0.0),
    "replace": (False, UPPER, [23, 24], [], 0.0),
    "xctc": (False, UPPER, [], [18, 20, 22], 0.3),
    "sshr": (True, UPPER, [23, 24], [18, 20, 22], 0.3),
}
LF_LAYER = 8
VOCAB = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Narrow models gain nothing from intra-op threads; on the busy 2-core build machine this
    file took 60 s with two threads per op and 21 s with one (measured 2026-12-06)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """A narrow wav2vec2 of the paper's depth, as an S3PRL ``wav2vec2_local`` checkpoint: the
    variant of XLS-R 300M and MMS 300M (pre-LayerNorm layers, a layer-norm CNN with biases)."""
    path = make_tiny_upstream("wav2vec2", tmp_path_factory.mktemp("narrow") / "w2v2_24.pt", seed=5, config=NARROW)
    cfg = torch.load(path, weights_only=True)["model_cfg"]
    assert (cfg["layer_norm_first"], cfg["extractor_mode"], cfg["conv_bias"], cfg["encoder_layers"]) == (
        True, "layer_norm", True, DEPTH)
    return {"upstream": "wav2vec2_local", "path_or_url": str(path)}


def load(path: Path):
    return yaml.safe_load(path.read_text())


def render(narrow, tmp_path: Path, config: Path = PAPER_CONFIG):
    """system -> train.yaml of the planner's SSHR family, every upstream entry of the paper's
    table pointing at the narrow checkpoint (what a model map does for an offline cluster)."""
    from espnet_delta.recipe import plan

    table = {name: dict(narrow) for name in load(UPSTREAMS)}
    (tmp_path / "upstreams.yaml").write_text(yaml.safe_dump(table))
    args = ["sshr", "--sshr_systems", str(SYSTEMS), "--sshr_config", str(config), "--sshr_units", "char",
            "--upstream_conf", str(tmp_path / "upstreams.yaml"), "--upstreams", next(iter(table)),
            "--data_dir", "data", "--shape_dir", str(tmp_path / "shapes"), "--token_list", "tokens.txt",
            "--phone_token_list", "phn.txt", "--exp_dir", str(tmp_path / "exp")]
    plan.run(plan.get_parser().parse_args(args))
    return {name: load(tmp_path / "exp" / f"sshr_{name}_char" / "train.yaml") for name in load(SYSTEMS)}


def build(config: dict, tmp_path: Path):
    """ESPnet's model from an ASR config (the plugin registered), as its trainer builds it."""
    from espnet2.tasks.asr import ASRTask

    from espnet_delta.asr.register import register

    register()
    (tmp_path / "tokens.txt").write_text("\n".join(VOCAB) + "\n")
    (tmp_path / "build.yaml").write_text(yaml.safe_dump(config))
    args = ASRTask.get_parser().parse_args(["--config", str(tmp_path / "build.yaml"), "--output_dir", str(tmp_path),
                                            "--token_type", "char", "--token_list", str(tmp_path / "tokens.txt")])
    return ASRTask.build_model(args)


def test_the_paper_configs_name_seed_004s_model_and_path():
    """The default base config fine-tunes MMS 300M; the XLS-R 300M config differs only in the
    upstream; the standalone base config is the full system of the systems file."""
    mms, xlsr = load(PAPER_CONFIG), load(XLSR_CONFIG)
    upstream = mms["frontend_conf"]["upstream"]
    assert upstream == mms["encoder_conf"]["upstream"] and upstream["upstream"] == "wav2vec2_local"
    assert Path(upstream["path_or_url"]).name == "mms_300m.pt"
    assert load(UPSTREAMS)["mms_300m"] == upstream and next(iter(load(UPSTREAMS))) == "mms_300m"
    assert load(UPSTREAMS)["xls_r_300m"] == {"upstream": "xls_r_300m"} == xlsr["frontend_conf"]["upstream"]

    def without_upstream(config):
        config = copy.deepcopy(config)
        for key in ("frontend_conf", "encoder_conf"):
            config[key].pop("upstream")
        return config

    assert without_upstream(mms) == without_upstream(xlsr)
    lf, kept, replaced, cross, weight = EXPECTED["sshr"]
    enc = mms["encoder_conf"]
    assert mms["frontend_conf"]["layer"] == enc["language_frame_layer"] == LF_LAYER
    assert (enc["language_frame"], enc["replace_layers"], enc["cross_ctc_layers"]) == (lf, replaced, cross)
    assert not enc["drop_layers"] and mms["model_conf"]["interctc_weight"] == weight
    assert set(load(SYSTEMS)) == set(EXPECTED)


def test_every_paper_system_builds_with_seed_004s_layers_and_steps(narrow, tmp_path):
    """Each system builds (ESPnet's model, narrow paper topology), runs its layers in seed 004's
    order (frontend 1..8, then 9..24 with a Cross-CTC after 18, 20 and 22, then the final CTC)
    and takes one Adam step that changes the weights."""
    upstream = weights_of(torch.load(narrow["path_or_url"], weights_only=True))
    # 8000 samples through kernels/strides (10,5), (3,2) x 4, (2,2) x 2: 1599, 799, 399, 199, 99, 49, 24 frames
    gen = torch.Generator().manual_seed(0)
    speech = torch.randn(2, 8000, generator=gen)
    lengths = torch.tensor([8000, 6000])
    text = torch.tensor([[2, 3, 4], [4, 2, -1]])
    text_lengths = torch.tensor([3, 2])
    for name, config in render(narrow, tmp_path).items():
        lf, kept, replaced, cross, weight = EXPECTED[name]
        assert config["frontend_conf"]["layer"] == config["encoder_conf"]["language_frame_layer"] == LF_LAYER, name
        assert config["model_conf"]["interctc_weight"] == weight, name
        model = build(config, tmp_path)
        frontend, encoder = model.frontend, model.encoder
        assert len(frontend.layers) == LF_LAYER, name  # layers 1..8, pre-trained
        torch.testing.assert_close(frontend.layers[LF_LAYER - 1].fc1.weight, upstream["encoder.layers.7.fc1.weight"])
        assert [int(i) for i in encoder.layers] == kept and encoder.language_frame == lf, name
        assert encoder.interctc_layer_idx == cross and sorted(int(j) for j in encoder.cross_ctc) == cross, name
        for i in kept:
            fresh = not torch.equal(encoder.layers[str(i)].fc1.weight, upstream[f"encoder.layers.{i - 1}.fc1.weight"])
            assert fresh == (i in replaced), (name, i)

        events = []
        for i, layer in encoder.layers.items():
            layer.register_forward_hook(lambda m, a, out, i=i: events.append((f"L{i}", out[0].size(0))))
        for j, module in encoder.cross_ctc.items():
            module.register_forward_hook(lambda m, a, out, j=j: events.append((f"X{j}", None)))
        model.ctc.ctc_lo.register_forward_hook(lambda m, a, out: events.append(("ctc", None)))
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        before = encoder.layers[str(kept[-1])].fc1.weight.detach().clone()
        loss, stats, _ = model(speech, lengths, text, text_lengths)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss), name
        assert not torch.equal(before, encoder.layers[str(kept[-1])].fc1.weight), name

        frames = 24 + (1 if lf else 0)  # 8000 samples -> 24 frames of the CNN (by hand above), + the language frame
        expected = []
        for i in kept:
            expected.append((f"L{i}", frames))
            if i in cross:
                expected += [("ctc", None), (f"X{i}", None)]  # posteriors of layer i, then the cross-attention
        expected += [("ctc", None)] * (1 + len(cross))  # the final CTC, then ESPnet's interctc losses
        assert events == expected, name
        assert [k for k in stats if k.startswith("loss_interctc_layer")] == [f"loss_interctc_layer{j}" for j in cross]


def test_the_full_paper_system_trains_a_step_through_espnets_trainer(narrow, mini_data, tmp_path, caplog):
    """The full system (``sshr``) through ESPnet's own trainer: one optimizer step, one
    validation, Cross-CTC losses at 18, 20 and 22 in the trainer's report."""
    from espnet_training import train_tiny

    config = render(narrow, tmp_path)["sshr"]
    for key in ("token_type", "token_list", "use_preprocessor", "train_data_path_and_name_and_type",
                "valid_data_path_and_name_and_type", "train_shape_file", "valid_shape_file"):
        config.pop(key)  # the test corpus's, from train_tiny
    config.update(batch_type="sorted", batch_size=2, accum_grad=1, max_epoch=1, num_iters_per_epoch=1, num_workers=0,
                  best_model_criterion=[["valid", "loss", "min"]])
    caplog.set_level("INFO")
    exp = train_tiny(config, mini_data, tmp_path)
    assert all(f"loss_interctc_layer{j}=" in caplog.text for j in (18, 20, 22))  # the trainer's epoch summary
    saved = torch.load(exp / "valid.loss.best.pth", weights_only=True)
    assert sorted({int(k.split(".")[2]) for k in saved if k.startswith("encoder.cross_ctc.")}) == [18, 20, 22]
    assert sorted({int(k.split(".")[2]) for k in saved if k.startswith("encoder.layers.")}) == UPPER
