"""Paper-topology checkpoints: full sizes against the published parameter counts (nothing allocated),
the narrow variants through the project's real loaders via the written model map, idempotent reruns."""

from __future__ import annotations

import pytest
import torch

from espnet_delta.bin import make_paper_checkpoints
from espnet_delta.ssl import paper_topology as ssl_topology
from espnet_delta.ssl.hub import MODEL_MAP_ENV, read_model_map
from espnet_delta.ssl.tiny import weights_of
from espnet_delta.whisper import paper_topology as whisper_topology

M = 1e6
# name -> (published parameters, relative tolerance, source). Our counts are of the released
# checkpoint's modules; the published ones may count a pre-training head the release lacks.
PUBLISHED = {
    # WavLM (arXiv 2110.13900), model sizes: Base / Base+ 94.70M, Large 316.62M. The count includes
    # the HuBERT-style head (final_proj + label embeddings, 1.17M for Large) the released files lack.
    "wavlm_large": (316.62 * M, 0.01, "WavLM paper"),
    "wavlm_base": (94.70 * M, 0.01, "WavLM paper"),
    "wavlm_base_plus": (94.70 * M, 0.01, "WavLM paper"),
    # HuBERT (arXiv 2106.07447), Table I: BASE 95M, LARGE 317M
    "hubert_large_ll60k": (317 * M, 0.01, "HuBERT paper"),
    "hubert": (95 * M, 0.01, "HuBERT paper"),
    # wav2vec 2.0 (arXiv 2006.11477), section 4.2: LARGE has 317M parameters; XLSR-53 (arXiv 2006.13979)
    # is that architecture
    "wav2vec2_large_ll60k": (317 * M, 0.01, "wav2vec 2.0 paper"),
    "xlsr_53": (317 * M, 0.01, "wav2vec 2.0 paper (LARGE)"),
    # XLS-R (arXiv 2111.09296) "0.3B" and MMS (fairseq examples/mms/MODEL_CARD.md) "300M": size classes
    # named to one significant digit, i.e. within [0.25B, 0.35B)
    "xls_r_300m": (300 * M, 0.1667, "XLS-R paper, 0.3B"),
    "mms_300m": (300 * M, 0.1667, "MMS model card, 300M"),
    # Whisper (arXiv 2212.04356), Table 1: small 244M, large 1550M
    "small": (244 * M, 0.02, "Whisper paper"),
    "large-v2": (1550 * M, 0.02, "Whisper paper"),
}
# (layers, width, heads): Base 12 x 768, Large 24 x 1024 x 16 (wav2vec 2.0 section 4.2, HuBERT Table I).
# The papers give BASE 8 heads; the released Base checkpoints have 12 (fairseq's default
# encoder_attention_heads, torchaudio's wav2vec2_base / hubert_base / wavlm_base): the files win.
BASE, LARGE = (12, 768, 12), (24, 1024, 16)
SHAPES = {"wavlm_large": LARGE, "hubert_large_ll60k": LARGE, "wav2vec2_large_ll60k": LARGE, "xls_r_300m": LARGE,
          "mms_300m": LARGE, "xlsr_53": LARGE, "hubert": BASE, "wavlm_base": BASE, "wavlm_base_plus": BASE}


def test_every_model_of_the_tables_has_a_published_count():
    assert set(PUBLISHED) == set(make_paper_checkpoints.all_names())


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_full_size_parameter_count_matches_the_published_one(name):
    published, tolerance, source = PUBLISHED[name]
    if name in whisper_topology.TOPOLOGIES:
        count = whisper_topology.parameter_count(whisper_topology.topology(name))
    else:
        top = ssl_topology.topology(name)
        assert (top.layers, top.width, top.heads) == SHAPES[name]
        count = top.parameter_count()
    assert abs(count - published) / published < tolerance, f"{name}: {count / M:.2f}M vs {published / M}M ({source})"


def test_one_second_is_49_frames_and_the_file_names_are_s3prls():
    # the real CNN: 400 samples of receptive field, hop 320: floor((16000 - 400) / 320) + 1 = 49
    assert ssl_topology.frames(16000, ssl_topology.topology("wavlm_large", "narrow")) == 49
    from espnet_delta.ssl.hub import s3prl_hub_url

    for name, top in ssl_topology.TOPOLOGIES.items():  # the file each S3PRL hub function downloads
        assert top.url_file is None if name == "mms_300m" else s3prl_hub_url(name).endswith("/" + top.url_file)


@pytest.fixture(scope="module")
def narrow_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper_narrow")
    make_paper_checkpoints.main(["--out_dir", str(out), "--width", "narrow"])
    return out


@pytest.fixture
def mapped(narrow_dir, monkeypatch):
    monkeypatch.setenv(MODEL_MAP_ENV, str(narrow_dir / "model_map.yaml"))
    return narrow_dir


def test_the_model_map_names_every_file_relative_to_itself(narrow_dir):
    entries = read_model_map(narrow_dir / "model_map.yaml")
    assert entries == {n: narrow_dir / f"{n}.pt" for n in make_paper_checkpoints.all_names()}
    assert "/" not in (narrow_dir / "model_map.yaml").read_text()  # relative paths: the folder can move


