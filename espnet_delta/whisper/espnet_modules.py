"""ESPnet's Whisper encoder and decoder, built from a hub name or a local checkpoint file.

``encoder: whisper`` / ``decoder: whisper`` (ESPnet 202511) accept hub names only, so the
offline recipes and tests cannot give them a tiny checkpoint (espnet_delta/whisper/tiny.py).
These subclasses differ from ESPnet's classes only in how the Whisper model is obtained
(:func:`espnet_delta.whisper.load.load_whisper`): the log-mel front end, SpecAugment,
forward passes, beam-search scoring and the state-dict names
(``encoder.encoders.blocks.N.attn.query.weight``, ``decoder.decoders.blocks.N.cross_attn.key.weight``, ...)
are ESPnet's own, so a model trained with them merges and decodes like any ESPnet Whisper model.
Registered as ``encoder: whisper_file`` and ``decoder: whisper_file``
(:mod:`espnet_delta.asr.register`).

Two deliberate differences: the log-mel size is the checkpoint's ``n_mels`` (ESPnet uses 80,
wrong for large-v3's 128), and a target longer than Whisper's text context (448 positions)
fails with an error saying so, not a tensor-shape error.
"""

from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
from espnet2.asr.decoder.abs_decoder import AbsDecoder
from espnet2.asr.decoder.whisper_decoder import ExpandedTokenEmbedding, OpenAIWhisperDecoder
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


class WhisperFileDecoder(OpenAIWhisperDecoder):
    """ESPnet's Whisper decoder; ``whisper_model`` is a hub name or a checkpoint file.

    As in ESPnet, a ``vocab_size`` other than the checkpoint's (e.g. a character list)
    replaces the token embedding (tied with the output layer) by a new one drawn from
    N(mean, std) of the pre-trained embedding; ``load_origin_token_embedding: true``
    keeps the pre-trained rows and appends new ones for a larger vocabulary instead.
    """

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        encoder_output_size: int,
        dropout_rate: float = 0.0,
        whisper_model: str = "small",
        download_dir: Optional[str] = None,
        load_origin_token_embedding: bool = False,
    ):
        AbsDecoder.__init__(self)  # OpenAIWhisperDecoder.__init__ would insist on a hub name
        model = load_whisper(whisper_model, download_dir)
        if encoder_output_size != model.dims.n_text_state:
            raise ValueError(
                f"{whisper_model}: the decoder's width {model.dims.n_text_state} differs from the encoder output "
                f"size {encoder_output_size} (use the same whisper_model in encoder_conf and decoder_conf)"
            )
        self.decoders = copy.deepcopy(model.decoder)
        del model
        self.dropout = torch.nn.Dropout(dropout_rate)
        self.load_origin_token_embedding = load_origin_token_embedding
        original = self.decoders.token_embedding
        if vocab_size != original.num_embeddings:
            if load_origin_token_embedding:
                if vocab_size < original.num_embeddings:
                    raise ValueError(
                        f"load_origin_token_embedding: vocab_size {vocab_size} must exceed {whisper_model}'s "
                        f"{original.num_embeddings} tokens"
                    )
                self.decoders.token_embedding = ExpandedTokenEmbedding(original, vocab_size - original.num_embeddings)
            else:
                std, mean = torch.std_mean(original.weight)
                self.decoders.token_embedding = torch.nn.Embedding(vocab_size, original.embedding_dim)
                torch.nn.init.normal_(self.decoders.token_embedding.weight, mean.item(), std.item())
        self.decoders.train()

    @property
    def max_target_length(self) -> int:
        """Decoder input positions (start token included): Whisper's ``n_text_ctx``."""
        return self.decoders.positional_embedding.size(0)

    def forward(
        self, hs_pad: torch.Tensor, hlens: torch.Tensor, ys_in_pad: torch.Tensor, ys_in_lens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        if ys_in_pad.size(1) > self.max_target_length:
            raise ValueError(
                f"a target of {ys_in_pad.size(1)} tokens (with <sos>) exceeds Whisper's {self.max_target_length} "
                "text positions: drop such utterances from the data or use a coarser token_type"
            )
        return super().forward(hs_pad, hlens, ys_in_pad, ys_in_lens)
