"""Narrow dry runs of every paper-scale config and systems file (issue 22, part 4).

Each paper command runs as a user would start it (``--dry_run true``, docs/dry_run.md) on narrow
paper-topology checkpoints (``make_paper_checkpoints --width narrow``: the paper models' depth and
layer indices, a small width) and a small generated corpus, each training capped at one optimizer
step, so a paper config that cannot be built or trained fails here instead of after hours of GPU:

* egs2/myst/asr1/paper_tables.sh: all five tables of arXiv 2601.20142, at the full size only
  (the 10 / 5 / 1 h sizes run the same configs and systems on other data dirs: the fine-tuning
  config, the fusion config and the systems files are the same at every size);
* egs2/myst/asr1/transfer.sh: augmentation task vectors at paper scale (conf/tuning/specaug_large.yaml
  over the paper fine-tuning config), with the generated second child corpus (mini_kids);
* the layer-interface paper systems (conf/tuning/interface_paper.yaml + interface_systems_paper.yaml);
* the SSHR paper systems (egs2/mini_multilingual/asr1, conf/tuning/sshr_systems_paper.yaml) with
  both base configs, MMS 300M (sshr_mms300m.yaml) and XLS-R 300M (sshr_xlsr300m.yaml), on the
  generated multilingual corpus.

Every test reads the systems it expects from the systems YAML itself. The MyST recipe's own main
path (run.sh with merging and Whisper-small) is H2's test of the dry-run mode (test_dry_run.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from conftest import needs_mini_corpus_tools

REPO = Path(__file__).resolve().parents[2]
MYST = REPO / "egs2" / "myst" / "asr1"
ML = REPO / "egs2" / "mini_multilingual" / "asr1"
PYTHON = REPO / ".venv" / "bin" / "python"
STEPS = 1  # optimizer steps per training
UTTS = 2   # utterances per decoded set

pytestmark = [needs_mini_corpus_tools, pytest.mark.dry_run]  # make test-dry-run (tests/conftest.py)


def load(path: Path) -> Dict:
    return yaml.safe_load(path.read_text()) or {}


def run(cwd: Path, *cmd: str) -> str:
    """A recipe command; a failure shows the end of its output."""
    env = dict(os.environ, PATH=f"{PYTHON.parent}:{os.environ['PATH']}")
    env.pop("ESPNET_DELTA_MODEL_MAP", None)
    proc = subprocess.run(["bash", *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed (exit status {proc.returncode}):\n{out[-6000:]}"
    return out


def dry_opts(dry_dir: Path, models: Path) -> List[str]:
    return ["--dry_run", "true", "--dry_run_steps", str(STEPS), "--dry_run_utts", str(UTTS),
            "--dry_run_models", "narrow", "--dry_run_dir", str(dry_dir), "--model_map", str(models / "model_map.yaml")]


def assert_trained_and_capped(job: Path) -> None:
    """A finished training whose config was capped to STEPS optimizer steps (max_epoch 1), next to
    the un-capped rendering of the paper config."""
    assert any(job.glob("valid.*.best.pth")), f"{job}: no trained checkpoint"
    config, full = load(job / "config.yaml"), load(job / "train.full.yaml")
    assert config["max_epoch"] == 1, job
    assert config["num_iters_per_epoch"] == STEPS * int(config.get("accum_grad", 1)), job
    assert full["max_epoch"] > 1 or full.get("num_iters_per_epoch", 0) > config["num_iters_per_epoch"], job


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """One narrow paper-topology checkpoint dir and its model map, shared by every dry run."""
    out = tmp_path_factory.mktemp("paper_models")
    subprocess.run([str(PYTHON), "-m", "espnet_delta.bin.make_paper_checkpoints", "--out_dir", str(out),
                    "--width", "narrow", "--log_level", "WARNING"], check=True)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One small MyST-layout + LibriSpeech-layout corpus."""
    out = tmp_path_factory.mktemp("corpus") / "mini"
    subprocess.run([str(PYTHON), "-m", "espnet_delta.bin.make_mini_corpus", "--out", str(out), "--scale", "0.02",
                    "--nj", "2", "--log_level", "WARNING"], check=True)
    return out


