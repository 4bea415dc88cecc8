"""The planner's input check (--check_inputs, espnet_delta/recipe/inputs.py): a training whose data
an earlier stage did not write stops the planner with one line naming the file and the rerun,
before any config is written; a finished job is not checked."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from espnet_delta.recipe import plan

CONF = Path(__file__).resolve().parents[3] / "egs2" / "mini_myst" / "asr1" / "conf"


def tree(root: Path, data_sets=("train", "dev", "libri_train", "libri_dev"), shape_sets=("train", "dev")) -> None:
    """What stages 1-2 leave: Kaldi dirs, shape files, the token list (contents are not read)."""
    for name in data_sets:
        (root / "data" / name).mkdir(parents=True)
        (root / "data" / name / "wav.scp").write_text("u1 /x/u1.wav\n")
        (root / "data" / name / "text").write_text("u1 A\n")
    for name in shape_sets:
        (root / "shapes" / name).mkdir(parents=True)
        (root / "shapes" / name / "speech_shape").write_text("u1 16000\n")
    (root / "char.txt").write_text("<blank>\nA\n")


def run_plan(root: Path, *extra: str) -> None:
    plan.main(["train", "--families", "finetune", "--check_inputs", "true", "--exp_dir", str(root / "exp"),
               "--data_dir", str(root / "data"), "--shape_dir", str(root / "shapes"), "--token_list", str(root / "char.txt"),
               "--upstreams", "wavlm", "--upstream_conf", str(CONF / "upstreams.yaml"),
               "--finetune_config", str(CONF / "finetune.yaml"), "--adult_train_set", "libri_train",
               "--adult_valid_set", "libri_dev", *extra])


def error_lines(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_adult_set_without_shapes_names_stage_2_and_the_option(tmp_path, caplog):
    """Stages 1-2 ran without --adult_train_set: data/libri_* exist (the corpus has LibriSpeech), their shapes not."""
    tree(tmp_path)
    with pytest.raises(SystemExit) as info:
        run_plan(tmp_path)
    assert info.value.code == 1
    (line,) = error_lines(caplog)
    assert str(tmp_path / "shapes" / "libri_train" / "speech_shape") in line and "ft_wavlm_adult" in line
    assert "--stage 2 --stop_stage 2 --adult_train_set libri_train" in line and "\n" not in line
    assert not list(tmp_path.glob("exp/*/train.yaml")), "a config was written before the check"


def test_adult_set_never_prepared_names_stage_1(tmp_path, caplog):
    tree(tmp_path, data_sets=("train", "dev"))
    with pytest.raises(SystemExit):
        run_plan(tmp_path)
    (line,) = error_lines(caplog)
    assert str(tmp_path / "data" / "libri_train" / "wav.scp") in line
    assert "--stage 1 --stop_stage 2 --adult_train_set libri_train" in line and "--librispeech" in line


def test_present_inputs_render_and_finished_jobs_are_not_checked(tmp_path, capsys):
    tree(tmp_path, shape_sets=("train", "dev", "libri_train", "libri_dev"))
    run_plan(tmp_path)
    assert len(capsys.readouterr().out.split()) == 2 and (tmp_path / "exp" / "ft_wavlm_adult" / "train.yaml").is_file()
    # a finished job (train_jobs' .done) needs no data: its inputs may be gone
    for name in ("libri_train", "libri_dev"):
        (tmp_path / "shapes" / name / "speech_shape").unlink()
    (tmp_path / "exp" / "ft_wavlm_adult" / ".done").write_text("1 s\n")
    run_plan(tmp_path)
