"""A full disk during extraction, training and decoding (issue 24, part 2).

Two injections: the process's file-size limit (``RLIMIT_FSIZE`` with SIGXFSZ ignored, so a
write past it fails with EFBIG; works anywhere), and a real small file system (a tmpfs
mounted for the test, full -> ENOSPC; needs root, else skipped). Each stage must stop with
one line naming the file and the space needed, leave nothing partial that a rerun takes as
complete (no shard scp or ``feats.scp``, no ``.done``-like checkpoint, no short ``text``),
and, once space is freed, finish on a rerun equal to a clean run.

The limit applies to every regular file the process writes, so while it is set stdout and
stderr point at /dev/null (pytest captures them in files) and progress bars are off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from conftest import first_utterances
from espnet_delta.features.config import ExtractionConfig
from espnet_delta.features.extract import extract_features

BATCH = dict(batch_seconds=60.0, batch_size=1, progress=False, device="cpu")


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes of any regular file fail with EFBIG inside the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield  # pytest's sys.stdout / sys.stderr write to its capture files
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)
        signal.signal(signal.SIGXFSZ, handler)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` at ``path`` (root only); ``grow(size)`` frees space by remounting larger."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}): needs root; "
                    "the file-size-limit variant covers the same code")

    def grow(new: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new}", str(path)], check=True)

    try:
        yield grow
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def tmpfs_size(*files: Path) -> str:
    """A tmpfs size that holds ``files`` (tmpfs counts whole 4 KiB pages) plus one spare page."""
    pages = sum(-(-f.stat().st_size // 4096) for f in files) + 1
    return f"{4 * pages}k"


def errors(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# ------------------------------------------------------------------ extraction
def spec(arch, upstreams, finetuned):
    return {"upstream": f"{arch}_local", "path_or_url": str(upstreams[arch]), "finetuned": str(finetuned[arch])}


@pytest.fixture(scope="module")
def extraction(tiny_upstreams, finetuned, mini_data, tmp_path_factory):
    """(config file, data dir, clean cache dir): a clean 2-shard extraction of 2 utterances."""
    root = tmp_path_factory.mktemp("disk_feats")
    conf = {"reference": spec("wavlm", tiny_upstreams, finetuned), "others": [spec("hubert", tiny_upstreams, finetuned)]}
    (root / "extract.yaml").write_text(yaml.safe_dump(conf))
    data = first_utterances(mini_data, root / "data" / "train", 2)
    (root / "clean").mkdir()
    cwd = os.getcwd()
    os.chdir(root / "clean")  # out_dir relative, as in the recipes: a cache elsewhere holds the same bytes
    try:
        assert extract_features(conf, data, Path("feats"), num_shards=2, **BATCH).merged
    finally:
        os.chdir(cwd)
    return root / "extract.yaml", data, root / "clean" / "feats"


@pytest.fixture(autouse=True)
def loaded_once(request, monkeypatch):
    """The command builds its models through ExtractionConfig.build_extractor: one set per module."""
    if "extraction" in request.fixturenames:
        cache = request.getfixturevalue("extractor")
        monkeypatch.setattr(ExtractionConfig, "build_extractor", lambda self, **kwargs: cache)


@pytest.fixture(scope="module")
def extractor(extraction):
    return ExtractionConfig.from_config(extraction[0]).build_extractor()


def cache_contents(out: Path) -> dict:
    """Each file's bytes, the arks' modification times left out."""
    import json

    files = {}
    for p in sorted(out.iterdir()):
        if p.is_file() and not p.name.startswith(".feats."):
            if p.suffix == ".sum":
                record = json.loads(p.read_text())
                del record["ark"]["mtime_ns"]
                files[p.name] = record
            else:
                files[p.name] = p.read_bytes()
    return files


def extract_cli(config: Path, data: Path, out: Path) -> None:
    from espnet_delta.bin.extract_features import main

    main(["--config", str(config), "--data_dir", str(data), "--out_dir", str(out), "--num_shards", "2",
          "--batch_size", "1", "--progress", "false", "--device", "cpu", "--num_threads", str(torch.get_num_threads())])


def assert_nothing_taken_as_complete(out: Path) -> None:
    assert not (out / "feats.scp").exists()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    for scp in out.glob("feats.*.scp"):  # a complete shard is one that fits, whole
        k = scp.name.split(".")[1]
        assert (out / f"feats.{k}.sum").is_file() and (out / f"feats.{k}.ark").is_file()
    assert len(list(out.glob("feats.*.scp"))) < 2


def test_extraction_stops_at_a_file_size_limit_and_the_rerun_completes(extraction, tmp_path, caplog, monkeypatch):
    config, data, clean = extraction
    monkeypatch.chdir(tmp_path)
    out = Path("feats")
    limit = min(p.stat().st_size for p in clean.glob("feats.*.ark")) // 2  # every other file is smaller
    caplog.set_level(logging.INFO)
    with file_size_limit(limit), pytest.raises(SystemExit) as stop:
        extract_cli(config, data, out)
    assert stop.value.code == 1
    (line,) = errors(caplog)
    assert str(out / "feats.1.ark") in line and "file-size limit" in line and "need about" in line
    assert_nothing_taken_as_complete(out)
    extract_cli(config, data, out)  # the limit lifted
    assert cache_contents(out) == cache_contents(clean)


def test_extraction_on_a_full_file_system_and_the_rerun_completes(extraction, tmp_path, caplog, monkeypatch):
    config, data, clean = extraction
    mount = tmp_path / "disk"
    fits = [clean / name for name in ("layout.json", "shards.json", "feats.1.ark", "feats.1.shape", "feats.1.sum",
                                      "feats.1.scp")]
    with small_tmpfs(mount, tmpfs_size(*fits)) as grow:  # shard 1 fits, shard 2's ark does not
        monkeypatch.chdir(mount)
        out = Path("feats")
        caplog.set_level(logging.INFO)
        with pytest.raises(SystemExit) as stop:
            extract_cli(config, data, out)
        assert stop.value.code == 1
        (line,) = errors(caplog)
        assert str(out / "feats.2.ark") in line and "no space left on device" in line and "need about" in line
        assert_nothing_taken_as_complete(out)
        grow("1m")
        extract_cli(config, data, out)
        assert cache_contents(out) == cache_contents(clean)


# ------------------------------------------------------------------ training and decoding
#: the smallest ESPnet CTC model: fbank -> identity encoder -> linear CTC head, 2 epochs
TRAIN_CONFIG = {
    "frontend": "default", "frontend_conf": {"n_mels": 20, "n_fft": 256, "hop_length": 160},
    "specaug": None, "normalize": None, "encoder": "identity", "decoder": "none",
    "model": "espnet_ctc_wer", "model_conf": {"ctc_weight": 1.0}, "optim": "adam", "optim_conf": {"lr": 0.01},
    "max_epoch": 2, "batch_type": "unsorted", "batch_size": 8, "best_model_criterion": [["valid", "loss", "min"]],
    "num_workers": 0, "use_tensorboard": False, "use_matplotlib": False, "seed": 0,
}


def train_cmd(root: Path, exp: Path) -> list:
    return ["--config", str(root / "conf.yaml"), "--output_dir", str(exp), "--ngpu", "0", "--resume", "true",
            *root.joinpath("data_args").read_text().split("\n")]


@pytest.fixture(scope="module")
def training(mini_data, tmp_path_factory):
    """(root with conf.yaml and the data options, clean exp dir): one uninterrupted training."""
    from espnet_training import data_args

    from espnet_delta.asr.train import train

    root = tmp_path_factory.mktemp("disk_train")
    (root / "conf.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG))
    (root / "data_args").write_text("\n".join(data_args(mini_data, root)))
    train(train_cmd(root, root / "clean"))
    return root, root / "clean"


def final_model(exp: Path) -> dict:
    return torch.load(exp / "valid.loss.best.pth", weights_only=True)


def assert_same_model(exp: Path, clean: Path) -> None:
    got, want = final_model(exp), final_model(clean)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert sorted(p.name for p in exp.glob("*.pth")) == sorted(p.name for p in clean.glob("*.pth"))


def test_training_stops_at_a_file_size_limit_and_the_rerun_completes(training, tmp_path, caplog):
    from espnet_delta.asr.train import train

    root, clean = training
    exp = tmp_path / "exp"
    limit = (clean / "1epoch.pth").stat().st_size // 2  # config.yaml is smaller, the checkpoints larger
    caplog.set_level(logging.INFO)
    with file_size_limit(limit), pytest.raises(SystemExit) as stop:
        train(train_cmd(root, exp))
    assert stop.value.code == 1
    (line,) = errors(caplog)
    assert str(exp / "checkpoint.pth") in line and "file-size limit" in line and "needs about" in line
    assert not list(exp.glob("*.pth")) and not list(exp.glob(".*.tmp"))  # no checkpoint a rerun would take
    train(train_cmd(root, exp))
    assert_same_model(exp, clean)


def test_training_on_a_full_file_system_resumes_after_space_is_freed(training, tmp_path, caplog):
    from espnet_delta.asr.train import train

    root, clean = training
    mount = tmp_path / "disk"
    fits = [clean / name for name in ("config.yaml", "checkpoint.pth", "1epoch.pth")]
    with small_tmpfs(mount, tmpfs_size(*fits)) as grow:  # epoch 1 fits, epoch 2's checkpoint does not
        exp = mount / "exp"
        caplog.set_level(logging.INFO)
        with pytest.raises(SystemExit):
            train(train_cmd(root, exp))
        (line,) = errors(caplog)
        assert str(exp / "checkpoint.pth") in line and "no space left on device" in line and "needs about" in line
        assert not (exp / "2epoch.pth").exists() and not list(exp.glob(".*.tmp"))
        grow("1m")
        caplog.clear()
        train(train_cmd(root, exp))
        assert any("Resumed from" in r.getMessage() or "resumed" in r.getMessage().lower() for r in caplog.records)
        assert_same_model(exp, clean)


def test_decoding_stops_at_a_file_size_limit_and_the_rerun_completes(training, mini_data, tmp_path, caplog):
    from espnet_delta.asr.decoding import DecodeOptions, decode_jobs, hyp_file

    root, clean = training
    jobs = {}
    for name in ("clean", "full"):
        jobs[name] = tmp_path / name
        jobs[name].mkdir()
        for f in ("config.yaml", "valid.loss.best.pth"):
            shutil.copy(clean / f, jobs[name] / f)
    tests = [("dev", mini_data / "dev" / "wav.scp")]
    options = DecodeOptions()
    decode_jobs([jobs["clean"]], "valid.loss.best.pth", tests, options)
    want = hyp_file(jobs["clean"], "dev").read_text()
    assert len(want.splitlines()) == 4 and len(want) > 20
    caplog.set_level(logging.INFO)
    with file_size_limit(len(want) // 2), pytest.raises(SystemExit) as stop:
        decode_jobs([jobs["full"]], "valid.loss.best.pth", tests, options)
    assert stop.value.code == 1
    (line,) = errors(caplog)
    out = hyp_file(jobs["full"], "dev")
    assert str(out) in line and f"needs about {len(want.encode())} bytes" in line
    assert not out.exists() and not list(out.parent.glob(".*.tmp"))  # no text with fewer lines than the set
    decode_jobs([jobs["full"]], "valid.loss.best.pth", tests, options)
    assert out.read_text() == want