@pytest.fixture(scope="module")
def myst_dry(models, corpus, tmp_path_factory) -> Path:
    """paper_tables.sh --dry_run true (all five tables, the full size); the transfer and the
    interface systems run after it in the same dry-run dir (they need its fine-tuned models)."""
    dry = tmp_path_factory.mktemp("dry_myst")
    opts = " ".join([f"--myst={corpus / 'myst'}", f"--librispeech={corpus / 'librispeech'}", "--whisper_model=", "--whisper_hyp=",
                     "--ngpu=0", "--gpu_inference=false", "--feats_fp16=false", "--nj=1"])
    run(MYST, "paper_tables.sh", "--sizes", "full", "--run_opts", opts, *dry_opts(dry, models))
    return dry


def test_paper_tables_every_system_trained_and_tabled(myst_dry):
    """Every system of every table's systems file is trained (capped) and scored, and each table
    is a section of the dry run's RESULTS.md with nothing missing."""
    exp = myst_dry / "exp"
    systems = {}
    for path in sorted((MYST / "conf" / "tuning" / "paper").glob("table*_systems.yaml")):
        systems.update(load(path))
    assert len(systems) >= 10
    for name in systems:
        assert_trained_and_capped(exp / f"fusion_{name}")
        assert (exp / f"fusion_{name}" / "decode" / "test" / "score_wer").is_dir(), name
    for model in ("wavlm", "hubert", "wav2vec2", "hubert_adult", "wav2vec2_adult"):
        assert_trained_and_capped(exp / f"ft_{model}")
    assert load(exp / "ft_wavlm" / "train.full.yaml")["max_epoch"] == 20  # the paper config: 12,000 updates
    results = (myst_dry / "RESULTS.md").read_text()
    for n in range(1, 6):
        assert f"## Table {n}" in results, n
    missing = subprocess.run([str(PYTHON), "-m", "espnet_delta.bin.paper_tables", "--log_level", "ERROR",
                              "--list_missing", "--tables", "1", "2", "3", "4", "5", "--size", f"full={exp}",
                              "--test_set", "test", "--gate_sets", "dev", "test"],
                             capture_output=True, text=True, check=True).stdout
    assert missing.strip() == ""


def test_transfer_dry_run(myst_dry, models, corpus):
    """transfer.sh at paper scale: theta_aug (speed perturbation + SpecAugment over the paper
    fine-tuning config), the second corpus's baseline, the lambda grid, transfer then fine-tune,
    and the results section; every training capped."""
    run(MYST, "transfer.sh", *dry_opts(myst_dry, models), "--kids_corpus_dir", "kids_corpus",
        "--kids_corpus_scale", "0.1", "--transfer_scales", "0.5", "--further_epochs", "1", "--ngpu", "0",
        "--gpu_inference", "false", "--merge_schedules", "depth_power", "--merge_lambdas", "0.1",
        "--merge_alphas", "0.7", "--dry_run_max_bins", "200000",
        "--asr_opts", f"--feats_fp16 false --myst {corpus / 'myst'}")  # the corpus the run read
    exp = myst_dry / "exp"
    for job in ("aug/ft_wavlm", "kids/ft_wavlm", "kids/transfer_s0.5_ft", "kids/ft_wavlm_further"):
        assert_trained_and_capped(exp / job)
        assert load(exp / job / "config.yaml")["batch_bins"] == 200_000 < load(exp / job / "train.full.yaml")["batch_bins"]
    assert load(exp / "aug" / "ft_wavlm" / "config.yaml")["specaug"] == "specaug"
    assert "transfer" in (exp / "transfer_results.md").read_text().lower()
    report = (exp / "dry_run" / "transfer_report.md").read_text()  # one report: the asr.sh runs and the own stages
    for job in ("aug/ft_wavlm", "kids/ft_wavlm", "transfer_s0.5_ft", "ft_wavlm_further"):  # one name, two dirs
        assert f"| {job} |" in report, job
    for stage in ("transfer 4", "transfer 5", "transfer 6"):
        assert f"| {stage} |" in report, stage
    assert "(--dry_run_max_bins)" in report


