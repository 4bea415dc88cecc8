"""The exact starting point of an ESPnet ASR fine-tuning, as a merge base (theta_pre).

    python -m espnet_delta.bin.init_state --config exp/ft_whisper/config.yaml --out exp/ft_whisper/init.pth

Task vectors need the weights both fine-tuned models started from. For Whisper with a
character token list that is not the Whisper checkpoint alone: ESPnet's decoder draws a new
token embedding (tied with the output layer) and the model adds a CTC head, both at random.
ESPnet's trainer seeds every generator with ``seed`` and then builds the model
(``AbsTask.main_worker``), so rebuilding the model from the job's saved ``config.yaml`` after
the same seeding reproduces its initial weights exactly (checked against a job trained for one
step at lr 0); two jobs whose configs differ only in their data (child and adult,
``espnet_delta.recipe.families.whisper``) share this state. The file is a plain ESPnet state dict
(the models' own key names), usable as ``--base`` of a merge. Works for any ESPnet ASR config
without ``init_param`` / ``init``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from espnet_delta.cli import add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.fileio import load_yaml, torch_save_atomic


def initial_state_dict(config_file: Path) -> Dict[str, torch.Tensor]:
    """The state dict ESPnet's trainer starts from for the job whose ``config.yaml`` this is."""
    config = load_yaml(config_file)  # a bad file stops here, before ESPnet's half-minute import
    for key in ("init_param", "init"):
        if config.get(key):
            raise ValueError(f"{config_file}: {key}={config[key]!r} changes the initial weights after the build; not supported")
    if "seed" not in config:
        raise ValueError(f"{config_file}: no 'seed' (expected the config.yaml ESPnet writes into a job directory)")
    from espnet_delta.asr.register import register

    register()
    from espnet2.tasks.asr import ASRTask
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    set_all_random_seed(config["seed"])
    model = ASRTask.build_model(argparse.Namespace(**config))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_initial_state(config_file: Path, out: Path) -> Path:
    """Save :func:`initial_state_dict` to ``out`` (atomically; kept when present)."""
    if out.is_file():
        logging.info("%s exists, kept", out)
        return out
    state = initial_state_dict(config_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(state, out)
    logging.info("wrote the initial state of %s (%d tensors) to %s", config_file, len(state), out)
    return out


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    p.add_argument("--config", type=Path, required=True, help="config.yaml of a trained ESPnet job")
    p.add_argument("--out", type=Path, required=True, help="state dict file to write")
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> None:
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    if not args.config.is_file():
        p.error(f"--config {args.config}: no such file (train the job first)")
    run_command(lambda: write_initial_state(args.config, args.out), args.log_level)


if __name__ == "__main__":
    main()
