"""What the families render: SSHR's k written once, Whisper's child and adult jobs, the fusion
systems' warm-up counted as the other families count it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from espnet_delta.recipe import plan

REPO = Path(__file__).resolve().parents[3]


def run(*args):
    return plan.run(plan.get_parser().parse_args(list(args)))


def test_sshr_writes_k_once_into_frontend_and_encoder(tmp_path):
    base = {"frontend": "sshr", "frontend_conf": {"layer": 2}, "encoder": "sshr", "encoder_conf": {"cross_ctc_heads": 4},
            "model_conf": {"ctc_weight": 1.0}, "max_epoch": 1}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "systems.yaml").write_text(yaml.safe_dump({
        "plain": {"language_frame": False},
        "full": {"layer": 3, "language_frame": True, "drop_layers": [6], "cross_ctc_layers": [4], "interctc_weight": 0.3,
                 "units": ["char"]},
    }))
    (tmp_path / "up.yaml").write_text("wavlm: {upstream: wavlm_local, path_or_url: up.pt}\n")
    args = ["sshr", "--sshr_systems", str(tmp_path / "systems.yaml"), "--sshr_config", str(tmp_path / "base.yaml"),
            "--upstream_conf", str(tmp_path / "up.yaml"), "--upstreams", "wavlm", "--data_dir", "data",
            "--shape_dir", str(tmp_path / "shapes"), "--token_list", "tokens.txt", "--phone_token_list", "phn.txt",
            "--exp_dir", str(tmp_path / "exp")]
    assert run(*args, "--sshr_units", "phn") == [str(tmp_path / "exp" / "sshr_plain_phn")]  # full is char only
    run(*args, "--sshr_units", "char")
    full = yaml.safe_load((tmp_path / "exp" / "sshr_full_char" / "train.yaml").read_text())
    up = {"upstream": "wavlm_local", "path_or_url": "up.pt"}
    assert full["frontend_conf"] == {"layer": 3, "upstream": up}
    assert full["encoder_conf"] == {"upstream": up, "language_frame_layer": 3, "language_frame": True, "drop_layers": [6],
                                    "cross_ctc_layers": [4], "cross_ctc_heads": 4}
    assert full["model_conf"] == {"ctc_weight": 1.0, "interctc_weight": 0.3} and full["token_type"] == "char"
    plain = yaml.safe_load((tmp_path / "exp" / "sshr_plain_phn" / "train.yaml").read_text())
    assert plain["encoder_conf"]["language_frame_layer"] == 2 and plain["token_type"] == "word"
    assert plain["token_list"] == "phn.txt" and plain["best_model_criterion"] == [["valid", "loss", "min"]]
    assert plain["train_data_path_and_name_and_type"][1] == ["data/train/text.phn", "text", "text"]
    (tmp_path / "systems.yaml").write_text("bad: {language_frames: true}\n")
    with pytest.raises(ValueError, match=r"unknown keys \['language_frames'\]"):
        run(*args, "--sshr_units", "char")


def test_whisper_child_and_adult_differ_only_in_their_data(tmp_path):
    out = run("whisper", "--whisper_config", str(REPO / "egs2/mini_myst/asr1/conf/whisper/finetune.yaml"),
              "--whisper_model", "ckpt/w.pt", "--data_dir", "data", "--shape_dir", "dump/shapes", "--token_list", "tok.txt",
              "--exp_dir", str(tmp_path), "--adult_train_set", "libri_train", "--adult_valid_set", "libri_dev")
    assert out == [str(tmp_path / "ft_whisper"), str(tmp_path / "ft_whisper_adult")]
    adult = yaml.safe_load((tmp_path / "ft_whisper_adult" / "train.yaml").read_text())
    assert adult["encoder_conf"]["whisper_model"] == adult["decoder_conf"]["whisper_model"] == "ckpt/w.pt"
    assert adult["train_data_path_and_name_and_type"] == [["data/libri_train/wav.scp", "speech", "sound"],
                                                          ["data/libri_train/text", "text", "text"]]
    assert adult["valid_shape_file"] == ["dump/shapes/libri_dev/speech_shape"]
    assert adult["token_type"] == "char" and adult["token_list"] == "tok.txt"
    child = yaml.safe_load((tmp_path / "ft_whisper" / "train.yaml").read_text())
    assert {k: v for k, v in child.items() if "data" not in k and "shape" not in k} == \
        {k: v for k, v in adult.items() if "data" not in k and "shape" not in k}


def test_whisper_refuses_a_non_whisper_config(tmp_path):
    conf = tmp_path / "ctc.yaml"
    conf.write_text("encoder: identity\ndecoder: none\n")
    with pytest.raises(ValueError, match="expected 'encoder: whisper_file'"):
        run("whisper", "--whisper_config", str(conf), "--exp_dir", str(tmp_path))


def test_fusion_warmup_counts_batches_as_espnet(tmp_path):
    """103 cached utterances, batch 8, 10 epochs, 10 % warm-up: 12 batches per epoch (ESPnet's sorted
    sampler floors; the old ceil(103 / 8) = 13 never let the learning rate reach its planned end)."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "frontend": "cached_fusion", "frontend_conf": {"head_norm": True}, "optim_conf": {"lr": 0.002},
        "scheduler": "piecewiselinearwarmuplr", "warmup_fraction": 0.1, "max_epoch": 10, "batch_type": "sorted",
        "batch_size": 8}))
    (tmp_path / "systems.yaml").write_text("a_concat: {fusion: concat, mode: delta, deltas: [hubert]}\n")
    feats = tmp_path / "feats" / "train"
    feats.mkdir(parents=True)
    (feats / "feats.scp").write_text("".join(f"u{i} f.ark:{i}\n" for i in range(103)))
    (feats / "layout.json").write_text(json.dumps({"streams": [{"name": "wavlm_local.ft", "dim": 4},
                                                               {"name": "hubert_local.delta", "dim": 4}]}))
    run("fusion", "--fusion_systems", str(tmp_path / "systems.yaml"), "--fusion_config", str(tmp_path / "base.yaml"),
        "--feats_dir", str(tmp_path / "feats"), "--data_dir", "data", "--exp_dir", str(tmp_path / "exp"),
        "--token_list", "tok.txt")
    conf = yaml.safe_load((tmp_path / "exp" / "fusion_a_concat" / "train.yaml").read_text())
    assert conf["scheduler_conf"] == {"warmup_steps_list": [0, 12, 120], "warmup_lr_list": [0.0, 0.002, 0.0]}
    assert conf["frontend_conf"] == {"head_norm": True, "layout": str(feats / "layout.json"), "reference": "wavlm_local",
                                     "deltas": ["hubert"], "mode": "delta", "fusion": "concat"}
    assert conf["train_data_path_and_name_and_type"] == [[str(feats / "feats.scp"), "speech", "kaldi_ark"],
                                                         ["data/train/text", "text", "text"]]
    assert conf["train_shape_file"] == [str(feats / "feats_shape")]


