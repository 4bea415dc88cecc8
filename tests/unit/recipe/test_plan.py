"""The job planner: job folders and the checkpoint each family decodes, waves, decode groups,
listing without writing, the shell names and the result fragments."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from espnet_delta.recipe import plan

REPO = Path(__file__).resolve().parents[3]
MYST = REPO / "egs2" / "mini_myst" / "asr1" / "conf"
MULTI = REPO / "egs2" / "mini_multilingual" / "asr1" / "conf"


def options(tmp_path: Path, *extra: str) -> list:
    """Every opt-in family of the mini recipes enabled, paths under tmp_path."""
    return ["--exp_dir", str(tmp_path / "exp"), "--data_dir", str(tmp_path / "data"),
            "--shape_dir", str(tmp_path / "shapes"), "--feats_dir", str(tmp_path / "feats"),
            "--token_list", str(tmp_path / "char.txt"), "--phone_token_list", str(tmp_path / "phn.txt"),
            "--upstreams", "wavlm hubert", "--upstream_conf", str(MYST / "upstreams.yaml"),
            "--finetune_config", str(MYST / "finetune.yaml"), "--adult_train_set", "libri_train",
            "--adult_valid_set", "libri_dev", "--probe_config", str(MYST / "probe.yaml"), "--tiny_upstream_dir", "up",
            "--whisper_config", str(MYST / "whisper" / "finetune.yaml"),
            "--interface_config", str(MYST / "interface.yaml"), "--interface_systems", str(MYST / "interface_systems.yaml"),
            "--sshr_config", str(MULTI / "sshr.yaml"), "--sshr_systems", str(MULTI / "sshr_systems.yaml"),
            "--fusion_config", str(MYST / "fusion.yaml"), "--fusion_systems", str(MYST / "fusion_systems.yaml"), *extra]


def jobs_of(tmp_path, *args):
    return plan.enabled_jobs(plan.get_parser().parse_args(["train", *options(tmp_path), *args]), plan.FAMILIES[:-1])


def test_job_folders_and_checkpoints_per_family(tmp_path):
    by_dir = {job.dir.name: job for job in jobs_of(tmp_path)}
    expected = {  # dir -> (family, checkpoint, decoder, decoded in stage 5 or 9)
        "ft_wavlm": ("finetune", "valid.wer_ctc.best.pth", "greedy", True),
        "ft_hubert": ("finetune", "valid.wer_ctc.best.pth", "greedy", True),
        "ft_wavlm_adult": ("finetune", "valid.wer_ctc.best.pth", "greedy", False),
        "probe_wavlm_pretrained": ("probe", "valid.wer_ctc.best.pth", "greedy", True),
        "probe_wavlm_random": ("probe", "valid.wer_ctc.best.pth", "greedy", True),
        "ft_whisper": ("whisper", "valid.acc.best.pth", "beam", True),
        "ft_whisper_adult": ("whisper", "valid.acc.best.pth", "beam", False),
        "sshr_baseline_char": ("sshr", "valid.wer_ctc.best.pth", "greedy", True),
        "sshr_sshr_phn": ("sshr", "valid.loss.best.pth", "greedy", True),
        "if_hconv_char": ("interface", "valid.wer_ctc.best.pth", "greedy", True),
        "if_hconv_phn": ("interface", "valid.loss.best.pth", "greedy", True),
        "fusion_wavlm+dhubert_moe": ("fusion", "valid.wer_ctc.best.pth", "greedy", True),
    }
    for name, (family, ckpt, decoder, decoded) in expected.items():
        job = by_dir[name]
        assert (job.family, job.checkpoint, job.decoder, job.decoded) == (family, ckpt, decoder, decoded), name
        assert job.dir == tmp_path / "exp" / name
    assert by_dir["fusion_wavlm+dhubert_moe"].input_type == "kaldi_ark"
    assert by_dir["if_hconv_phn"].unit == "phn" and by_dir["ft_wavlm"].input_type == "sound"
    # 2 ft + 1 adult + 2 probes + 2 Whisper + 7 SSHR (5 char, 2 phn) + 18 interface (9 systems x char, phn) + 10 fusion
    assert len(by_dir) == 2 + 1 + 2 + 2 + 7 + 18 + 10
    assert not any(n.startswith("ft_hubert_adult") for n in by_dir)  # only --adult_upstreams add adult models


def test_waves_put_delta_fusion_interfaces_after_the_fine_tuning(tmp_path):
    first, second = plan.waves(plan.enabled_jobs(plan.get_parser().parse_args(["train", *options(tmp_path)]),
                                                 plan.STAGE4_FAMILIES))
    assert [j.dir.name for j in second] == ["if_wavlm+dhubert_hconv_char", "if_wavlm+dhubert_hconv_phn"]
    assert {"ft_wavlm", "ft_hubert", "if_hconv_char"} <= {j.dir.name for j in first}
    # without fine-tuning in this run, nothing waits (the models exist already, or rendering fails)
    first, second = plan.waves(plan.enabled_jobs(
        plan.get_parser().parse_args(["train", *options(tmp_path, "--finetune_config", "")]), plan.STAGE4_FAMILIES))
    assert second == [] and "if_wavlm+dhubert_hconv_char" in {j.dir.name for j in first}


def test_decode_groups_one_line_per_checkpoint_unit_and_decoder(tmp_path, capsys):
    plan.main(["decode", *options(tmp_path), "--write", "false", "--sshr_units", "char", "--interface_units", "phn"])
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    exp = tmp_path / "exp"
    assert [line[:4] for line in lines] == [["greedy", "valid.wer_ctc.best.pth", "char", "sound"],
                                           ["beam", "valid.acc.best.pth", "char", "sound"],
                                           ["greedy", "valid.loss.best.pth", "phn", "sound"]]
    assert lines[0][4:7] == [str(exp / "ft_wavlm"), str(exp / "ft_hubert"), str(exp / "probe_wavlm_pretrained")]
    assert str(exp / "ft_wavlm_adult") not in lines[0]  # decoded by stage 8, not 5
    assert lines[1][4:] == [str(exp / "ft_whisper")]
    assert all(p.startswith(str(exp / "if_")) for p in lines[2][4:]) and len(lines[2]) == 4 + 9  # 9 phone systems
    plan.main(["decode", "--families", "fusion", *options(tmp_path), "--write", "false"])
    fusion = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert len(fusion) == 1 and fusion[0][:4] == ["greedy", "valid.wer_ctc.best.pth", "char", "kaldi_ark"]
    assert len(fusion[0]) == 4 + 10
    assert not (tmp_path / "exp").exists()  # listing writes nothing


def test_listing_needs_no_data_and_writing_renders(tmp_path, capsys):
    plan.main(["train", *options(tmp_path), "--write", "false", "--families", "finetune probe"])
    assert capsys.readouterr().out.split() == [str(tmp_path / "exp" / n) for n in
                                               ("ft_wavlm", "ft_hubert", "ft_wavlm_adult", "probe_wavlm_pretrained",
                                                "probe_wavlm_random")]
    assert not (tmp_path / "exp").exists()
    plan.main(["probe", *options(tmp_path)])
    random = yaml.safe_load((tmp_path / "exp" / "probe_wavlm_random" / "train.yaml").read_text())
    assert random["frontend_conf"]["upstream"] == {"upstream": "wavlm_local", "path_or_url": "up/wavlm.pt"}
    pretrained = yaml.safe_load((tmp_path / "exp" / "probe_wavlm_pretrained" / "train.yaml").read_text())
    assert pretrained["frontend_conf"]["upstream"]["path_or_url"] == "downloads/upstreams_pt/wavlm.pt"
    assert pretrained["train_shape_file"] == [str(tmp_path / "shapes" / "train" / "speech_shape")]


def test_fine_tuning_config_per_model_and_adult_data(tmp_path):
    base = tmp_path / "ft.yaml"
    base.write_text(yaml.safe_dump({"frontend_conf": {"frontend_conf": {}}, "scheduler_conf": {"warmup_steps": 300},
                                    "per_model": {"hubert": {"scheduler_conf.warmup_steps": 600}}}))
    plan.main(["finetune", *options(tmp_path, "--finetune_config", str(base), "--adult_upstreams", "hubert")])
    exp = tmp_path / "exp"
    assert sorted(p.name for p in exp.iterdir()) == ["ft_hubert", "ft_hubert_adult", "ft_wavlm", "ft_wavlm_adult"]
    hubert = yaml.safe_load((exp / "ft_hubert" / "train.yaml").read_text())
    assert hubert["scheduler_conf"] == {"warmup_steps": 600} and "per_model" not in hubert
    assert hubert["frontend_conf"]["frontend_conf"] == {"upstream": "hubert_local",
                                                       "path_or_url": "downloads/upstreams_pt/hubert.pt"}
    adult = yaml.safe_load((exp / "ft_wavlm_adult" / "train.yaml").read_text())
    assert adult["scheduler_conf"] == {"warmup_steps": 300}
    assert adult["train_data_path_and_name_and_type"][0] == [str(tmp_path / "data" / "libri_train" / "wav.scp"),
                                                             "speech", "sound"]
    assert adult["valid_shape_file"] == [str(tmp_path / "shapes" / "libri_dev" / "speech_shape")]


def test_speed_perturbed_set_trains_the_child_fine_tunings_only(tmp_path):
    """--finetune_train_set (the engine's <train_set>_sp under --speed_perturb_factors): ft_<upstream>
    read its audio, text and shapes; the merge child, the adult model and the probes
    keep --train_set / --adult_train_set; validation stays on --valid_set."""
    for family in ("finetune", "probe"):
        plan.main([family, *options(tmp_path, "--finetune_train_set", "train_sp",
                                    "--merge_finetune_config", str(MYST / "finetune_merge.yaml"))])
    exp, data, shapes = tmp_path / "exp", tmp_path / "data", tmp_path / "shapes"

    def train_set_of(job: str) -> str:
        config = yaml.safe_load((exp / job / "train.yaml").read_text())
        assert config["valid_shape_file"] == [str(shapes / "dev" / "speech_shape")] or job.endswith("_adult"), job
        return Path(config["train_data_path_and_name_and_type"][0][0]).parent.name

    assert train_set_of("ft_wavlm") == train_set_of("ft_hubert") == "train_sp"
    ft = yaml.safe_load((exp / "ft_wavlm" / "train.yaml").read_text())
    assert ft["train_shape_file"] == [str(shapes / "train_sp" / "speech_shape")]
    assert [p[0] for p in ft["train_data_path_and_name_and_type"]] == [str(data / "train_sp" / "wav.scp"),
                                                                      str(data / "train_sp" / "text")]
    assert train_set_of("ft_wavlm_merge") == "train" and train_set_of("ft_wavlm_adult") == "libri_train"
    probes = [d.name for d in exp.iterdir() if d.name.startswith("probe_")]
    assert probes and {train_set_of(name) for name in probes} == {"train"}


def test_option_errors_are_named(tmp_path):
    with pytest.raises(SystemExit):
        plan.main(["finetune", *options(tmp_path, "--adult_train_set", "", "--adult_upstreams", "hubert")])
    with pytest.raises(ValueError, match="--tiny_upstream_dir"):
        plan.run(plan.get_parser().parse_args(["probe", *options(tmp_path, "--tiny_upstream_dir", "")]))


def test_shell_names_and_fragments(tmp_path, capsys):
    plan.main(["names", *options(tmp_path)])
    values = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    values = {k: shlex.split(v)[0] if v else "" for k, v in values.items()}
    exp = tmp_path / "exp"
    assert values["ft_ckpt"] == "valid.wer_ctc.best.pth" and values["whisper_ckpt"] == "valid.acc.best.pth"
    assert values["ft_ckpt_pattern"] == f"{exp}/ft_{{name}}/valid.wer_ctc.best.pth"
    assert values["adult_ckpt_pattern"] == f"{exp}/ft_{{name}}_adult/valid.wer_ctc.best.pth"
    assert values["ref_ft_dir"] == f"{exp}/ft_wavlm" and values["whisper_adult_dir"] == f"{exp}/ft_whisper_adult"
    assert values["reference_ckpt"] == "downloads/upstreams_pt/wavlm.pt"
    assert values["sshr_md"] == f"{exp}/sshr_results.md" and values["langid_probe_md"] == f"{exp}/analysis/langid_probe.md"
    # fragments present, in RESULTS.md order (not alphabetical, not creation order)
    for rel in ("analysis/langid_probe.md", "sshr_results.md", "interface_results.md", "merge_results.md"):
        (exp / rel).parent.mkdir(parents=True, exist_ok=True)
        (exp / rel).write_text("x\n")
    plan.main(["fragments", "--exp_dir", str(exp)])
    assert capsys.readouterr().out.split() == [str(exp / f) for f in ("interface_results.md", "merge_results.md",
                                                                      "sshr_results.md", "analysis/langid_probe.md")]
    for job in ("ft_b", "ft_a"):
        (exp / job / "decode" / "test" / "score_wer").mkdir(parents=True)
    (exp / "ft_b" / "decode" / "test" / "score_wer" / "score.json").write_text("{}")
    plan.main(["scored", "--exp_dir", str(exp)])
    assert capsys.readouterr().out.split() == [str(exp / "ft_b" / "decode" / "test" / "score_wer")]


def test_planning_again_keeps_a_trained_jobs_config(tmp_path, caplog):
    base = tmp_path / "ft.yaml"
    base.write_text("max_epoch: 8\nfrontend_conf: {frontend_conf: {}}\n")
    args = ["finetune", *options(tmp_path, "--finetune_config", str(base), "--adult_train_set", "")]
    plan.main(args)
    exp = tmp_path / "exp"
    (exp / "ft_wavlm" / "config.yaml").write_text("max_epoch: 8\n")  # ESPnet has trained (or is training) it
    base.write_text("max_epoch: 20\nfrontend_conf: {frontend_conf: {}}\n")
    caplog.clear()
    plan.main(args)
    assert yaml.safe_load((exp / "ft_wavlm" / "train.yaml").read_text())["max_epoch"] == 8
    assert yaml.safe_load((exp / "ft_hubert" / "train.yaml").read_text())["max_epoch"] == 20  # not trained: rendered
    assert str(exp / "ft_wavlm" / "train.yaml") in caplog.text
    assert str(exp / "ft_hubert" / "train.yaml") not in caplog.text


def test_dry_run_steps_cap_every_rendered_training(tmp_path, capsys):
    """--dry_run_steps N: train.yaml = the un-capped rendering (train.full.yaml) with max_epoch 1 and
    N x accum_grad iterations; without it no train.full.yaml is written."""
    for name in ("train", "dev", "libri_train", "libri_dev"):  # the shape files the warm-up schedules count
        (tmp_path / "shapes" / name).mkdir(parents=True)
        (tmp_path / "shapes" / name / "speech_shape").write_text("u1 16000\nu2 32000\n")
    plan.main(["train", *options(tmp_path), "--families", "finetune probe", "--dry_run_steps", "3"])
    jobs = [Path(line) for line in capsys.readouterr().out.split()]
    assert {j.name for j in jobs} >= {"ft_wavlm", "ft_wavlm_adult", "probe_wavlm_random"}
    for job in jobs:
        full = yaml.safe_load((job / "train.full.yaml").read_text())
        capped = yaml.safe_load((job / "train.yaml").read_text())
        assert capped == {**full, "max_epoch": 1, "num_iters_per_epoch": 3 * full.get("accum_grad", 1)}, job
    plan.main(["probe", *options(tmp_path / "plain")])
    job = Path(capsys.readouterr().out.split()[0])
    assert (job / "train.yaml").is_file() and not (job / "train.full.yaml").exists()


def test_hub_named_reference_checkpoint_is_its_mapped_file(tmp_path, capsys, monkeypatch):
    """Stage 8's base: a reference named by hub ({upstream: wavlm_large}) is the file the model map gives it."""
    (tmp_path / "ups.yaml").write_text("wavlm: {upstream: wavlm_large}\n")
    (tmp_path / "map.yaml").write_text("wavlm_large: models/WavLM-Large.pt\n")
    monkeypatch.setenv("ESPNET_DELTA_MODEL_MAP", str(tmp_path / "map.yaml"))
    plan.main(["names", "--exp_dir", str(tmp_path / "exp"), "--upstream_conf", str(tmp_path / "ups.yaml")])
    values = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert shlex.split(values["reference_ckpt"]) == [str(tmp_path / "models" / "WavLM-Large.pt")]