def first_utterances_set(dry: Path, src: str, out: str, n: int) -> None:
    """data/<out> and its shape file: the first ``n`` utterances of data/<src> (a smaller training set)."""
    ids = [line.split()[0] for line in (dry / "data" / src / "wav.scp").read_text().splitlines()[:n]]
    for name in ("wav.scp", "text", "utt2spk", "utt2dur", "spk2utt"):
        lines = (dry / "data" / src / name).read_text().splitlines()
        if name == "spk2utt":
            spks = {line.split()[1] for line in (dry / "data" / out / "utt2spk").read_text().splitlines()}
            kept = [" ".join([spk, *[u for u in rest if u in ids]]) for spk, *rest in (x.split() for x in lines) if spk in spks]
        else:
            kept = [line for line in lines if line.split()[0] in ids]
        (dry / "data" / out).mkdir(parents=True, exist_ok=True)
        (dry / "data" / out / name).write_text("\n".join(kept) + "\n")
    shapes = (dry / "dump" / "shapes" / src / "speech_shape").read_text().splitlines()
    (dry / "dump" / "shapes" / out).mkdir(parents=True, exist_ok=True)
    (dry / "dump" / "shapes" / out / "speech_shape").write_text("\n".join(x for x in shapes if x.split()[0] in ids) + "\n")


def test_interface_paper_systems_dry_run(myst_dry, models):
    """Every layer-interface paper system (frozen narrow upstreams of the paper depths + the
    paper downstream, a 2 x 1024 BiLSTM) trains a capped step and has a RESULTS.md row. The
    training set is the first two utterances (the BiLSTM's CPU time grows with the batch; the
    configs and systems are those of the full data)."""
    first_utterances_set(myst_dry, "train", "train_if", 2)
    run(MYST, "run.sh", *dry_opts(myst_dry, models), "--stage", "4", "--stop_stage", "5", "--train_set", "train_if",
        "--whisper_model", "", "--whisper_hyp", "", "--ngpu", "0", "--gpu_inference", "false", "--nj", "1",
        "--interface_config", "conf/tuning/interface_paper.yaml",
        "--interface_systems", "conf/tuning/interface_systems_paper.yaml", "--interface_units", "char")
    systems = load(MYST / "conf" / "tuning" / "interface_systems_paper.yaml")
    results = (myst_dry / "RESULTS.md").read_text()
    for name in systems:
        assert_trained_and_capped(myst_dry / "exp" / f"if_{name}_char")
        assert f"|{name}|" in results, name
    # 31 BiLSTMs of 2 x 1024 cells: ~18 GB of checkpoints (model + AdamW state); pytest keeps
    # its last three temporary dirs, so free the disk here
    for path in (myst_dry / "exp").glob("if_*/*.pth"):
        path.unlink()


@pytest.mark.parametrize("config,upstream", [("sshr_mms300m.yaml", "mms_300m"), ("sshr_xlsr300m.yaml", "xls_r_300m")])
def test_sshr_paper_systems_dry_run(models, tmp_path, config, upstream):
    """Both SSHR base configs with every system of sshr_systems_paper.yaml on the generated
    multilingual corpus (24-layer narrow wav2vec2: layer 8, Cross-CTC 18/20/22, 23-24 replaced)."""
    dry = tmp_path / "dry"
    run(ML, "run.sh", *dry_opts(dry, models), "--multilingual_corpus_scale", "0.05",
        "--tiny_upstream_dir", "", "--pretrained_upstream_dir", "", "--langid_probe", "false",
        "--upstream_conf", "conf/tuning/upstreams_sshr.yaml", "--upstreams", upstream,
        "--sshr_config", f"conf/tuning/{config}", "--sshr_systems", "conf/tuning/sshr_systems_paper.yaml",
        "--sshr_units", "char", "--nj", "1")
    results = (dry / "RESULTS.md").read_text()
    for name in load(ML / "conf" / "tuning" / "sshr_systems_paper.yaml"):
        job = dry / "exp" / f"sshr_{name}_char"
        assert_trained_and_capped(job)
        assert load(job / "config.yaml")["encoder_conf"]["upstream"]["upstream"] in (upstream, "wav2vec2_local")
        assert name in results, name
