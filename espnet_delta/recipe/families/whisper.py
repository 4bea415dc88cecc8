"""Whisper fine-tuning through ESPnet (stage 4, opt-in ``--whisper_config``): ``ft_whisper`` on
the child train set and, with ``--adult_train_set``, ``ft_whisper_adult`` (merged with it in
stage 8). ``--whisper_model`` (hub name or checkpoint file) sets ``encoder_conf.whisper_model``
and ``decoder_conf.whisper_model`` together, so encoder and decoder come from one model; the
two jobs differ only in their data. Stage 5 decodes ``ft_whisper`` by beam search.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

from espnet_delta.fileio import load_yaml
from espnet_delta.recipe.names import ADULT_SUFFIX, CKPT_ACC, FT_PREFIX, WHISPER_NAME, Job
from espnet_delta.recipe.train_config import data_keys, render

FAMILY = "whisper"
WHISPER_CLASSES = ("whisper", "whisper_file")


def check_base(config_path: Path) -> None:
    """The base config must fine-tune a Whisper encoder-decoder selected on dev accuracy."""
    config = load_yaml(config_path)
    if config.get("encoder") not in WHISPER_CLASSES or config.get("decoder") not in WHISPER_CLASSES:
        raise ValueError(
            f"{config_path}: expected 'encoder: whisper_file' and 'decoder: whisper_file', "
            f"got encoder {config.get('encoder')!r}, decoder {config.get('decoder')!r}"
        )
    criteria = [list(c) for c in config.get("best_model_criterion") or []]
    if not criteria or criteria[0][:2] != ["valid", "acc"]:
        raise ValueError(f"{config_path}: the first best_model_criterion must be [valid, acc, max] ({CKPT_ACC} is decoded)")


def jobs(settings) -> List[Job]:
    if not settings.whisper_config:
        return []
    check_base(settings.whisper_config)
    model_sets = []
    if settings.whisper_model:
        model_sets = [f"{key}.whisper_model={settings.whisper_model}" for key in ("encoder_conf", "decoder_conf")]
    plan = [("", settings.train_set, settings.valid_set)]
    if settings.adult_train_set:
        if not settings.adult_valid_set:
            raise ValueError("--adult_train_set needs --adult_valid_set")
        plan.append((ADULT_SUFFIX, settings.adult_train_set, settings.adult_valid_set))
    out = []
    for suffix, train_set, valid_set in plan:
        def config(train_set=train_set, valid_set=valid_set) -> dict:
            conf = render(settings.whisper_config, sets=model_sets)
            conf.update(data_keys(settings.data_dir, settings.shape_dir, train_set, valid_set, settings.token_type,
                                  settings.token_list))
            return conf

        out.append(Job(settings.exp_dir / f"{FT_PREFIX}{WHISPER_NAME}{suffix}", FAMILY, CKPT_ACC, decoder="beam",
                       decoded=not suffix, config=config))
    return out