def test_fusion_heads_train_on_the_fusion_train_set_and_validate_on_dev(tmp_path):
    """--fusion_train_set (the engine's <train_set>_sp with --fusion_speed_perturb true): the layout,
    features, text, shapes and the warm-up's batch count are that set's (309 utterances, batch 8:
    38 batches per epoch, 10 epochs, 10 % warm-up: 38 of 380 steps); validation stays on dev."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "frontend": "cached_fusion", "optim_conf": {"lr": 0.002}, "scheduler": "piecewiselinearwarmuplr",
        "warmup_fraction": 0.1, "max_epoch": 10, "batch_type": "sorted", "batch_size": 8}))
    (tmp_path / "systems.yaml").write_text("a_concat: {fusion: concat, mode: delta, deltas: [hubert]}\n")
    layout = json.dumps({"streams": [{"name": "wavlm_local.ft", "dim": 4}, {"name": "hubert_local.delta", "dim": 4}]})
    for name, count in (("train", 103), ("train_sp", 309)):
        feats = tmp_path / "feats" / name
        feats.mkdir(parents=True)
        (feats / "feats.scp").write_text("".join(f"u{i} f.ark:{i}\n" for i in range(count)))
        (feats / "layout.json").write_text(layout)
    run("fusion", "--fusion_systems", str(tmp_path / "systems.yaml"), "--fusion_config", str(tmp_path / "base.yaml"),
        "--feats_dir", str(tmp_path / "feats"), "--data_dir", "data", "--exp_dir", str(tmp_path / "exp"),
        "--token_list", "tok.txt", "--fusion_train_set", "train_sp")
    conf = yaml.safe_load((tmp_path / "exp" / "fusion_a_concat" / "train.yaml").read_text())
    sp = tmp_path / "feats" / "train_sp"
    assert conf["frontend_conf"]["layout"] == str(sp / "layout.json")
    assert conf["train_data_path_and_name_and_type"] == [[str(sp / "feats.scp"), "speech", "kaldi_ark"],
                                                         ["data/train_sp/text", "text", "text"]]
    assert conf["train_shape_file"] == [str(sp / "feats_shape")]
    assert conf["valid_data_path_and_name_and_type"][0] == [str(tmp_path / "feats" / "dev" / "feats.scp"), "speech",
                                                            "kaldi_ark"]
    assert conf["scheduler_conf"]["warmup_steps_list"] == [0, 38, 380]


def test_transfer_jobs_continue_from_the_transferred_and_the_baseline_model(tmp_path):
    conf_dir = REPO / "egs2/mini_myst/asr1/conf"
    out = run("transfer", "--exp_dir", str(tmp_path / "kids"), "--upstreams", "wavlm",
              "--upstream_conf", str(conf_dir / "upstreams.yaml"), "--finetune_config", str(conf_dir / "finetune.yaml"),
              "--train_set", "kids_train", "--valid_set", "kids_dev", "--transfer_scale", "0.25",
              "--further_epochs", "2", "--further_lr", "0.001")
    assert out == [str(tmp_path / "kids" / "transfer_s0.25_ft"), str(tmp_path / "kids" / "ft_wavlm_further")]
    conf = yaml.safe_load((tmp_path / "kids" / "transfer_s0.25_ft" / "train.yaml").read_text())
    assert conf["init_param"] == [str(tmp_path / "kids" / "transfer_s0.25" / "valid.wer_ctc.best.pth")]
    assert (conf["max_epoch"], conf["optim_conf"]["lr"], conf["scheduler"], conf["scheduler_conf"]) == (2, 0.001, None, {})
    assert conf["valid_data_path_and_name_and_type"][0] == ["data/kids_dev/wav.scp", "speech", "sound"]
