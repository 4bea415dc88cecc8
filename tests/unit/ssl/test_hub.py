"""The model map (hub name -> local file) in the loaders, and one-line errors of failed hub downloads."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from espnet_delta.ssl import hub
from espnet_delta.ssl.tiny import weights_of


def test_a_mapped_s3prl_name_loads_the_mapped_file_with_its_architecture(tmp_path, tiny_upstreams, monkeypatch):
    from espnet_delta.ssl.upstream import build_s3prl_upstream

    # a relative path in the map is relative to the map file
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "h.pt").write_bytes(tiny_upstreams["hubert"].read_bytes())
    (tmp_path / "map.yaml").write_text("hubert_large_ll60k: models/h.pt\n")
    monkeypatch.setenv(hub.MODEL_MAP_ENV, str(tmp_path / "map.yaml"))
    assert hub.resolve_s3prl("hubert_large_ll60k", None) == ("hubert_local", str(tmp_path / "models" / "h.pt"))
    up = build_s3prl_upstream("hubert_large_ll60k")
    assert type(up.upstream.model).__name__ == "HubertModel"
    expected = weights_of(torch.load(tiny_upstreams["hubert"], weights_only=True))
    state = up.upstream.model.state_dict()
    assert set(state) == set(expected) and all(torch.equal(state[k], v) for k, v in expected.items())


def test_a_missing_local_file_is_redirected_by_its_stem_and_an_existing_one_is_kept(tmp_path, tiny_upstreams, monkeypatch):
    from espnet_delta.recipe.models import Model, locate

    (tmp_path / "mapped.pt").write_bytes(b"x")
    (tmp_path / "map.yaml").write_text(f"mms_300m: {tmp_path / 'mapped.pt'}\n")
    monkeypatch.setenv(hub.MODEL_MAP_ENV, str(tmp_path / "map.yaml"))
    monkeypatch.chdir(tmp_path)
    # the SSHR paper entry: wav2vec2_local on a file only a converted MMS download would create
    assert hub.resolve_s3prl("wav2vec2_local", "downloads/upstreams/mms_300m.pt") == (
        "wav2vec2_local", str(tmp_path / "mapped.pt"))
    assert locate(Model("file", "downloads/upstreams/mms_300m.pt", "test")) == (tmp_path / "mapped.pt", None)
    # and the loader the frontends, extraction and stage 0 share builds from the mapped file
    (tmp_path / "mapped.pt").write_bytes(tiny_upstreams["wav2vec2"].read_bytes())
    from espnet_delta.ssl.upstream import build_s3prl_upstream

    assert type(build_s3prl_upstream("wav2vec2_local", "downloads/upstreams/mms_300m.pt").upstream.model).__name__ == (
        "Wav2Vec2Model")
    # a file that exists is read as it is, mapped stem or not
    (tmp_path / "downloads" / "upstreams").mkdir(parents=True)
    (tmp_path / "downloads" / "upstreams" / "mms_300m.pt").write_bytes(b"y")
    assert hub.resolve_s3prl("wav2vec2_local", "downloads/upstreams/mms_300m.pt") == (
        "wav2vec2_local", "downloads/upstreams/mms_300m.pt")
    # an unmapped stem is left to the loader's own error
    assert hub.resolve_s3prl("wavlm_local", "nowhere/other.pt") == ("wavlm_local", "nowhere/other.pt")


def test_a_mapped_whisper_name_loads_the_mapped_file(tmp_path, monkeypatch):
    from espnet_delta.whisper.load import WhisperLoadError, load_whisper
    from espnet_delta.whisper.tiny import make_tiny_whisper

    make_tiny_whisper(tmp_path / "w.pt")
    (tmp_path / "map.yaml").write_text(f"small: {tmp_path / 'w.pt'}\nlarge-v2: {tmp_path / 'gone.pt'}\n")
    monkeypatch.setenv(hub.MODEL_MAP_ENV, str(tmp_path / "map.yaml"))
    model = load_whisper("small")
    assert model.dims.n_audio_state != 768  # the tiny file's width, not Whisper-small's
    with pytest.raises(WhisperLoadError, match="gone.pt"):
        load_whisper("large-v2")


def test_a_failed_s3prl_download_is_one_line(monkeypatch, tmp_path):
    import requests
    import s3prl.util.download as dl

    from espnet_delta.ssl.upstream import build_s3prl_upstream

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    def offline_requests(*args, **kwargs):
        raise requests.exceptions.ConnectionError("no network")

    monkeypatch.setattr(dl, "_download_dir", tmp_path)
    monkeypatch.setattr(dl, "_download_url_to_file", offline)
    monkeypatch.setattr(dl, "_download_url_to_file_requests", offline_requests)
    monkeypatch.delenv(hub.MODEL_MAP_ENV, raising=False)
    with pytest.raises(hub.HubModelError) as e:
        build_s3prl_upstream("wavlm_large")
    message = str(e.value)
    assert "\n" not in message and e.value.__cause__ is None and e.value.__suppress_context__
    assert "'wavlm_large'" in message and "https://huggingface.co/s3prl/converted_ckpts/resolve/main/wavlm_large.pt" in message
    assert "--stage 0" in message


def test_the_s3prl_exact_frontend_reads_the_model_map(tmp_path, tiny_upstreams, monkeypatch):
    """ESPnet's S3PRL frontend builds its upstream itself; the plugin's s3prl_exact resolves the map first."""
    from espnet_delta.asr.frontend.s3prl_exact import ExactS3prlFrontend

    (tmp_path / "map.yaml").write_text(f"wavlm_large: {tiny_upstreams['wavlm']}\n")
    monkeypatch.setenv(hub.MODEL_MAP_ENV, str(tmp_path / "map.yaml"))
    frontend = ExactS3prlFrontend(frontend_conf={"upstream": "wavlm_large"})
    expected = weights_of(torch.load(tiny_upstreams["wavlm"], weights_only=True))
    state = frontend.upstream.upstream.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
