"""ESPnet's Whisper encoder, built from a hub name or a local checkpoint file (``encoder: whisper_file``).

``encoder: whisper`` (ESPnet 202511) accepts hub names only, so the offline recipes and
tests cannot give it a tiny checkpoint (espnet_delta/whisper/tiny.py). This subclass
differs from ESPnet's class only in how the Whisper model is obtained
(:func:`espnet_delta.whisper.load.load_whisper`): the log-mel front end, SpecAugment,
the forward pass and the state-dict names (``encoder.encoders.blocks.N.attn.query.weight``, ...)
are ESPnet's own, so a model trained with it merges and decodes like any ESPnet Whisper
model. Its partner is :class:`espnet_delta.asr.decoder.whisper_file.WhisperFileDecoder`.

One deliberate difference: the log-mel size is the checkpoint's ``n_mels`` (ESPnet uses
80, wrong for large-v3's 128).
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.encoder.whisper_encoder import OpenAIWhisperEncoder
from espnet2.asr.specaug.specaug import SpecAug
from typeguard import typechecked

from espnet_delta.whisper.load import load_whisper


class WhisperFileEncoder(OpenAIWhisperEncoder):
    """ESPnet's Whisper encoder; ``whisper_model`` is a hub name or a checkpoint file.

    The class name keeps "Whisper": ESPnet's ASR model recognises a Whisper encoder by it
    (no frontend, no encoder-length assertion).
    """

    @typechecked
    def __init__(
        self,
        input_size: int = 1,
        dropout_rate: float = 0.0,
        whisper_model: str = "small",
        download_dir: Optional[str] = None,
        use_specaug: bool = False,
        specaug_conf: Optional[dict] = None,
        do_pad_trim: bool = False,
    ):
        import whisper.audio

        AbsEncoder.__init__(self)  # OpenAIWhisperEncoder.__init__ would insist on a hub name
        model = load_whisper(whisper_model, download_dir)
        self.n_fft = whisper.audio.N_FFT
        self.win_length = whisper.audio.N_FFT
        self.hop_length = whisper.audio.HOP_LENGTH
        self.n_mels = model.dims.n_mels
        self.mel_filters = whisper.audio.mel_filters
        self.dropout = torch.nn.Dropout(dropout_rate)  # Whisper itself has no dropout
        self.encoders = copy.deepcopy(model.encoder)
        self.encoders.train()
        del model
        if use_specaug and not specaug_conf:
            raise ValueError("encoder_conf: use_specaug: true needs specaug_conf (SpecAug's options)")
        self.specaug = SpecAug(**specaug_conf) if use_specaug else None
        self.do_pad_trim = do_pad_trim
        self.pad_samples = whisper.audio.N_SAMPLES
