"""Render the ESPnet configs of the Whisper fine-tunings (stage 4, opt-in Whisper path).

    python -m espnet_delta.recipe.whisper_jobs --config conf/whisper/finetune.yaml \\
        --whisper_model downloads/whisper/tiny_random.pt --data_dir data --shape_dir dump/shapes \\
        --token_type char --token_list data/token_list/char/tokens.txt --exp_dir exp \\
        --train_set train --valid_set dev --adult_train_set libri_train --adult_valid_set libri_dev

writes ``<exp_dir>/ft_<name>/train.yaml`` (fine-tuning on the child train set) and, with
``--adult_train_set``, ``<exp_dir>/ft_<name>_adult/train.yaml`` (the adult model stage 8
merges with it), and prints the job directories, one per line, for
``espnet_delta.recipe.train_jobs``. ``<name>`` is ``--name`` (default ``whisper``), so the
rows read ``ft_whisper`` beside ``ft_wavlm``. Each config is rendered as the SSL fine-tunings
are (``espnet_delta.recipe.render_config`` with the data, shape and token keys of
``local/asr.sh``'s ``render_espnet_config``); ``--whisper_model`` (a hub name or a checkpoint
file) sets ``encoder_conf.whisper_model`` and ``decoder_conf.whisper_model`` together, so
encoder and decoder always come from one model. The two jobs differ only in their data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from espnet_delta.bin import add_log_level_argument, setup_logging
from espnet_delta.fileio import load_yaml
from espnet_delta.recipe import render_config

WHISPER_CLASSES = ("whisper", "whisper_file")
MODEL_NAME = "valid.acc.best.pth"  # ESPnet's name for the checkpoint of best_model_criterion [valid, acc, max]


def check_base(config_path: Path) -> None:
    """The base config must fine-tune a Whisper encoder-decoder (refused otherwise, naming the file)."""
    config = load_yaml(config_path)
    if config.get("encoder") not in WHISPER_CLASSES or config.get("decoder") not in WHISPER_CLASSES:
        raise ValueError(
            f"{config_path}: expected 'encoder: whisper_file' and 'decoder: whisper_file', "
            f"got encoder {config.get('encoder')!r}, decoder {config.get('decoder')!r}"
        )
    criteria = [list(c) for c in config.get("best_model_criterion") or []]
    if not criteria or criteria[0][:2] != ["valid", "acc"]:
        raise ValueError(f"{config_path}: the first best_model_criterion must be [valid, acc, max] ({MODEL_NAME} is decoded)")


def render_args(args, train_set: str, valid_set: str, job: Path) -> List[str]:
    """``render_config`` arguments of one job (the keys of asr.sh's ``render_espnet_config``)."""

    def data(s: str) -> str:
        d = args.data_dir / s
        return f"[[{d}/wav.scp, speech, sound], [{d}/text, text, text]]"

    cmd = [
        "--base", str(args.config), "--out", str(job / "train.yaml"),
        "--set", f"token_type={args.token_type}", "--set", f"token_list={args.token_list}",
        "--set", "use_preprocessor=true",
        "--set", f"train_data_path_and_name_and_type={data(train_set)}",
        "--set", f"valid_data_path_and_name_and_type={data(valid_set)}",
        "--set", f"train_shape_file=[{args.shape_dir / train_set / 'speech_shape'}]",
        "--set", f"valid_shape_file=[{args.shape_dir / valid_set / 'speech_shape'}]",
    ]
    if args.whisper_model:
        for key in ("encoder_conf", "decoder_conf"):
            cmd += ["--set", f"{key}.whisper_model={args.whisper_model}"]
    return cmd + ["--log_level", args.log_level]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="ESPnet config of Whisper fine-tuning")
    p.add_argument("--whisper_model", default=None,
                   help="hub name or checkpoint file for encoder and decoder (default: the config's)")
    p.add_argument("--name", default="whisper", help="jobs are ft_<name> and ft_<name>_adult")
    p.add_argument("--data_dir", type=Path, required=True)
    p.add_argument("--shape_dir", type=Path, required=True, help="<shape_dir>/<set>/speech_shape")
    p.add_argument("--token_type", default="char")
    p.add_argument("--token_list", type=Path, required=True)
    p.add_argument("--exp_dir", type=Path, required=True)
    p.add_argument("--train_set", required=True)
    p.add_argument("--valid_set", required=True)
    p.add_argument("--adult_train_set", default=None, help="also render ft_<name>_adult on this set ('' or unset: no)")
    p.add_argument("--adult_valid_set", default=None)
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Prints the job directories on stdout (the stage engine reads them); logs go to stderr."""
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    try:
        check_base(args.config)
    except ValueError as e:
        p.error(str(e))
    jobs = [(args.exp_dir / f"ft_{args.name}", args.train_set, args.valid_set)]
    if args.adult_train_set:
        if not args.adult_valid_set:
            p.error("--adult_train_set needs --adult_valid_set")
        jobs.append((args.exp_dir / f"ft_{args.name}_adult", args.adult_train_set, args.adult_valid_set))
    for job, train_set, valid_set in jobs:
        render_config.main(render_args(args, train_set, valid_set, job))
        print(job)


if __name__ == "__main__":
    sys.exit(main())