@pytest.mark.parametrize("name", list(ssl_topology.TOPOLOGIES))
def test_narrow_files_hold_the_arithmetic_count_and_the_real_depth(narrow_dir, name):
    checkpoint = torch.load(narrow_dir / f"{name}.pt", weights_only=True)
    top = ssl_topology.topology(name, "narrow")
    weights = weights_of(checkpoint)
    assert sum(v.numel() for v in weights.values()) == top.parameter_count()
    layers = {int(k.split(".")[2]) for k in weights if k.startswith("encoder.layers.")}
    assert len(layers) == SHAPES[name][0]  # the full model's depth
    assert weights["encoder.layers.0.fc1.weight"].shape == (128, 64)  # narrow: 64 wide, FFN 128


# One of each distinct topology through S3PRL (the other wav2vec2 Large-style entries hold the same config).
LOADED = ["wavlm_large", "hubert_large_ll60k", "wav2vec2_large_ll60k", "hubert", "wavlm_base"]


@pytest.mark.parametrize("name", LOADED)
def test_narrow_ssl_models_load_by_hub_name_through_the_model_map(mapped, name):
    from espnet_delta.ssl.upstream import FrozenUpstream, build_s3prl_upstream

    upstream = FrozenUpstream(build_s3prl_upstream(name))
    states, frames = upstream(torch.randn(1, 16000), torch.tensor([16000]))
    assert len(states) == SHAPES[name][0] + 1  # the CNN output + one per layer: 25 (Large) / 13 (Base)
    # 400-sample receptive field, hop 320: floor((16000 - 400) / 320) + 1 = 49 frames in 1 s
    assert frames.tolist() == [49]
    assert states[-1].shape[-1] == 64


def test_wav2vec2_large_style_entries_share_one_topology_and_file_format(narrow_dir):
    # xls_r_300m, xlsr_53 and mms_300m (read with wav2vec2_local, as upstreams_sshr.yaml names it) load
    # exactly as wav2vec2_large_ll60k does above: the same container and the same model config
    files = [torch.load(narrow_dir / f"{n}.pt", weights_only=True)
             for n in ("wav2vec2_large_ll60k", "xls_r_300m", "xlsr_53", "mms_300m")]
    assert all(set(f) == {"task_cfg", "model_cfg", "model_weight"} for f in files)
    assert all(f["model_cfg"] == files[0]["model_cfg"] and f["task_cfg"] == files[0]["task_cfg"] for f in files)
    assert files[0]["model_cfg"]["encoder_layers"] == 24 and files[0]["task_cfg"]["normalize"] is True


@pytest.mark.parametrize("name,layers,heads", [("small", 12, 12), ("large-v2", 32, 20)])
def test_narrow_whisper_loads_by_name_through_the_model_map(mapped, name, layers, heads):
    from espnet_delta.whisper.load import load_whisper

    model = load_whisper(name)
    dims = model.dims
    assert (dims.n_audio_layer, dims.n_text_layer) == (layers, layers)
    assert (dims.n_audio_head, dims.n_text_head) == (heads, heads)
    assert (dims.n_vocab, dims.n_mels, dims.n_audio_ctx, dims.n_text_ctx) == (51865, 80, 1500, 448)
    assert dims.n_audio_state == 4 * heads  # narrow: 4 dimensions per head
    file = torch.load(mapped / f"{name}.pt", weights_only=True)["model_state_dict"]
    assert {v.dtype for v in file.values()} == {torch.float16}  # as the released files
    # the file holds the parameters plus the encoder's sinusoidal positions (1500 x width)
    n = sum(v.numel() for v in file.values())
    assert n == whisper_topology.parameter_count(whisper_topology.topology(name, "narrow")) + 1500 * 4 * heads
    if name == "small":
        with torch.no_grad():
            audio = model.embed_audio(torch.zeros(1, 80, 3000))  # 30 s of mels -> 1500 frames
        assert audio.shape == (1, 1500, 48) and torch.isfinite(audio).all()


def test_a_rerun_rewrites_nothing_and_a_broken_file_is_rewritten(narrow_dir, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in narrow_dir.iterdir()}
    make_paper_checkpoints.main(["--out_dir", str(narrow_dir), "--width", "narrow"])
    assert {p.name: p.stat().st_mtime_ns for p in narrow_dir.iterdir()} == before
    assert "written" not in capsys.readouterr().out
    (narrow_dir / "hubert.pt").write_bytes(b"not a checkpoint")
    make_paper_checkpoints.main(["--out_dir", str(narrow_dir), "--width", "narrow", "--models", "hubert"])
    assert torch.load(narrow_dir / "hubert.pt", weights_only=True)["model_cfg"]["encoder_layers"] == 12
    assert "hubert" in read_model_map(narrow_dir / "model_map.yaml") and "small" in read_model_map(
        narrow_dir / "model_map.yaml")  # a subset run keeps the other entries
