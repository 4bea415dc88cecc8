"""--merge_finetune_config: stage 8's two models fine-tuned in their own regime (ft_<ref>_merge on the
child set, ft_<ref>_adult on the adult set); without it the planner and stage 8 are as before."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import yaml

from espnet_delta.recipe import plan

REPO = Path(__file__).resolve().parents[3]
CONF = REPO / "egs2" / "mini_myst" / "asr1" / "conf"


def write_configs(tmp_path: Path) -> tuple:
    full = tmp_path / "finetune.yaml"
    full.write_text("optim_conf: {lr: 0.005}\nfrontend_conf: {frontend_conf: {}}\n")
    small = tmp_path / "finetune_merge.yaml"
    small.write_text("optim_conf: {lr: 0.0001}\nfrontend_conf: {frontend_conf: {}}\n")
    return full, small


def options(tmp_path: Path, *extra: str) -> list:
    full, _ = write_configs(tmp_path)
    return ["--exp_dir", str(tmp_path / "exp"), "--data_dir", str(tmp_path / "data"),
            "--shape_dir", str(tmp_path / "shapes"), "--token_list", str(tmp_path / "char.txt"),
            "--upstreams", "wavlm hubert", "--upstream_conf", str(CONF / "upstreams.yaml"),
            "--finetune_config", str(full), "--adult_train_set", "libri_train", "--adult_valid_set", "libri_dev",
            "--adult_upstreams", "hubert", *extra]


def names(tmp_path: Path, *extra: str, capsys) -> dict:
    plan.main(["names", *options(tmp_path, *extra)])
    values = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    return {k: shlex.split(v)[0] if v else "" for k, v in values.items()}


def lr(job: Path) -> float:
    return yaml.safe_load((job / "train.yaml").read_text())["optim_conf"]["lr"]


def test_without_the_option_nothing_changes(tmp_path, capsys):
    plan.main(["finetune", *options(tmp_path)])
    exp = tmp_path / "exp"
    assert capsys.readouterr().out.split() == [str(exp / n) for n in
                                               ("ft_wavlm", "ft_hubert", "ft_wavlm_adult", "ft_hubert_adult")]
    assert lr(exp / "ft_wavlm_adult") == 0.005
    assert names(tmp_path, capsys=capsys)["merge_child_dir"] == str(exp / "ft_wavlm")


def test_the_option_adds_the_merge_child_and_retunes_the_reference_adult(tmp_path, capsys):
    _, small = write_configs(tmp_path)
    exp = tmp_path / "exp"
    plan.main(["finetune", *options(tmp_path, "--merge_finetune_config", str(small))])
    assert capsys.readouterr().out.split() == [str(exp / n) for n in
                                               ("ft_wavlm", "ft_hubert", "ft_wavlm_merge", "ft_wavlm_adult",
                                                "ft_hubert_adult")]  # fmt: skip
    # the merged pair in the merge regime; the fusion reference and Table 4's adult deltas keep --finetune_config
    assert (lr(exp / "ft_wavlm_merge"), lr(exp / "ft_wavlm_adult")) == (0.0001, 0.0001)
    assert (lr(exp / "ft_wavlm"), lr(exp / "ft_hubert"), lr(exp / "ft_hubert_adult")) == (0.005, 0.005, 0.005)
    merge = yaml.safe_load((exp / "ft_wavlm_merge" / "train.yaml").read_text())
    assert merge["train_data_path_and_name_and_type"][0][0] == str(tmp_path / "data" / "train" / "wav.scp")
    assert merge["frontend_conf"]["frontend_conf"]["path_or_url"] == "downloads/upstreams_pt/wavlm.pt"
    # stage 5 decodes the merge child (its own RESULTS.md row), not the adult model
    plan.main(["decode", *options(tmp_path, "--merge_finetune_config", str(small)), "--write", "false",
               "--families", "finetune"])
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split()[4:] == [str(exp / n) for n in ("ft_wavlm", "ft_hubert", "ft_wavlm_merge")]
    # stage 8's child model
    values = names(tmp_path, "--merge_finetune_config", str(small), capsys=capsys)
    assert (values["merge_child_dir"], values["ref_adult_dir"]) == (str(exp / "ft_wavlm_merge"), str(exp / "ft_wavlm_adult"))


def test_without_an_adult_set_the_option_is_unused(tmp_path, capsys, caplog):
    _, small = write_configs(tmp_path)
    args = options(tmp_path, "--merge_finetune_config", str(small), "--adult_train_set", "", "--adult_upstreams", "")
    plan.main(["finetune", *args, "--write", "false"])
    assert [Path(p).name for p in capsys.readouterr().out.split()] == ["ft_wavlm", "ft_hubert"]
    assert "needs --adult_train_set" in caplog.text


def test_stage_8_merges_the_merge_child_with_the_adult_model(tmp_path):
    """The engine (print-only) hands stage 8 ft_<ref>_merge and ft_<ref>_adult; without the option ft_<ref>."""
    common = ["bash", str(REPO / "local" / "asr.sh"), "--print_only", "true", "--stage", "8", "--stop_stage", "8",
              "--adult_train_set", "libri_train", "--upstream_conf", str(CONF / "upstreams.yaml")]
    for extra, child in (([], "exp/ft_wavlm"), (["--merge_finetune_config", "conf/finetune_merge.yaml"],
                                                  "exp/ft_wavlm_merge")):  # fmt: skip
        proc = subprocess.run([*common, *extra], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (merge,) = [line for line in proc.stdout.splitlines() if "espnet_delta.recipe.merge_stage" in line]
        assert f"--child {child} --adult exp/ft_wavlm_adult --base downloads/upstreams_pt/wavlm.pt" in merge
    assert not any(tmp_path.iterdir()), "print-only wrote files"
