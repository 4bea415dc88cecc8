"""Defects the paper-scale dry runs found (docs/dry_run.md), each on a tiny tree in seconds:
the MyST recipe without Whisper screening needs no hypothesis file; a stage-4 training whose data
stages 1-2 did not write stops in one line before any training; transfer.sh's headings name the
recipe's corpus; the usage log's processes before stage 1 carry a stage."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parents[2]
HUB_FREE = "wavlm: {upstream: wavlm_local, path_or_url: wavlm.pt}\n"  # the planner's names need no hub look-up


def env() -> dict:
    out = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}")
    for var in ("ESPNET_DELTA_USAGE_LOG", "ESPNET_DELTA_STAGE", "ESPNET_DELTA_MODEL_MAP"):
        out.pop(var, None)
    return out


def run(cmd, cwd: Path, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env={**env(), **extra_env}, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """egs2/myst/asr1 copied beside links to the checkout's local/ and .venv, with a two-utterance-per-split MyST."""
    root = tmp_path_factory.mktemp("myst")
    (root / "local").symlink_to(REPO / "local")
    (root / ".venv").symlink_to(REPO / ".venv")
    recipe = root / "egs2" / "myst" / "asr1"
    shutil.copytree(REPO / "egs2" / "myst" / "asr1", recipe, symlinks=True)
    (recipe / "up.yaml").write_text(HUB_FREE)
    rng = np.random.default_rng(0)
    for split in ("train", "development", "test"):
        for n in range(2):
            base = recipe / "myst" / "data" / split / "s1" / "s1_a" / f"s1_a_{split}{n}"
            base.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(base.with_suffix(".flac")), 0.05 * rng.standard_normal(32000), 16000)
            base.with_suffix(".trn").write_text("the magnet sticks to the nail\n")
    return recipe


def test_myst_without_screening_needs_no_hypothesis_file(recipe):
    """--whisper_model '' alone: stage 1 runs without the WER filter; an existing default file is still used."""
    opts = ["--stage", "1", "--stop_stage", "1", "--whisper_model", "", "--myst", "myst", "--subset_hours", "",
            "--ngpu", "0", "--gpu_inference", "false", "--upstreams", "wavlm", "--upstream_conf", "up.yaml"]
    hyp = recipe / "data" / "whisper_large-v2.tsv"
    proc = run(["./run.sh", *opts], recipe)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "the Whisper WER filter is off" in proc.stdout and not hyp.exists()
    assert len((recipe / "data" / "train" / "wav.scp").read_text().splitlines()) == 2
    # the default file present (an earlier screening's, or one brought along): prepared with the filter
    hyp.write_text("".join(f"s1-s1_a_{s}{n}\tthe magnet sticks to the nail\n"
                           for s in ("train", "development", "test") for n in range(2)))
    proc = run(["./run.sh", *opts, "--print_only", "true"], recipe)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prepare = [line for line in proc.stdout.splitlines() if "espnet_delta.bin.prepare_data" in line]
    assert prepare and prepare[-1].endswith("--whisper_hyp data/whisper_large-v2.tsv")
    hyp.unlink()


def test_stage_4_without_the_adult_sets_data_stops_before_training(tmp_path):
    """Stages 1-2 ran without --adult_train_set (no shape files of libri_*): one error line naming
    the file and the rerun, exit 1, no config rendered, no training started, no traceback."""
    for name in ("train", "dev", "libri_train", "libri_dev"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "wav.scp").write_text("u1 /x/u1.wav\n")
        (tmp_path / "data" / name / "text").write_text("u1 A\n")
    for name in ("train", "dev"):
        (tmp_path / "dump" / "shapes" / name).mkdir(parents=True)
        (tmp_path / "dump" / "shapes" / name / "speech_shape").write_text("u1 16000\n")
    (tmp_path / "data" / "token_list" / "char").mkdir(parents=True)
    (tmp_path / "data" / "token_list" / "char" / "tokens.txt").write_text("<blank>\nA\n")
    (tmp_path / "wavlm.pt").write_bytes(b"")  # stage 4's model check: a local file that exists
    (tmp_path / "up.yaml").write_text(HUB_FREE)
    shutil.copy(REPO / "egs2" / "mini_myst" / "asr1" / "conf" / "finetune.yaml", tmp_path / "ft.yaml")
    proc = run(["bash", str(REPO / "local" / "asr.sh"), "--stage", "4", "--stop_stage", "4", "--upstreams", "wavlm",
                "--upstream_conf", "up.yaml", "--finetune_config", "ft.yaml", "--adult_train_set", "libri_train"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in out, out[-3000:]
    assert "dump/shapes/libri_train/speech_shape" in errors[0]
    assert "--stage 2 --stop_stage 2 --adult_train_set libri_train" in errors[0]
    assert not list(tmp_path.glob("exp/*/train.yaml")) and not list(tmp_path.glob("exp/*/train.log"))


def test_transfer_headings_name_the_recipes_corpus(recipe):
    proc = run(["./transfer.sh", "--stage", "7", "--stop_stage", "7", "--ngpu", "0", "--gpu_inference", "false",
                "--upstream_conf", "up.yaml"], recipe)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (recipe / "exp" / "transfer_results.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("### ")]
    assert headings == ["### myst: `train`", "### the second child corpus: `kids_train`"]
    assert "mini_" not in text


def test_processes_before_the_first_stage_are_labelled_setup(tmp_path):
    """A normal run recorded with $ESPNET_DELTA_USAGE_LOG: the planner's calls before stage 1 carry
    stage 'setup', not an empty stage (the dry-run report's rows)."""
    usage = tmp_path / "usage.jsonl"
    proc = run(["bash", str(REPO / "local" / "asr.sh"), "--stage", "2", "--stop_stage", "1", "--upstreams", "wavlm",
                "--upstream_conf", "up.yaml"], tmp_path, ESPNET_DELTA_USAGE_LOG=str(usage), ESPNET_DELTA_STAGE="10")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in usage.read_text().splitlines()]
    assert records and {r["stage"] for r in records} == {"setup"}, records
