"""Stage 0 (espnet_delta.bin.fetch_models) against a loopback HTTP server with the hubs' URL layout,
and the check of the later stages: present models pass, a missing one is one line and exit 2."""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import http.server
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from espnet_delta.bin import fetch_models
from espnet_delta.ssl.tiny import weights_of

# S3PRL's own hub URL of wavlm_large (s3prl/upstream/wavlm/hubconf.py), and its cache file name
# by S3PRL's rule: <sha256 of the URL>.<file name>
WAVLM_URL = "https://huggingface.co/s3prl/converted_ckpts/resolve/main/wavlm_large.pt"
WAVLM_CACHE_NAME = hashlib.sha256(WAVLM_URL.encode()).hexdigest() + ".wavlm_large.pt"


@pytest.fixture
def hub(tmp_path, tiny_upstreams):
    """A loopback server whose /s3prl/converted_ckpts/resolve/main/ holds a tiny wavlm as wavlm_large.pt."""
    root = tmp_path / "hub"
    served = root / "s3prl" / "converted_ckpts" / "resolve" / "main"
    served.mkdir(parents=True)
    shutil.copy(tiny_upstreams["wavlm"], served / "wavlm_large.pt")
    with serve(root) as url:
        yield url


@contextlib.contextmanager
def serve(root: Path):
    """Serve folder ``root`` on the loopback address; yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


@pytest.fixture
def s3prl_cache(tmp_path, monkeypatch):
    import s3prl.util.download as dl

    cache = tmp_path / "s3prl_cache"
    monkeypatch.setattr(dl, "_download_dir", cache)
    monkeypatch.delenv("ESPNET_DELTA_MODEL_MAP", raising=False)
    return cache


def options(tmp_path, table: str, *more):
    conf = tmp_path / "upstreams.yaml"
    conf.write_text(table)
    return ["--upstream_conf", str(conf), "--finetune_config", "conf/finetune.yaml", *more]


def run(args) -> int:
    with pytest.raises(SystemExit) as e:
        fetch_models.main(args)
    return e.value.code


def test_stage_0_downloads_into_the_s3prl_cache_loads_it_and_the_check_passes(tmp_path, hub, s3prl_cache, tiny_upstreams,
                                                                                capsys):
    opts = options(tmp_path, "wavlm: {upstream: wavlm_large}\n", "--upstreams", "wavlm")
    assert run(["--check", "true", "--stages", "4", *opts]) == 2  # not fetched yet
    assert run(["--stages", "0", "--base_url", hub, *opts]) == 0
    cached = s3prl_cache / WAVLM_CACHE_NAME
    assert cached.read_bytes() == Path(tiny_upstreams["wavlm"]).read_bytes()
    assert f"s3prl wavlm_large: {cached.resolve()}" in capsys.readouterr().out  # where it went, with its size
    assert run(["--check", "true", "--stages", "4", "6", "10", *opts]) == 0
    # the loader now reads it from the cache, offline
    from espnet_delta.ssl.upstream import build_s3prl_upstream

    state = build_s3prl_upstream("wavlm_large").upstream.model.state_dict()
    expected = weights_of(torch.load(tiny_upstreams["wavlm"], weights_only=True))
    assert all(torch.equal(state[k], v) for k, v in expected.items())


def test_a_failed_download_is_one_line_naming_the_model_and_url(tmp_path, hub, s3prl_cache, caplog):
    opts = options(tmp_path, "hubert: {upstream: hubert_large_ll60k}\n", "--upstreams", "hubert")
    with caplog.at_level(logging.ERROR):
        assert run(["--stages", "0", "--base_url", hub, *opts]) == 2  # the server has no hubert: 404
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert "'hubert_large_ll60k'" in errors[0] and f"{hub}/s3prl/converted_ckpts/resolve/main/hubert_large_ll60k.pt" in errors[0]
    assert not list(s3prl_cache.glob("*hubert*"))  # no partial file left behind


def test_check_names_the_missing_model_its_path_and_stage_0(tmp_path, s3prl_cache, caplog):
    opts = options(tmp_path, "wavlm: {upstream: wavlm_large}\nhubert: {upstream: hubert_local, path_or_url: nope.pt}\n",
                   "--upstreams", "wavlm hubert")
    with caplog.at_level(logging.ERROR):
        assert run(["--check", "true", "--stages", "6", *opts]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2  # one line per missing model
    assert "'wavlm_large'" in errors[0] and str(s3prl_cache / WAVLM_CACHE_NAME) in errors[0]
    assert "./run.sh --stage 0 --stop_stage 0" in errors[0] and "--model_map" in errors[0]
    assert "nope.pt not found" in errors[1]


def test_whisper_screening_is_needed_only_while_its_hypotheses_are_missing(tmp_path, s3prl_cache, caplog):
    hyp = tmp_path / "hyp.tsv"
    args = ["--check", "true", "--stages", "1", "--screen_model", "large-v2", "--screen_hyp", str(hyp),
            "--screen_opts", f"--batch_size 8 --download_root {tmp_path / 'wh'}"]
    with caplog.at_level(logging.ERROR):
        assert run(args) == 2
    assert str(tmp_path / "wh" / "large-v2.pt") in caplog.text
    hyp.write_text("u1\thello\n")
    assert run(args) == 0


def test_a_mapped_name_needs_no_cache(tmp_path, s3prl_cache, tiny_upstreams):
    (tmp_path / "map.yaml").write_text(f"wavlm_large: {tiny_upstreams['wavlm']}\n")
    opts = options(tmp_path, "wavlm: {upstream: wavlm_large}\n", "--upstreams", "wavlm")
    assert run(["--check", "true", "--stages", "4", "--model_map", str(tmp_path / "map.yaml"), *opts]) == 0
    assert not s3prl_cache.exists() or not list(s3prl_cache.iterdir())


def test_stage_0_fetches_the_whisper_screening_model_and_verifies_its_sha256(tmp_path, hub, s3prl_cache, monkeypatch,
                                                                           caplog):
    import whisper

    from espnet_delta.whisper.tiny import make_tiny_whisper

    data = make_tiny_whisper(tmp_path / "w.pt").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    # openai-whisper's URL layout: .../main/whisper/models/<sha256>/<name>.pt
    served = tmp_path / "hub" / "main" / "whisper" / "models" / sha
    served.mkdir(parents=True)
    (served / "tiny.pt").write_bytes(data)
    monkeypatch.setitem(whisper._MODELS, "tiny", f"https://openaipublic.azureedge.net/main/whisper/models/{sha}/tiny.pt")
    dims = torch.load(tmp_path / "w.pt", weights_only=True)["dims"]  # the alignment heads of the tiny file's shape
    heads = np.zeros(dims["n_text_layer"] * dims["n_text_head"], dtype=bool)
    monkeypatch.setitem(whisper._ALIGNMENT_HEADS, "tiny", base64.b85encode(gzip.compress(heads.tobytes())))
    args = ["--stages", "0", "--base_url", hub, "--upstreams", "", "--screen_model", "tiny",
            "--screen_opts", f"--download_root {tmp_path / 'wh'}"]
    assert run(args) == 0
    assert (tmp_path / "wh" / "tiny.pt").read_bytes() == data
    # a file that is not the one the URL's hash names is refused, in one line, and not kept
    monkeypatch.setitem(whisper._MODELS, "tiny", f"https://openaipublic.azureedge.net/main/whisper/models/{sha}/tiny.pt"
                        .replace(sha, "0" * 64))
    (tmp_path / "hub" / "main" / "whisper" / "models" / ("0" * 64)).symlink_to(served)
    with caplog.at_level(logging.ERROR):
        assert run([*args[:-1], f"--download_root {tmp_path / 'wh2'}"]) == 2
    assert "SHA-256" in caplog.text and not (tmp_path / "wh2" / "tiny.pt").exists()


# S3PRL's hub URL of xls_r_300m (s3prl/upstream/wav2vec2/hubconf.py): its file is not named after the model
XLSR_URL = "https://huggingface.co/s3prl/converted_ckpts/resolve/main/xlsr2_300m.pt"


def test_stage_0_fetches_and_loads_paper_topology_checkpoints_from_the_hubs_url_layout(tmp_path, s3prl_cache,
                                                                                      monkeypatch):
    """The real fetch and load code on narrow checkpoints of the real topologies (24 layers, the real CNN;
    Whisper small's 12 x 12 layers and heads, so openai-whisper's alignment heads of 'small' fit)."""
    import whisper

    from espnet_delta.bin import make_paper_checkpoints

    models = tmp_path / "paper"
    make_paper_checkpoints.main(["--out_dir", str(models), "--width", "narrow", "--models", "xls_r_300m", "small"])
    root = tmp_path / "hub"
    (root / "s3prl" / "converted_ckpts" / "resolve" / "main").mkdir(parents=True)
    shutil.copy(models / "xls_r_300m.pt", root / "s3prl" / "converted_ckpts" / "resolve" / "main" / "xlsr2_300m.pt")
    data = (models / "small.pt").read_bytes()
    sha = hashlib.sha256(data).hexdigest()  # openai-whisper's layout: .../whisper/models/<sha256>/<name>.pt
    (root / "main" / "whisper" / "models" / sha).mkdir(parents=True)
    (root / "main" / "whisper" / "models" / sha / "small.pt").write_bytes(data)
    url = f"https://openaipublic.azureedge.net/main/whisper/models/{sha}/small.pt"
    monkeypatch.setitem(whisper._MODELS, "small", url)
    opts = options(tmp_path, "xlsr: {upstream: xls_r_300m}\n", "--upstreams", "xlsr", "--screen_model", "small",
                   "--screen_opts", f"--download_root {tmp_path / 'wh'}")
    with serve(root) as base_url:
        assert run(["--stages", "0", "--base_url", base_url, *opts]) == 0  # downloads, then loads each once
    cached = s3prl_cache / (hashlib.sha256(XLSR_URL.encode()).hexdigest() + ".xlsr2_300m.pt")
    assert cached.read_bytes() == (models / "xls_r_300m.pt").read_bytes()
    assert (tmp_path / "wh" / "small.pt").read_bytes() == data
    assert run(["--check", "true", "--stages", "1", "4", *opts]) == 0
