"""Recipe plumbing of Tables 4 and 5 of arXiv 2601.20142: deltas extracted from any named
fine-tuned checkpoint (Table 4: HuBERT / wav2vec2 fine-tuned on adult speech), and the
per-utterance mean MoE gate weight over valid frames written per test set (Table 5)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from espnet_delta.analysis import gates
from espnet_delta.recipe import make_extract_config

# --------------------------------------------------------------------------- extraction config


@pytest.fixture()
def recipe(tmp_path, monkeypatch):
    """A recipe dir with an upstream table and fine-tuned checkpoints (their bytes do not matter here)."""
    monkeypatch.chdir(tmp_path)
    table = {n: {"upstream": f"{n}_local", "path_or_url": f"up/{n}.pt"} for n in ("wavlm", "hubert", "wav2vec2")}
    Path("conf").mkdir()
    Path("conf/upstreams.yaml").write_text(yaml.safe_dump(table))
    for job in ("ft_wavlm", "ft_hubert", "ft_wav2vec2", "ft_hubert_adult"):
        Path("exp", job).mkdir(parents=True)
        Path("exp", job, "valid.wer_ctc.best.pth").write_bytes(b"model " + job.encode())
    return tmp_path


def run_make_extract_config(*extra):
    make_extract_config.main([
        "--upstream_conf", "conf/upstreams.yaml", "--reference", "wavlm", "--others", "hubert", "wav2vec2",
        "--finetuned", "exp/ft_{name}/valid.wer_ctc.best.pth", "--out", "dump/feats/extract.yaml", *extra,
    ])
    return yaml.safe_load(Path("dump/feats/extract.yaml").read_text())


def test_finetuned_map_picks_the_named_checkpoint(recipe):
    conf = run_make_extract_config("--finetuned_map", "hubert=exp/ft_hubert_adult/valid.wer_ctc.best.pth")
    finetuned = {m["name"]: m["finetuned"] for m in [conf["reference"], *conf["others"]]}
    assert finetuned == {
        "wavlm": "exp/ft_wavlm/valid.wer_ctc.best.pth",  # the template
        "hubert": "exp/ft_hubert_adult/valid.wer_ctc.best.pth",  # the map
        "wav2vec2": "exp/ft_wav2vec2/valid.wer_ctc.best.pth",
    }
    assert conf["others"][0]["path_or_url"] == "up/hubert.pt"  # the pre-trained model stays the table's


def test_finetuned_map_missing_checkpoint_is_one_clear_error(recipe, caplog):
    missing = "exp/ft_wav2vec2_adult/valid.wer_ctc.best.pth"
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as e:
        run_make_extract_config("--finetuned_map", f"wav2vec2={missing}")
    assert e.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and missing in errors[0] and "wav2vec2" in errors[0]
    assert not Path("dump/feats/extract.yaml").exists()


@pytest.mark.parametrize("item,message", [
    ("whisper=exp/ft_hubert_adult/valid.wer_ctc.best.pth", "not a model of this extraction"),
    ("hubert", "expected NAME=PATH"),
])
def test_finetuned_map_refuses_unknown_names_and_malformed_items(recipe, caplog, item, message):
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        run_make_extract_config("--finetuned_map", item)
    assert any(message in r.getMessage() for r in caplog.records)


def test_changed_checkpoint_is_not_taken_for_the_cached_one(recipe):
    """The cache identity holds each checkpoint's absolute path, size and mtime: another
    checkpoint, or the same path retrained, makes an existing feature dir mismatch (the
    extraction then refuses it instead of reusing stale features)."""
    from espnet_delta.features.config import ExtractionConfig, LayoutMismatchError, check_layout_file

    for n in ("wavlm", "hubert", "wav2vec2"):
        Path("up").mkdir(exist_ok=True)
        Path("up", f"{n}.pt").write_bytes(b"pre-trained")
    layout = Path("layout.json")
    cached = ExtractionConfig.from_dict(run_make_extract_config())
    layout.write_text(json.dumps({"format": "espnet_delta.features.layout/2", "models": cached.models_record()}))
    check_layout_file(layout, {"format": "espnet_delta.features.layout/2", "models": cached.models_record()},
                      with_columns=False)  # the same checkpoints: the cache is reused

    adult = ExtractionConfig.from_dict(
        run_make_extract_config("--finetuned_map", "hubert=exp/ft_hubert_adult/valid.wer_ctc.best.pth"))
    with pytest.raises(LayoutMismatchError, match=r"models\.others\[0\]\.files\.finetuned"):
        check_layout_file(layout, {"format": "espnet_delta.features.layout/2", "models": adult.models_record()},
                          with_columns=False)

    ckpt = Path("exp/ft_hubert/valid.wer_ctc.best.pth")  # retrained in place: same path and size, new mtime
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    retrained = ExtractionConfig.from_dict(run_make_extract_config())
    with pytest.raises(LayoutMismatchError, match=r"mtime"):
        check_layout_file(layout, {"format": "espnet_delta.features.layout/2", "models": retrained.models_record()},
                          with_columns=False)


# --------------------------------------------------------------------------- gate_means.tsv


def test_gate_means_tsv_from_a_constructed_gate(tmp_path):
    """Two experts, lengths 4 and 2 (frames t >= length are padding, filled with 9s):
    utt_a: (0.5+0.7+0.1+0.3)/4 = 0.4 and (0.5+0.3+0.9+0.7)/4 = 0.6;
    utt_b: (0.2+0.4)/2 = 0.3 and (0.8+0.6)/2 = 0.7."""
    gate = torch.tensor([
        [[0.5, 0.5], [0.7, 0.3], [0.1, 0.9], [0.3, 0.7]],
        [[0.2, 0.8], [0.4, 0.6], [9.0, 9.0], [9.0, 9.0]],
    ])
    means = gates.utterance_gate_means(gate, torch.tensor([4, 2]))
    out = gates.write_gate_means_file(tmp_path / "decode" / "test" / "gate_means.tsv", ["utt_b", "utt_a"], means[::-1],
                                      ["wavlm", "hubert"])
    lines = out.read_text().splitlines()
    assert lines[0] == "utt_id\twavlm\thubert"
    assert len(lines) == 3  # one row per utterance
    rows = {line.split("\t")[0]: [float(v) for v in line.split("\t")[1:]] for line in lines[1:]}
    np.testing.assert_allclose(rows["utt_a"], [0.4, 0.6], atol=1e-6)
    np.testing.assert_allclose(rows["utt_b"], [0.3, 0.7], atol=1e-6)
    assert [line.split("\t")[0] for line in lines[1:]] == ["utt_a", "utt_b"]  # sorted by id
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temporary file


def test_gate_means_up_to_date_needs_every_utterance_and_a_newer_table(tmp_path):
    scp = tmp_path / "feats.scp"
    scp.write_text("utt_a x.ark:1\nutt_b x.ark:2\n")
    model = tmp_path / "valid.wer_ctc.best.pth"
    model.write_bytes(b"m")
    tsv = tmp_path / "gate_means.tsv"
    assert not gates.gate_means_up_to_date(tsv, scp, [model, scp])  # missing
    gates.write_gate_means_file(tsv, ["utt_a"], np.array([[0.5, 0.5]]), ["wavlm", "hubert"])
    assert not gates.gate_means_up_to_date(tsv, scp, [model, scp])  # utt_b missing
    gates.write_gate_means_file(tsv, ["utt_a", "utt_b"], np.array([[0.5, 0.5], [0.4, 0.6]]), ["wavlm", "hubert"])
    assert gates.gate_means_up_to_date(tsv, scp, [model, scp])
    later = tsv.stat().st_mtime_ns + 1_000_000_000
    os.utime(model, ns=(later, later))  # the model was retrained after the table was written
    assert not gates.gate_means_up_to_date(tsv, scp, [model, scp])


class _CachedMoEModel(torch.nn.Module):
    """What gate_means needs of an ESPnet model: ``frontend`` and ``encode``."""

    def __init__(self, frontend):
        super().__init__()
        self.frontend = frontend

    def encode(self, speech, lengths):
        return self.frontend(speech, lengths)


def test_gate_means_cli_writes_moe_systems_only_and_resumes(tmp_path, monkeypatch):
    """A two-expert MoE on cached features whose gate logits are (x0, 0) for reference frame
    (x0, x1): frames with x0 = ln 3 get weights (3/4, 1/4), frames with x0 = 0 get (1/2, 1/2).
    utt_a = [ln 3, 0] -> (0.625, 0.375); utt_b = [ln 3] -> (0.75, 0.25) (its padded frame in
    the batch would give (1/2, 1/2) if it were counted)."""
    import kaldiio

    from espnet_delta.asr.frontend.cached_fusion import CachedFusionFrontend
    from espnet_delta.asr import decoding
    from espnet_delta.bin import gate_means

    layout = {"streams": [{"name": "wavlm.ft", "dim": 2}, {"name": "hubert.delta", "dim": 2},
                          {"name": "hubert.ft", "dim": 2}]}
    frontend = CachedFusionFrontend(layout=layout, reference="wavlm", deltas=["hubert"], fusion="moe")
    with torch.no_grad():
        frontend.head.fusion.gate.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    model = _CachedMoEModel(frontend).eval()
    monkeypatch.setattr(decoding, "load_model", lambda config, model_file, device: model)

    ln3 = math.log(3.0)
    feats = {"utt_a": np.array([[ln3, 0.2, 1, 1, 1, 1], [0.0, -0.3, 1, 1, 1, 1]], dtype=np.float32),
             "utt_b": np.array([[ln3, 0.5, 2, 2, 2, 2]], dtype=np.float32)}
    scp = tmp_path / "feats" / "test" / "feats.scp"
    scp.parent.mkdir(parents=True)
    with kaldiio.WriteHelper(f"ark,scp:{scp.parent / 'feats.ark'},{scp}") as w:
        for key, mat in feats.items():
            w(key, mat)
    jobs = {}
    for system, fusion in (("wavlm+dhubert_moe", "moe"), ("wavlm+dhubert_concat", "concat")):
        job = jobs[fusion] = tmp_path / "exp" / f"fusion_{system}"
        job.mkdir(parents=True)
        (job / "config.yaml").write_text(yaml.safe_dump({"frontend": "cached_fusion", "frontend_conf": {
            "reference": "wavlm", "deltas": ["hubert"], "mode": "delta", "fusion": fusion}}))
        (job / "valid.wer_ctc.best.pth").write_bytes(b"weights")

    cmd = [str(jobs["moe"]), str(jobs["concat"]), "--test", f"test={scp}", "--batch_size", "2"]
    gate_means.main(cmd)
    out = jobs["moe"] / "decode" / "test" / "gate_means.tsv"
    assert out.read_text() == "utt_id\twavlm\thubert\nutt_a\t0.625000\t0.375000\nutt_b\t0.750000\t0.250000\n"
    assert not (jobs["concat"] / "decode").exists()  # not a MoE system

    before = out.stat().st_mtime_ns
    monkeypatch.setattr(decoding, "load_model", lambda *a: pytest.fail("an up-to-date table was computed again"))
    gate_means.main(cmd)
    assert out.stat().st_mtime_ns == before
