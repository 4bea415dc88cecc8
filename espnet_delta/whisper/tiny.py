"""Tiny randomly initialised Whisper checkpoints in openai-whisper's own file format.

``whisper.load_model(path)`` accepts a local file holding ``{"dims": ..., "model_state_dict": ...}``;
writing such a file offline lets tests and the mini recipes run the real Whisper code paths
(screening transcription, ESPnet's whisper encoder/decoder, merging) without a hub download.
The vocabulary keeps the real multilingual size so Whisper's own tokenizer works with it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Union

import torch
from typeguard import typechecked

from espnet_delta.fileio import torch_save_atomic

MULTILINGUAL_VOCAB = 51865  # whisper's multilingual tokenizer (51864 for the English-only models)


@typechecked
@dataclasses.dataclass(frozen=True)
class TinyWhisperConfig:
    """Dimensions of a tiny Whisper; field names follow ``whisper.model.ModelDimensions``."""

    n_mels: int = 80
    n_audio_ctx: int = 1500  # 30 s of 10 ms frames after the stride-2 conv, as every Whisper
    n_audio_state: int = 64
    n_audio_head: int = 2
    n_audio_layer: int = 2
    n_vocab: int = MULTILINGUAL_VOCAB
    n_text_ctx: int = 448
    n_text_state: int = 64
    n_text_head: int = 2
    n_text_layer: int = 2


@typechecked
def make_tiny_whisper(
    path: Union[str, Path], seed: int = 0, config: TinyWhisperConfig = TinyWhisperConfig(), overwrite: bool = False
) -> Path:
    """Write a random tiny Whisper to ``path`` (kept when present unless ``overwrite``)."""
    from whisper.model import ModelDimensions, Whisper

    path = Path(path)
    if path.is_file() and not overwrite:
        logging.info("tiny Whisper %s exists, kept", path)
        return path
    torch.manual_seed(seed)
    dims = ModelDimensions(**dataclasses.asdict(config))
    model = Whisper(dims)
    # openai-whisper allocates the decoder's learned positional embedding with torch.empty (it
    # expects a checkpoint to fill it): uninitialised memory, up to ~1e22 or NaN and different
    # per run, which makes the attention decoder's loss NaN. Give it GPT-2's N(0, 0.01^2).
    with torch.no_grad():
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.01)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic({"dims": dataclasses.asdict(dims), "model_state_dict": state}, path)
    n_params = sum(v.numel() for v in state.values())
    logging.info("wrote tiny Whisper %s (%.2f M parameters)", path, n_params / 1e6)
    return path
