"""The dry-run report's arithmetic on a hand-made usage log (docs/dry_run.md).

Every expected number is computed here by hand from the inputs written in the test:
full steps from the un-capped config, hours = steps x seconds per step / 3600, and
device hours = audio hours x (wall seconds / audio seconds).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from espnet_delta.bin import dry_run_report
from espnet_delta.recipe import dry_run
from espnet_delta.recipe.train_config import dry_run_cap


def write_job(job: Path, full: dict) -> None:
    job.mkdir(parents=True)
    (job / "train.full.yaml").write_text(yaml.safe_dump(full))
    (job / "train.yaml").write_text(yaml.safe_dump(dry_run_cap(full, 2)))


@pytest.fixture
def run(tmp_path):
    exp, data = tmp_path / "exp", tmp_path / "data"
    # a fine-tuning bounded by iterations: 20 epochs x 1200 iterations / accum_grad 2 = 12,000 steps
    write_job(exp / "ft_wavlm", {"max_epoch": 20, "num_iters_per_epoch": 1200, "accum_grad": 2, "batch_type": "numel",
                                 "train_data_path_and_name_and_type": [["data/train/wav.scp", "speech", "sound"]]})
    # a fusion on cached features with a fixed batch size: 10 epochs x (N // 16) batches
    write_job(exp / "fusion_x", {"max_epoch": 10, "batch_type": "sorted", "batch_size": 16,
                                 "train_data_path_and_name_and_type": [["dump/feats/train/feats.scp", "speech", "kaldi_ark"]]})
    for name, durs in {"train": [4.0, 6.0], "dev": [3.0], "test": [5.0]}.items():
        (data / name).mkdir(parents=True)
        (data / name / "utt2dur").write_text("".join(f"u{i} {d}\n" for i, d in enumerate(durs)))
        (data / name / "wav.scp").write_text("".join(f"u{i} x.wav\n" for i in range(len(durs))))
        (tmp_path / "dump" / "feats" / name).mkdir(parents=True)
        (tmp_path / "dump" / "feats" / name / "feats.scp").write_text("u0 a.ark:1\n")
    # the screening read 24 s (before the dry run's trim)
    (data / dry_run.AUDIO_JSON).write_text(json.dumps({"train": 10.0, "dev": 6.0, "test": 8.0, "libri_train": 99.0}))
    records = [
        {"stage": "1", "command": "espnet_delta.bin.transcribe_whisper", "wall_s": 5.0, "rss_mib": 900.0,
         "children_rss_mib": 0.0, "gpu_bytes": None, "params": 1000},
        {"stage": "1", "command": "espnet_delta.bin.transcribe_whisper", "wall_s": 7.0, "rss_mib": 950.0,
         "children_rss_mib": 0.0, "gpu_bytes": None, "params": 1000},
        {"stage": "4", "command": "espnet_delta.recipe.train_jobs", "wall_s": 100.0, "rss_mib": 500.0,
         "children_rss_mib": 2500.0, "gpu_bytes": None, "params": None},
        {"stage": "4", "command": "asr_train", "job": str(exp / "ft_wavlm"), "wall_s": 60.0, "rss_mib": 2500.0,
         "iterations": 4, "seconds_per_step": 0.5, "params": 3_000_000},
        {"stage": "6", "command": "espnet_delta.bin.extract_features", "wall_s": 10.0, "rss_mib": 700.0,
         "children_rss_mib": 0.0, "gpu_bytes": 3 * 2**20, "params": 2000},
        {"stage": "6", "command": "espnet_delta.bin.extract_features", "wall_s": 20.0, "rss_mib": 800.0,
         "children_rss_mib": 0.0, "gpu_bytes": None, "params": 2000},
        {"stage": "7", "command": "espnet_delta.recipe.train_jobs", "wall_s": 30.0, "rss_mib": 400.0,
         "children_rss_mib": 350.0, "gpu_bytes": None, "params": None},
        {"stage": "7", "command": "asr_train", "job": str(exp / "fusion_x"), "wall_s": 9.0, "rss_mib": 300.0,
         "iterations": 2, "seconds_per_step": 0.01, "params": 40_000},
    ]
    usage = exp / "dry_run" / "usage.jsonl"
    usage.parent.mkdir(parents=True)
    usage.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    return tmp_path, usage


def table(report: str, heading: str) -> list:
    section = report.split(heading, 1)[1].split("\n\n")
    rows = next(s for s in section if s.startswith("|")).splitlines()[2:]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows]


def test_report_arithmetic(run, capsys):
    root, usage = run
    out = root / "exp" / "dry_run" / "report.md"
    dry_run_report.main(["--usage", str(usage), "--exp_dir", str(root / "exp"), "--data_dir", str(root / "data"),
                         "--out", str(out), "--mean_utt_seconds", "5", "--device", "CPU test"])
    report = out.read_text()
    assert report == capsys.readouterr().out
    assert "CPU test" in report and "(M)" in report and "(A)" in report
    stages = {row[0]: row for row in table(report, "## Per stage")}
    assert set(stages) == {"1", "4", "6", "7"}
    assert stages["1"][1:3] == ["2", "12.0"] and stages["1"][3] == "950"  # processes, wall sum, peak RSS
    assert stages["4"][3] == "2,500" and stages["4"][5] == "3,000,000"   # children's peak RSS; the training's params
    assert stages["6"][4] == "3"                                          # peak GPU MiB where CUDA was used
    train = {row[1]: row for row in table(report, "## Trainings")}
    # ft_wavlm: 4 iterations / accum 2 = 2 steps run; 20 x 1200 / 2 = 12,000 steps x 0.5 s = 6000 s = 1.67 h
    assert train["ft_wavlm"][3] == "2" and train["ft_wavlm"][6] == "12,000" and train["ft_wavlm"][7] == "1.67"
    # fusion_x: train = 133 h (seed 001) x 3600 / 5 s = 95,760 utterances; 95,760 // 16 = 5,985 batches
    # x 10 epochs = 59,850 steps x 0.01 s = 598.5 s = 0.17 h
    assert train["fusion_x"][6] == "59,850" and train["fusion_x"][7] == "0.17"
    audio = {row[0]: row for row in table(report, "## Per audio second")}
    # screening: 12 s over 24 s of audio = 0.5 s/s; 240 h (seed 001's MyST) x 0.5 = 120 device hours
    assert audio["screening"][1:6] == ["12.0", "24.0", "0.5000", "240.0", "120.00"]
    # extraction: 30 s over 10 + 3 + 5 = 18 s = 1.6667 s/s; 133 + 21 + 25 = 179 h x 1.6667 = 298.33 h
    assert audio["extraction"][1:6] == ["30.0", "18.0", "1.6667", "179.0", "298.33"]
    total = 6000 / 3600 + 598.5 / 3600 + 120 + 179 * 30 / 18
    assert f"Total (A): {total:,.2f} device hours" in report


def test_hours_option_overrides_the_seed_amounts(run):
    root, usage = run
    out = root / "r.md"
    dry_run_report.main(["--usage", str(usage), "--exp_dir", str(root / "exp"), "--data_dir", str(root / "data"),
                         "--out", str(out), "--mean_utt_seconds", "5", "--hours", "train=10", "--screened_hours", "2"])
    report = out.read_text()
    train = {row[1]: row for row in table(report, "## Trainings")}
    # 10 h x 3600 / 5 = 7,200 utterances // 16 = 450 batches x 10 epochs = 4,500 steps
    assert train["fusion_x"][6] == "4,500"
    audio = {row[0]: row for row in table(report, "## Per audio second")}
    assert audio["screening"][4:6] == ["2.0", "1.00"]


def sshr_numel_training(root: Path) -> list:
    """An SSHR-like job (30 epochs, numel bins of 16,000,000, accum_grad 4) and its usage line: 200 s per step."""
    job = root / "exp" / "sshr_sshr_char"
    write_job(job, {"max_epoch": 30, "accum_grad": 4, "batch_type": "numel", "batch_bins": 16_000_000,
                    "train_data_path_and_name_and_type": [["data/train/wav.scp", "speech", "sound"]]})
    return [{"stage": "4", "command": "asr_train", "job": str(job), "wall_s": 9.0, "rss_mib": 1.0,
             "iterations": 8, "seconds_per_step": 200.0, "params": 1}]


def test_several_usage_logs_make_one_report(run):
    """transfer.sh's report: its own stages' log ("transfer N" labels) and its local/asr.sh runs' logs
    read as one: stage rows from every log, trainings of every log, a missing log read as empty."""
    root, usage = run
    own = root / "exp" / "dry_run" / "transfer_usage.jsonl"
    kids = root / "exp" / "kids" / "ft_wavlm"  # the same job name as the run's exp/ft_wavlm, in another exp dir
    write_job(kids, {"max_epoch": 1, "num_iters_per_epoch": 10,
                     "train_data_path_and_name_and_type": [["data/kids_train/wav.scp", "speech", "sound"]]})
    own.write_text(json.dumps({"stage": "transfer 5", "command": "espnet_delta.recipe.train_jobs", "wall_s": 8.0,
                               "rss_mib": 100.0, "children_rss_mib": 0.0}) + "\n"
                   + json.dumps({"stage": "transfer 5", "command": "asr_train", "job": str(kids), "wall_s": 5.0,
                                 "rss_mib": 90.0, "iterations": 2, "seconds_per_step": 1.0, "params": 1}) + "\n")
    out = root / "t.md"
    dry_run_report.main(["--usage", str(usage), str(own), str(root / "absent.jsonl"), "--exp_dir", str(root / "exp"),
                         "--data_dir", str(root / "data"), "--out", str(out), "--mean_utt_seconds", "5"])
    report = out.read_text()
    stages = {row[0]: row for row in table(report, "## Per stage")}
    assert set(stages) == {"1", "4", "6", "7", "transfer 5"}
    assert stages["transfer 5"][1:4] == ["1", "8.0", "100"]
    # two trainings called ft_wavlm: each named with its exp dir
    assert {row[1] for row in table(report, "## Trainings")} == {"exp/ft_wavlm", "kids/ft_wavlm", "fusion_x"}


def test_numel_batches_count_the_sets_samples(tmp_path):
    """A config batched by numel (the SSHR configs): steps per epoch = the set's samples at 16 kHz
    / batch_bins, rounded up, then / accum_grad."""
    records = sshr_numel_training(tmp_path)
    report = dry_run.build_report(records, dry_run.parse_hours(["train=10"]), 0.0, {}, {}, "CPU test")
    row = table(report, "## Trainings")[0]
    # 10 h = 36,000 s x 16,000 = 576,000,000 samples / 16,000,000 = 36 batches / accum 4 = 9 steps
    # x 30 epochs = 270 steps x 200 s = 54,000 s = 15 h
    assert row[6] == "270" and row[7] == "15.00"
    assert "No full-run hours" not in report


def test_hours_none_leaves_unknown_sets_uncounted_and_says_how_to_give_them(tmp_path):
    """--dry_run_hours none (a corpus the seeds give no hours for): the MyST amounts of seed 001 are
    not applied to a set called train; the report names the set and the option."""
    records = sshr_numel_training(tmp_path)
    report = dry_run.build_report(records, dry_run.parse_hours(["none"]), 0.0, {}, {}, "CPU test")
    assert table(report, "## Trainings")[0][6:8] == ["-", "-"]
    assert 'No full-run hours for `train`' in report and '--dry_run_hours "train=H"' in report
    assert dry_run.parse_hours(["seed001", "train=5"]) == {**dry_run.SEED_HOURS, "train": 5.0}
    assert dry_run.parse_hours([]) == dry_run.SEED_HOURS


def test_batch_cap_is_written_and_scaled_back_in_the_hours(tmp_path):
    """--dry_run_max_batch: a batch_size config trains on at most N utterances per batch; numel
    configs keep their bins; the report multiplies the measured step time by full batch / N."""
    full = {"max_epoch": 8, "num_iters_per_epoch": 1000, "accum_grad": 2, "batch_type": "unsorted", "batch_size": 16,
            "train_data_path_and_name_and_type": [["data/train/wav.scp", "speech", "sound"]]}
    assert dry_run_cap(full, 1, max_batch=4)["batch_size"] == 4
    assert dry_run_cap(full, 1, max_batch=32)["batch_size"] == 16  # never raised
    numel = {"max_epoch": 2, "batch_type": "numel", "batch_bins": 100, "batch_size": 20}
    assert dry_run_cap(numel, 1, max_batch=4)["batch_size"] == 20
    job = tmp_path / "exp" / "ft_whisper"
    job.mkdir(parents=True)
    (job / "train.full.yaml").write_text(yaml.safe_dump(full))
    (job / "train.yaml").write_text(yaml.safe_dump(dry_run_cap(full, 1, max_batch=4)))
    records = [{"stage": "4", "command": "asr_train", "job": str(job), "wall_s": 9.0, "rss_mib": 1.0,
                "iterations": 2, "seconds_per_step": 90.0, "params": 1}]
    report = dry_run.build_report(records, dry_run.SEED_HOURS, 0.0, {}, {}, "CPU test")
    row = table(report, "## Trainings")[0]
    # 8 x 1000 / 2 = 4,000 steps x 90 s x 16 / 4 = 1,440,000 s = 400 h
    assert row[4] == "90.000" and row[6] == "4,000" and row[7] == "400.00"
    assert "Batch capped at 4 of the config's 16 utterances (--dry_run_max_batch): `ft_whisper`" in report


def test_bins_cap_is_written_and_scaled_back_in_the_hours(tmp_path):
    """--dry_run_max_bins: a numel config (theta_aug's 4,000,000 samples) trains on at most N input
    samples per batch; batch_size configs keep their batch; full steps still count the config's
    bins, and the report multiplies the measured step time by full bins / N."""
    full = {"max_epoch": 10, "accum_grad": 1, "batch_type": "numel", "batch_bins": 4_000_000,
            "train_data_path_and_name_and_type": [["data/train_sp/wav.scp", "speech", "sound"]]}
    assert dry_run_cap(full, 1, max_bins=400_000)["batch_bins"] == 400_000
    assert dry_run_cap(full, 1, max_bins=8_000_000)["batch_bins"] == 4_000_000  # never raised
    utts = {"max_epoch": 2, "batch_type": "unsorted", "batch_size": 16}
    assert dry_run_cap(utts, 1, max_bins=100) == dry_run_cap(utts, 1)
    job = tmp_path / "exp" / "aug" / "ft_wavlm"
    job.mkdir(parents=True)
    (job / "train.full.yaml").write_text(yaml.safe_dump(full))
    (job / "train.yaml").write_text(yaml.safe_dump(dry_run_cap(full, 1, max_bins=400_000)))
    records = [{"stage": "4", "command": "asr_train", "job": str(job), "wall_s": 9.0, "rss_mib": 1.0,
                "iterations": 1, "seconds_per_step": 36.0, "params": 1}]
    report = dry_run.build_report(records, dry_run.parse_hours(["train_sp=10"]), 0.0, {}, {}, "CPU test")
    row = table(report, "## Trainings")[0]
    # 10 h x 3600 x 16,000 = 576,000,000 samples / 4,000,000 = 144 steps x 10 epochs = 1,440 steps
    # x 36 s x 4,000,000 / 400,000 = 518,400 s = 144 h
    assert row[6] == "1,440" and row[7] == "144.00"
    assert ("Batch capped at 400,000 of the config's 4,000,000 input samples (--dry_run_max_bins): `ft_wavlm`"
            in report)


def test_processes_without_a_stage_are_labelled_by_command():
    """Usage lines without $ESPNET_DELTA_STAGE (a command run outside the engine's stages): one row per
    command, labelled '<command> (no stage)', after the numbered stages and setup; never an empty label."""
    records = [{"stage": "", "command": "espnet_delta.recipe.plan", "wall_s": 1.0, "rss_mib": 50.0},
               {"command": "espnet_delta.recipe.plan", "wall_s": 2.0, "rss_mib": 60.0},  # no stage key at all
               {"stage": "", "command": "espnet_delta.bin.score", "wall_s": 4.0, "rss_mib": 70.0},
               {"stage": "setup", "command": "espnet_delta.recipe.plan", "wall_s": 0.5, "rss_mib": 40.0},
               {"stage": "4", "command": "espnet_delta.recipe.train_jobs", "wall_s": 8.0, "rss_mib": 80.0}]
    report = dry_run.build_report(records, dry_run.SEED_HOURS, 240.0, {}, {}, "CPU test")
    rows = table(report, "## Per stage")
    assert [row[0] for row in rows] == ["4", "setup", "espnet_delta.recipe.plan (no stage)",
                                        "espnet_delta.bin.score (no stage)"]
    assert rows[2][1:4] == ["2", "3.0", "60"]  # two processes, 1 + 2 wall s, the larger peak RSS


def test_cap_keeps_everything_else():
    full = {"max_epoch": 20, "num_iters_per_epoch": 1200, "accum_grad": 2, "batch_bins": 4000000, "optim": "adamw"}
    capped = dry_run_cap(full, 3)
    assert capped == {**full, "max_epoch": 1, "num_iters_per_epoch": 6}  # 3 steps x accum_grad 2 iterations
    assert full["max_epoch"] == 20  # the full rendering is not changed
    assert dry_run_cap({"max_epoch": 10, "batch_size": 16}, 2)["num_iters_per_epoch"] == 2


def test_trim_keeps_the_first_utterances(tmp_path):
    d = tmp_path / "data" / "dev"
    d.mkdir(parents=True)
    ids = ["c", "a", "d", "b"]
    (d / "wav.scp").write_text("".join(f"{u} /x/{u}.flac\n" for u in ids))
    (d / "text").write_text("".join(f"{u} WORDS OF {u}\n" for u in ids))
    (d / "utt2spk").write_text("".join(f"{u} s{u in 'ab'}\n" for u in ids))
    (d / "utt2dur").write_text("".join(f"{u} 2.0\n" for u in ids))
    dry_run.trim(tmp_path / "data", ["dev", "absent"], 2)
    assert (d / "text").read_text() == "a WORDS OF a\nb WORDS OF b\n"
    assert (d / "spk2utt").read_text() == "sTrue a b\n"
    assert json.loads((tmp_path / "data" / dry_run.AUDIO_JSON).read_text()) == {"dev": 8.0}


def test_usage_line_of_a_command(tmp_path):
    """A command that calls setup_logging appends one line at exit, with the parameters it loaded."""
    log = tmp_path / "usage.jsonl"
    code = ("from espnet_delta.cli import setup_logging\nsetup_logging()\nimport torch\n"
            "m = torch.nn.Linear(3, 4)\nm.load_state_dict(m.state_dict())\n")
    env = {**os.environ, "ESPNET_DELTA_USAGE_LOG": str(log), "ESPNET_DELTA_STAGE": "6"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    (line,) = log.read_text().splitlines()
    record = json.loads(line)
    assert record["stage"] == "6" and record["params"] == 3 * 4 + 4 and record["models_loaded"] == 1
    assert record["rss_mib"] > 0 and record["wall_s"] > 0 and record["gpu_bytes"] is None


def test_train_log_stats(tmp_path):
    from espnet_delta.asr.train import train_log_stats

    log = tmp_path / "train.log"
    log.write_text("    Total Number of model parameters: 359.57 K\n"
                   "2026 (trainer:394) INFO: 1epoch results: [train] iter_time=0.003, loss=2.0, train_time=0.051, "
                   "time=0.41 seconds, total_count=8, [valid] loss=3.0, time=0.04 seconds, total_count=2\n")
    assert train_log_stats(log) == {"params": 359_570, "iterations": 8, "seconds_per_step": 0.051}
    assert train_log_stats(tmp_path / "absent.log") == {"params": None, "iterations": None, "seconds_per_step": None}
