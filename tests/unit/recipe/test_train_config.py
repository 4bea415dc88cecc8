"""The one training-config renderer: warm-up counted as ESPnet's fixed-size samplers count
batches, the data keys, per-model / --set order, and never rewriting a trained job."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from espnet_delta.recipe import train_config
from espnet_delta.recipe.train_config import data_keys, render, warmup_schedule, warmup_steps, write_job_config


def test_warmup_steps_by_hand():
    # 103 utterances // 8 = 12 batches per epoch, x 10 epochs = 120 steps, 10 % = 12
    assert warmup_steps(103, 8, 10, 1, 0.1) == (12, 120)
    # accum_grad 4: 120 // 4 = 30 updates, round(3.0) = 3
    assert warmup_steps(103, 8, 10, 4, 0.1) == (3, 30)
    # fewer utterances than a batch: still one batch per epoch; 1 epoch, round(0.1) = 0 -> at least 1
    assert warmup_steps(5, 8, 1, 1, 0.1) == (1, 1)
    # more warm-up than steps is capped at the total: 2 steps, round(2 * 1.5) = 3 -> 2
    assert warmup_steps(16, 8, 1, 1, 1.5) == (2, 2)
    # floor, not ceil: 836 // 16 = 52 (ceil would give 53), x 20 = 1040, 10 % = 104
    assert warmup_steps(836, 16, 20, 1, 0.1) == (104, 1040)


def test_warmup_schedule_replaces_the_fraction():
    config = {"warmup_fraction": 0.1, "batch_type": "sorted", "batch_size": 8, "max_epoch": 10,
              "optim_conf": {"lr": 0.002}, "scheduler": "warmuplr"}
    warmup_schedule(config, 103, Path("x.yaml"))
    assert "warmup_fraction" not in config
    assert config["scheduler"] == "piecewiselinearwarmuplr"
    assert config["scheduler_conf"] == {"warmup_steps_list": [0, 12, 120], "warmup_lr_list": [0.0, 0.002, 0.0]}
    untouched = {"batch_type": "numel", "scheduler": "warmuplr"}
    warmup_schedule(untouched, 103, Path("x.yaml"))
    assert untouched == {"batch_type": "numel", "scheduler": "warmuplr"}
    with pytest.raises(ValueError, match="x.yaml: warmup_fraction needs batch_type sorted or unsorted"):
        warmup_schedule({"warmup_fraction": 0.1, "batch_type": "numel"}, 10, Path("x.yaml"))


def test_data_keys_sound_and_kaldi_ark():
    sound = data_keys(Path("data"), Path("dump/shapes"), "train", "dev", "char", Path("tok.txt"))
    assert sound == {
        "token_type": "char",
        "token_list": "tok.txt",
        "use_preprocessor": True,
        "train_data_path_and_name_and_type": [["data/train/wav.scp", "speech", "sound"], ["data/train/text", "text", "text"]],
        "valid_data_path_and_name_and_type": [["data/dev/wav.scp", "speech", "sound"], ["data/dev/text", "text", "text"]],
        "train_shape_file": ["dump/shapes/train/speech_shape"],
        "valid_shape_file": ["dump/shapes/dev/speech_shape"],
    }
    ark = data_keys(Path("data"), Path("dump/shapes"), "train", "dev", "word", Path("phn.txt"), "text.phn",
                    feats_dir=Path("dump/feats"))
    assert ark["train_data_path_and_name_and_type"] == [["dump/feats/train/feats.scp", "speech", "kaldi_ark"],
                                                        ["data/train/text.phn", "text", "text"]]
    assert ark["valid_shape_file"] == ["dump/feats/dev/feats_shape"] and ark["token_type"] == "word"


def test_render_order_base_per_model_set_from_set(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"a": 1, "frontend_conf": {"x": 0}, "per_model": {"m": {"a": 2, "b.c": 3}}}))
    table = tmp_path / "up.yaml"
    table.write_text("m: {upstream: m_local}\n")
    conf = render(base, "m", [f"{table}:m=frontend_conf.frontend_conf"], ["a=[1, two]", "d=null"])
    assert conf == {"a": [1, "two"], "b": {"c": 3}, "frontend_conf": {"x": 0, "frontend_conf": {"upstream": "m_local"}},
                    "d": None}
    assert render(base, "other") == {"a": 1, "frontend_conf": {"x": 0}}  # no entry: the base; per_model dropped
    with pytest.raises(ValueError, match="no entry 'n'"):
        render(base, None, [f"{table}:n=k"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        render(base, None, [], ["novalue"])


def test_a_trained_job_is_never_rewritten(tmp_path, caplog):
    job = tmp_path / "ft_x"
    assert write_job_config(job, {"max_epoch": 8}) is True
    assert yaml.safe_load((job / "train.yaml").read_text()) == {"max_epoch": 8}
    assert write_job_config(job, {"max_epoch": 9}) is True  # not trained yet: rendered again
    (job / "config.yaml").write_text("max_epoch: 9\n")  # ESPnet started training it
    with caplog.at_level(logging.WARNING):
        assert write_job_config(job, {"max_epoch": 10}) is False
    assert yaml.safe_load((job / "train.yaml").read_text()) == {"max_epoch": 9}
    assert str(job / "train.yaml") in caplog.text and "kept" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert write_job_config(job, {"max_epoch": 9}) is False  # same rendering: no warning
    assert caplog.text == ""
    # a checkpoint alone (config.yaml removed) also marks a trained job
    other = tmp_path / "if_y_phn"
    write_job_config(other, {"a": 1})
    (other / "valid.loss.best.pth").write_text("")
    assert write_job_config(other, {"a": 2}, checkpoint="valid.loss.best.pth") is False
    assert yaml.safe_load((other / "train.yaml").read_text()) == {"a": 1}


def test_per_model_must_be_a_table_of_mappings(tmp_path):
    base = tmp_path / "b.yaml"
    base.write_text("per_model: {m: 3}\n")
    with pytest.raises(ValueError, match="per_model must map model names"):
        train_config.render(base, "m")
