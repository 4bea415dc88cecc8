"""The ESPnet Whisper path: encoder/decoder from a local checkpoint or a hub name (one-line
offline error), registration, config rendering, the merge base, and beam-search decoding of a
tiny Whisper ESPnet model (as trained, and a hand-averaged "merged" state) to scored text."""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet_delta.whisper.load import WhisperLoadError, load_whisper
from espnet_delta.whisper.tiny import TinyWhisperConfig, make_tiny_whisper

TINY = TinyWhisperConfig(n_audio_state=32, n_audio_head=2, n_audio_layer=1, n_text_state=32, n_text_head=2, n_text_layer=1)
CHARS = ["<blank>", "<unk>", "<space>", "A", "B", "C", "<sos/eos>"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny.pt", seed=0, config=TINY)


@pytest.fixture(scope="module")
def checkpoint_state(checkpoint):
    return torch.load(checkpoint, weights_only=True)["model_state_dict"]


def test_tiny_checkpoint_is_finite_and_reproducible(tmp_path, checkpoint, checkpoint_state) -> None:
    """openai-whisper leaves the decoder's positional embedding uninitialised (torch.empty)."""
    pos = checkpoint_state["decoder.positional_embedding"]
    assert torch.isfinite(pos).all() and float(pos.abs().max()) < 1.0
    again = torch.load(make_tiny_whisper(tmp_path / "again.pt", seed=0, config=TINY), weights_only=True)
    assert all(torch.equal(v, again["model_state_dict"][k]) for k, v in checkpoint_state.items())


def test_encoder_from_checkpoint_file(checkpoint, checkpoint_state) -> None:
    from espnet_delta.asr.encoder.whisper_file import WhisperFileEncoder

    enc = WhisperFileEncoder(whisper_model=str(checkpoint))
    assert enc.output_size() == 32
    assert torch.equal(enc.encoders.blocks[0].attn.query.weight, checkpoint_state["encoder.blocks.0.attn.query.weight"])
    assert "encoders.blocks.0.attn.key.weight" in enc.state_dict()
    enc.eval()
    with torch.no_grad():
        out, olens, _ = enc(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 8000]))
    # 16000 samples / hop 160 = 100 mel frames (the STFT's last frame dropped); conv2 (kernel 3,
    # padding 1, stride 2): 1 + (100 - 3 + 2) // 2 = 50 frames; 8000 samples: 1 + (50 - 1) // 2 = 25
    assert out.shape == (2, 50, 32)
    assert olens.tolist() == [50, 25]


def test_decoder_from_checkpoint_file(checkpoint, checkpoint_state) -> None:
    from espnet_delta.asr.decoder.whisper_file import WhisperFileDecoder

    dec = WhisperFileDecoder(vocab_size=len(CHARS), encoder_output_size=32, whisper_model=str(checkpoint))
    assert tuple(dec.decoders.token_embedding.weight.shape) == (len(CHARS), 32)  # re-initialised for 7 tokens
    for name in ("attn.query.weight", "cross_attn.value.weight"):
        assert torch.equal(dict(dec.decoders.blocks[0].named_parameters())[name], checkpoint_state[f"decoder.blocks.0.{name}"])
    same_vocab = WhisperFileDecoder(vocab_size=51865, encoder_output_size=32, whisper_model=str(checkpoint))
    assert torch.equal(same_vocab.decoders.token_embedding.weight, checkpoint_state["decoder.token_embedding.weight"])
    logp, _ = dec.score(torch.tensor([6, 3]), None, torch.randn(10, 32))
    assert logp.shape == (len(CHARS),) and torch.allclose(logp.exp().sum(), torch.tensor(1.0), atol=1e-5)
    with pytest.raises(ValueError, match="448 text positions"):
        dec(torch.randn(1, 10, 32), torch.tensor([10]), torch.zeros(1, 449, dtype=torch.long), torch.tensor([449]))
    with pytest.raises(ValueError, match="width 32"):
        WhisperFileDecoder(vocab_size=7, encoder_output_size=64, whisper_model=str(checkpoint))


def test_registered_without_replacing_espnet() -> None:
    from espnet2.asr.encoder.whisper_encoder import OpenAIWhisperEncoder
    from espnet2.tasks.asr import decoder_choices, encoder_choices

    from espnet_delta.asr.register import register
    from espnet_delta.asr.decoder.whisper_file import WhisperFileDecoder
    from espnet_delta.asr.encoder.whisper_file import WhisperFileEncoder

    register()
    register()  # idempotent
    assert encoder_choices.get_class("whisper_file") is WhisperFileEncoder
    assert decoder_choices.get_class("whisper_file") is WhisperFileDecoder
    assert encoder_choices.get_class("whisper") is OpenAIWhisperEncoder


