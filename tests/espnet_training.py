"""One tiny ESPnet ASR training for the tests: ESPnet's own trainer (plugin registered) on the
first utterances of the mini corpus, so each test states only the config it is about."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import yaml


def data_args(mini_data: Path, tmp_path: Path) -> List[str]:
    """ESPnet's data options for train/dev of ``mini_data`` (a ``conftest.mini_data`` dir):
    wav.scp + text, the speech shapes written into ``tmp_path``, the char token list."""
    from espnet_delta.data.shapes import write_speech_shape

    shapes = {s: write_speech_shape(mini_data / s / "wav.scp", tmp_path / f"{s}_shape") for s in ("train", "dev")}
    return [
        "--token_type", "char", "--token_list", str(mini_data / "tokens.txt"), "--use_preprocessor", "true",
        "--train_data_path_and_name_and_type", f"{mini_data}/train/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", f"{mini_data}/train/text,text,text",
        "--valid_data_path_and_name_and_type", f"{mini_data}/dev/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{mini_data}/dev/text,text,text",
        "--train_shape_file", str(shapes["train"]), "--valid_shape_file", str(shapes["dev"]),
    ]


def train_tiny(config: Dict, mini_data: Path, tmp_path: Path) -> Path:
    """Train ``config`` (an ESPnet ASR config as a dict) in-process on the CPU; returns the exp dir."""
    from espnet_delta.asr.train import train

    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(config))
    exp = tmp_path / "exp"
    train(["--config", str(tmp_path / "conf.yaml"), "--output_dir", str(exp), "--ngpu", "0",
           *data_args(mini_data, tmp_path)])
    return exp
