"""Span masking of the features an SSL transformer receives, as in wav2vec 2.0-style fine-tuning.

Fine-tuning WavLM, HuBERT and wav2vec 2.0 for CTC (the protocol of Fan et al. 2024 that the
delta-fusion paper follows) masks the projected CNN features right before the transformer:

* time masks: ``k = floor(prob * n / length + u)`` spans (``u ~ U[0, 1)``, at least
  ``min_masks``) of ``length`` frames start at distinct positions drawn uniformly among
  those that keep the span inside the ``n`` valid frames of an utterance; the frames they
  cover become the model's learned ``mask_emb``. Spans may overlap, so fewer than
  ``prob * n`` frames end up masked (about 26 % for prob 0.30 and length 10); an
  utterance shorter than one span is left alone;
* channel masks: the same draw over the ``D`` feature dimensions (one per utterance,
  shared by its frames); the covered dimensions become 0.

Padded frames are never touched, and masking runs only while the transformer is in
training mode. Unlike fairseq, utterances of a batch are not cut to the same number of
masked frames: each is masked from its own length.

:func:`install_feature_masking` adds the masking to an S3PRL model (``wavlm_*``,
``hubert_*``, ``wav2vec2_*``: each keeps ``mask_emb`` and calls its transformer
``encoder`` on exactly these features) as a forward pre-hook, so no S3PRL code is patched
and the model's state dict is unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Tuple

import torch
from torch.utils.hooks import RemovableHandle


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """Span masking options; a probability of 0 switches that axis off."""

    time_prob: float = 0.0
    time_length: int = 10
    time_min_masks: int = 2
    feature_prob: float = 0.0
    feature_length: int = 64
    feature_min_masks: int = 0

    def __post_init__(self) -> None:
        for axis in ("time", "feature"):
            prob, length, min_masks = (getattr(self, f"{axis}_{k}") for k in ("prob", "length", "min_masks"))
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"mask_{axis}_prob={prob}: expected a probability in [0, 1]")
            if length < 1:
                raise ValueError(f"mask_{axis}_length={length}: expected >= 1")
            if min_masks < 0:
                raise ValueError(f"mask_{axis}_min_masks={min_masks}: expected >= 0")

    @property
    def active(self) -> bool:
        return self.time_prob > 0 or self.feature_prob > 0


def span_mask(
    lengths: torch.Tensor,
    size: int,
    prob: float,
    length: int,
    min_masks: int = 0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """(B, size) bool: spans of ``length`` within the first ``n = lengths[b]`` positions of row b.

    ``floor(prob * n / length + u)`` spans (at least ``min_masks``, at most one per start
    position) start at distinct positions in ``[0, n - length]``; a row shorter than
    ``length`` gets none.
    """
    mask = torch.zeros(len(lengths), size, dtype=torch.bool)
    if prob <= 0 and min_masks <= 0:
        return mask
    for row, n in enumerate(lengths.tolist()):
        n = min(int(n), size)
        if n < length:
            continue
        starts_available = n - length + 1
        count = int(prob * n / length + torch.rand((), generator=generator).item())
        count = min(max(count, min_masks), starts_available)
        if count == 0:
            continue
        starts = torch.randperm(starts_available, generator=generator)[:count]
        covered = (starts[:, None] + torch.arange(length)).reshape(-1)
        mask[row, covered] = True
    return mask


def mask_features(
    x: torch.Tensor,
    padding_mask: Optional[torch.Tensor],
    mask_emb: torch.Tensor,
    config: MaskingConfig,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask ``x`` (B, T, D); ``padding_mask`` (B, T) is True on padded frames (None: none).

    Returns the masked features (a new tensor), the time mask (B, T) and the channel
    mask (B, D). Valid frames must come first in each row (right padding).
    """
    batch, frames, dim = x.shape
    if padding_mask is None:
        valid = torch.ones(batch, frames, dtype=torch.bool, device=x.device)
    else:
        valid = ~padding_mask.to(device=x.device, dtype=torch.bool)
    lengths = valid.sum(dim=1).cpu()
    time = span_mask(lengths, frames, config.time_prob, config.time_length,
                     config.time_min_masks if config.time_prob > 0 else 0, generator)
    time = time.to(x.device) & valid
    channel = span_mask(torch.full((batch,), dim), dim, config.feature_prob, config.feature_length,
                        config.feature_min_masks if config.feature_prob > 0 else 0, generator).to(x.device)
    if time.any():
        x = torch.where(time.unsqueeze(-1), mask_emb.to(dtype=x.dtype).expand_as(x), x)
    if channel.any():
        x = x.masked_fill(channel.unsqueeze(1) & valid.unsqueeze(-1), 0.0)
    return x, time, channel


def install_feature_masking(model: torch.nn.Module, config: MaskingConfig, where: str = "upstream") -> RemovableHandle:
    """Mask the input of ``model.encoder`` with ``model.mask_emb`` while the encoder trains.

    ``model`` is an S3PRL WavLM / HuBERT / wav2vec2 model (``upstream.upstream.model`` of
    ESPnet's S3PRL frontend). Returns the hook's handle (``.remove()`` undoes it).
    """
    encoder = getattr(model, "encoder", None)
    mask_emb = getattr(model, "mask_emb", None)
    if not isinstance(encoder, torch.nn.Module) or not isinstance(mask_emb, torch.nn.Parameter):
        raise ValueError(
            f"{where}: feature masking needs a model with `mask_emb` and a transformer `encoder` "
            f"(S3PRL WavLM, HuBERT, wav2vec2); {type(model).__name__} has "
            f"{'no mask_emb' if mask_emb is None else 'mask_emb'} and "
            f"{'no encoder' if encoder is None else 'an encoder'}"
        )
    if config.feature_prob > 0 and config.feature_length > mask_emb.numel():
        raise ValueError(
            f"{where}: mask_feature_length={config.feature_length} exceeds the {mask_emb.numel()} feature "
            "dimensions of the transformer's input; no channel span would fit"
        )

    def hook(module, args, kwargs):
        if not module.training or not config.active:
            return None
        padding_mask = args[1] if len(args) > 1 else kwargs.get("padding_mask")
        x = mask_features(args[0], padding_mask, mask_emb, config)[0]
        return (x, *args[1:]), kwargs

    handle = encoder.register_forward_pre_hook(hook, with_kwargs=True)
    logging.info("%s: masking the transformer's input in training: %s", where, config)
    return handle