def test_hub_name_offline_is_one_clear_line(tmp_path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    from espnet_delta.asr.encoder.whisper_file import WhisperFileEncoder

    with pytest.raises(WhisperLoadError) as err:
        WhisperFileEncoder(whisper_model="small", download_dir=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert "'small'" in message and str(tmp_path) in message and "small.pt" in message
    assert "name resolution" in message and "local checkpoint file" in message


def test_bad_names_and_files_are_one_line(tmp_path) -> None:
    with pytest.raises(WhisperLoadError, match=r"'smal': no such checkpoint file and not a Whisper model name \(names: .*small"):
        load_whisper("smal")
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(WhisperLoadError, match="junk.pt: not a Whisper checkpoint") as err:
        load_whisper(str(junk))
    assert "\n" not in str(err.value)


def render(tmp_path: Path, checkpoint: Path, train_set: str = "train") -> dict:
    """A complete ESPnet config (what the trainer saves as config.yaml) of a tiny Whisper model."""
    from espnet_delta.asr.register import register

    register()
    from espnet2.tasks.asr import ASRTask

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(t + "\n" for t in CHARS))
    base = {
        "input_size": 1, "frontend": None, "normalize": None, "specaug": None,
        "encoder": "whisper_file", "encoder_conf": {"whisper_model": str(checkpoint)},
        "decoder": "whisper_file", "decoder_conf": {"whisper_model": str(checkpoint)},
        "model_conf": {"ctc_weight": 0.3}, "token_type": "char", "token_list": str(tokens),
        "train_data_path_and_name_and_type": [[f"data/{train_set}/wav.scp", "speech", "sound"]],
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    args = ASRTask.get_parser().parse_args(["--config", str(tmp_path / "base.yaml"), "--output_dir", str(tmp_path)])
    return vars(args)


def test_initial_state_reproduces_the_build(tmp_path, checkpoint, checkpoint_state) -> None:
    from espnet_delta.bin.init_state import initial_state_dict

    child, adult = tmp_path / "child", tmp_path / "adult"
    for d, data in ((child, "train"), (adult, "libri_train")):
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump(render(d, checkpoint, data)))
    a, b = initial_state_dict(child / "config.yaml"), initial_state_dict(adult / "config.yaml")
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)  # random token embedding and CTC head included
    assert a["decoder.decoders.token_embedding.weight"].shape == (len(CHARS), 32)
    assert torch.equal(a["encoder.encoders.blocks.0.attn.value.weight"], checkpoint_state["encoder.blocks.0.attn.value.weight"])
    assert torch.equal(a["decoder.decoders.blocks.0.cross_attn.query.weight"], checkpoint_state["decoder.blocks.0.cross_attn.query.weight"])


def write_job(job: Path, config: dict, state: dict) -> None:
    job.mkdir(parents=True)
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(state, job / "valid.acc.best.pth")


def test_beam_decode_trained_and_merged_state(tmp_path, checkpoint) -> None:
    from espnet2.tasks.asr import ASRTask

    from espnet_delta.bin import beam_decode

    config = render(tmp_path, checkpoint)
    torch.manual_seed(1)
    m1 = ASRTask.build_model(argparse.Namespace(**config)).state_dict()
    torch.manual_seed(2)
    m2 = ASRTask.build_model(argparse.Namespace(**config)).state_dict()
    merged = {k: 0.5 * m1[k] + 0.5 * m2[k] if m1[k].is_floating_point() else m1[k] for k in m1}
    write_job(tmp_path / "exp" / "ft_whisper", config, m1)
    write_job(tmp_path / "exp" / "merge_whisper_lerp", config, merged)

    data = tmp_path / "data" / "dev"
    data.mkdir(parents=True)
    rate, t = 16000, np.arange(8000) / 16000
    for i, utt in enumerate(("u1", "u2")):
        soundfile.write(data / f"{utt}.wav", (0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)).astype(np.float32), rate)
    (data / "wav.scp").write_text("".join(f"{u} {data / u}.wav\n" for u in ("u1", "u2")))
    (data / "text").write_text("u1 AB C\nu2 CAB\n")
    (tmp_path / "decode.yaml").write_text("beam_size: 3\nctc_weight: 0.0\nmaxlenratio: 0.0\n")

    jobs = [str(tmp_path / "exp" / "ft_whisper"), str(tmp_path / "exp" / "merge_whisper_lerp")]
    beam_decode.main(jobs + ["--decode_config", str(tmp_path / "decode.yaml"), "--test", f"dev={data / 'wav.scp'}",
                             "--ref_dir", str(tmp_path / "data"), "--no_sctk", "true"])
    for job in jobs:
        lines = (Path(job) / "decode" / "dev" / "text").read_text().splitlines()
        assert [line.split(" ", 1)[0] for line in lines] == ["u1", "u2"]
        for line in lines:  # hypotheses are strings over the token list's characters
            assert set(line.partition(" ")[2]) <= {"A", "B", "C", " "}
        score = yaml.safe_load((Path(job) / "decode" / "dev" / "score_wer" / "score.json").read_text())
        assert score  # the scored dir that RESULTS.md collects


def test_decode_config_refuses_unknown_options(tmp_path) -> None:
    from espnet_delta.asr.decoding import read_decode_config

    conf = tmp_path / "decode.yaml"
    conf.write_text("beam_size: 4\nbeam_sise: 5\n")
    with pytest.raises(ValueError, match=r"decode.yaml: unknown beam-search options \['beam_sise'\]"):
        read_decode_config(conf)
    conf.write_text("beam_size: 4\nctc_weight: 0.3\n")
    assert read_decode_config(conf) == {"beam_size": 4, "ctc_weight": 0.3}


# Whisper job rendering (child/adult, config check): tests/unit/recipe/test_families.py
