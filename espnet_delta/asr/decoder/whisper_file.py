"""ESPnet's Whisper decoder, built from a hub name or a local checkpoint file (``decoder: whisper_file``).

``decoder: whisper`` (ESPnet 202511) accepts hub names only, so the offline recipes and
tests cannot give it a tiny checkpoint (espnet_delta/whisper/tiny.py). This subclass
differs from ESPnet's class only in how the Whisper model is obtained
(:func:`espnet_delta.whisper.load.load_whisper`): the forward pass, beam-search scoring
and the state-dict names (``decoder.decoders.blocks.N.cross_attn.key.weight``, ...) are
ESPnet's own, so a model trained with it merges and decodes like any ESPnet Whisper
model. Its partner is :class:`espnet_delta.asr.encoder.whisper_file.WhisperFileEncoder`.

One deliberate difference: a target longer than Whisper's text context (448 positions)
fails with an error saying so, not a tensor-shape error.
"""

from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
from espnet2.asr.decoder.abs_decoder import AbsDecoder
from espnet2.asr.decoder.whisper_decoder import ExpandedTokenEmbedding, OpenAIWhisperDecoder
from typeguard import typechecked

from espnet_delta.whisper.load import load_whisper


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
