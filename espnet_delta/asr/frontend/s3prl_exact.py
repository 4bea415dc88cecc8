"""ESPnet's S3PRL frontend with exact per-utterance frames (``frontend: s3prl_exact``).

ESPnet's ``s3prl`` frontend gives an utterance different features in a padded batch
than alone, so greedy CTC hypotheses depend on the decoding batch size (measured on
mini_myst's ft_wavlm: up to 1.5 apart on every frame of the shorter utterances). Two
causes, both at the end of a short utterance:

* WavLM's and HuBERT's fairseq-derived padding mask leaves the frame that straddles
  the utterance's end unmasked, so padding leaks into the positional convolution and
  attention (:func:`espnet_delta.ssl.upstream.use_exact_frame_mask` fixes that);
* S3PRL reports ceil(samples / 320) frames, one more than the convolutions compute
  from the utterance; that last frame is built from padding in a batch and from
  S3PRL's own padding alone.

This frontend is ``s3prl`` with the exact mask and the frame count of the
convolutional feature extractor (as :class:`~espnet_delta.ssl.upstream.FrozenUpstream`
uses). Its state dict is ``s3prl``'s, so fine-tuned checkpoints load everywhere the
package reads ESPnet S3PRL checkpoints (feature extraction, merging).

``mask_time_prob`` / ``mask_feature_prob`` (default 0: off) add the fine-tuning masking of
wav2vec 2.0-style models inside the upstream: spans of the projected CNN features, what
the transformer receives, become the model's ``mask_emb`` (time) or 0 (channels), in
training mode only (:mod:`espnet_delta.ssl.feature_masking`). ESPnet's ``specaug``, which
masks the upstream's output instead, stays available as a separate option.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet2.asr.frontend.s3prl import S3prlFrontend
from typeguard import typechecked

from espnet_delta.ssl.feature_masking import MaskingConfig, install_feature_masking
from espnet_delta.ssl.hub import hub_errors, resolve_s3prl
from espnet_delta.ssl.upstream import conv_output_lengths, conv_strides, use_exact_frame_mask


class ExactS3prlFrontend(S3prlFrontend):
    """``frontend: s3prl_exact``: the same options as ESPnet's ``s3prl``."""

    @typechecked
    def __init__(
        self,
        fs: Union[int, str] = 16000,
        frontend_conf: Optional[dict] = None,
        download_dir: Optional[str] = None,
        multilayer_feature: bool = False,
        layer: int = -1,
        mask_time_prob: float = 0.0,
        mask_time_length: int = 10,
        mask_time_min_masks: int = 2,
        mask_feature_prob: float = 0.0,
        mask_feature_length: int = 64,
        mask_feature_min_masks: int = 0,
    ) -> None:
        if frontend_conf is None:
            raise ValueError("s3prl_exact: frontend_conf: {upstream: <S3PRL name>, ...} is required")
        masking = MaskingConfig(
            time_prob=mask_time_prob, time_length=mask_time_length, time_min_masks=mask_time_min_masks,
            feature_prob=mask_feature_prob, feature_length=mask_feature_length,
            feature_min_masks=mask_feature_min_masks,
        )
        hub_name = frontend_conf.get("upstream")  # a name of the model map (--model_map) loads the mapped file
        name, path = resolve_s3prl(hub_name, frontend_conf.get("path_or_url"))
        with hub_errors(hub_name):
            super().__init__(fs, dict(frontend_conf, upstream=name, path_or_url=path), download_dir, multilayer_feature, layer)
        use_exact_frame_mask(self.upstream)
        if masking.active:
            where = f"s3prl_exact ({frontend_conf.get('upstream')})"
            install_feature_masking(self.upstream.upstream.model, masking, where)
        self._kernels_strides = conv_strides(self.upstream.upstream.model)
        self.frontend_type = "s3prl_exact"

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        feats, feats_lens = super().forward(input, input_lengths)
        frames = conv_output_lengths(input_lengths, self._kernels_strides).clamp(min=1)
        frames = torch.minimum(frames.to(feats_lens.device), feats_lens)
        feats = feats[:, : int(frames.max())]
        feats = feats.masked_fill(make_pad_mask(frames, maxlen=feats.size(1)).unsqueeze(-1), 0.0)
        return feats, frames
