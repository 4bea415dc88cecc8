"""The linear language-ID probe: utterance-mean hidden states, held-out accuracy per layer,
chance level, CSV/PNG/Markdown outputs, and the CLI on a tiny corpus."""

import numpy as np
import pytest
import torch

from espnet_delta.analysis.langid_probe import (
    chance_accuracy,
    pooled_hidden_states,
    probe_accuracy,
    write_probe_outputs,
)


def test_probe_finds_the_layer_that_carries_the_language():
    rng = np.random.default_rng(0)
    langs = np.array(["en", "de", "fr"] * 40)
    x = rng.normal(size=(120, 3, 8))  # layers 0 and 2: noise
    centres = {"en": 0.0, "de": 20.0, "fr": -20.0}
    x[:, 1, 0] += [centres[lang] for lang in langs]  # layer 1: the language is one coordinate, far apart
    acc = probe_accuracy(x[:60], langs[:60], x[60:], langs[60:])
    assert acc[1] == 1.0  # classes 20 standard deviations apart: every held-out utterance right
    assert acc[0] < 0.7 and acc[2] < 0.7  # noise: near chance (1/3)
    # chance: always the most frequent training language; 'de' is most frequent here
    assert chance_accuracy(["de", "de", "en"], ["de", "en", "fr", "fr"]) == 0.25
    with pytest.raises(ValueError, match="at least two languages"):
        probe_accuracy(x[:4], ["en"] * 4, x[4:8], ["en"] * 4)


def test_pooled_states_are_means_over_the_utterance_frames(tiny_upstreams, tmp_path):
    import soundfile

    from espnet_delta.ssl.upstream import FrozenUpstream, load_upstream

    wav = np.random.default_rng(1).normal(scale=0.1, size=8000).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", wav, 16000, subtype="FLOAT")  # exact samples
    upstream = FrozenUpstream(load_upstream("wavlm_local", str(tiny_upstreams["wavlm"])))
    pooled = pooled_hidden_states(upstream, [("a", str(tmp_path / "a.wav"), "en")])
    states, frames = upstream(torch.from_numpy(wav)[None], torch.tensor([8000]))
    n = int(frames[0])  # (8000 - 400) // 320 + 1 = 24 frames
    assert n == 24 and pooled.shape == (1, len(states), states[0].size(-1))
    for i, s in enumerate(states):
        np.testing.assert_allclose(pooled[0, i], s[0, :n].sum(0).numpy() / n, rtol=1e-5, atol=1e-6)


def test_outputs(tmp_path):
    paths = write_probe_outputs(tmp_path / "exp" / "analysis", "wavlm", [0.5, 0.9, 0.75], 1 / 3, 10, 6, tmp_path)
    lines = paths["csv"].read_text().splitlines()
    assert lines[0] == "model,layer,accuracy,chance,n_train,n_test"
    assert lines[2] == "wavlm,1,0.9000,0.3333,10,6" and len(lines) == 4
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["md"].read_text()
    assert "Best: hidden state 1." in md and "|accuracy (%)|50.0|90.0|75.0|" in md
    assert "(exp/analysis/langid_probe.png)" in md


def test_cli_on_a_tiny_multilingual_corpus(tiny_upstreams, tmp_path):
    from conftest import mini_corpus_tools_missing

    if mini_corpus_tools_missing():
        pytest.skip("espeak-ng and sox are required")
    from espnet_delta.bin.langid_probe import main
    from espnet_delta.data.multilingual_corpus import make_multilingual_corpus, write_data_dirs

    root = make_multilingual_corpus(tmp_path / "corpus", scale=0.02)
    write_data_dirs(root, tmp_path / "data")
    (tmp_path / "up.yaml").write_text(f"wavlm: {{upstream: wavlm_local, path_or_url: {tiny_upstreams['wavlm']}}}\n")
    args = ["--upstream_conf", str(tmp_path / "up.yaml"), "--train_dir", str(tmp_path / "data" / "train"),
            "--test_dir", str(tmp_path / "data" / "test"), "--out_dir", str(tmp_path / "out")]
    assert main(args + ["--model", "wavlm"]) == 0
    rows = (tmp_path / "out" / "langid_probe.csv").read_text().splitlines()[1:]
    assert len(rows) == 4 and all(0.0 <= float(r.split(",")[2]) <= 1.0 for r in rows)  # 3 layers -> 4 states
    assert main(args + ["--model", "hubert"]) == 2  # not in the conf: named, exit status 2
