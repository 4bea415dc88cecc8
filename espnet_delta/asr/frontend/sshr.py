"""The lower half of an SSL transformer stack, trainable: waveform -> layer k (SSHR, arXiv 2309.16937).

SSHR reads a language frame from a middle layer k and changes what happens above it,
so the model has to run the upstream's transformer layers itself instead of taking
S3PRL's list of hidden states. The stack is split in two ESPnet components:

* :class:`SSHRFrontend` (``frontend: sshr``) runs the convolutional feature
  extractor, the positional convolution and layers ``1..k`` of the upstream and
  returns layer k's output (the residual stream, before any final LayerNorm);
* :class:`espnet_delta.asr.encoder.sshr.SSHREncoder` (``encoder: sshr``) holds layers
  ``k+1..L`` and everything SSHR adds on top.

Both are fine-tuned. Only the modules that run are kept (layers above k and the
pre-training heads are dropped), so every parameter of the frontend gets a gradient.
How S3PRL's WavLM, HuBERT and wav2vec2 layers are called lives in
:mod:`espnet_delta.ssl.layers`, shared with the encoder.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from typeguard import typechecked

from espnet_delta.ssl.embeddings import UpstreamSpec
from espnet_delta.ssl.layers import load_ssl_model, normalize_waveforms, run_layer
from espnet_delta.ssl.upstream import conv_output_lengths, conv_strides, sample_rate_16k, use_download_dir


class SSHRFrontend(AbsFrontend):
    """Waveform -> CNN -> layers 1..k of an S3PRL upstream -> (B, T, D), trainable.

    ``layer`` is SSHR's language-frame layer k, and must equal the encoder's
    ``language_frame_layer`` (the recipes write both from one value). Config::

        frontend: sshr
        frontend_conf:
          upstream: {upstream: wavlm_local, path_or_url: downloads/upstreams_pt/wavlm.pt}
          layer: 8
          freeze_feature_extractor: true   # the CNN, as wav2vec2/HuBERT fine-tuning does
    """

    @typechecked
    def __init__(
        self,
        fs: Union[int, str] = 16000,
        upstream: Optional[Dict[str, Any]] = None,
        layer: int = 8,
        freeze_feature_extractor: bool = True,
        download_dir: Optional[str] = None,
    ) -> None:
        super().__init__()
        sample_rate_16k(fs, "frontend_conf")
        if upstream is None:
            raise ValueError("frontend_conf.upstream is required, e.g. {upstream: xls_r_300m}")
        use_download_dir(download_dir)
        self.spec = UpstreamSpec.from_config(upstream, "frontend_conf.upstream")
        model, self.normalize = load_ssl_model(self.spec, "frontend_conf.upstream")
        n_layers = len(model.encoder.layers)
        if not 1 <= layer < n_layers:
            raise ValueError(f"frontend_conf.layer={layer}: {self.spec.upstream} has {n_layers} layers; need 1 <= layer < {n_layers}")
        self.layer = layer
        self.freeze_feature_extractor = freeze_feature_extractor
        self.kernels_strides = conv_strides(model)
        enc = model.encoder
        self.layer_norm_first = bool(enc.layer_norm_first)
        self.dropout = float(enc.dropout)
        self._dim = int(enc.embedding_dim)
        for name, module in self._pretrained_parts(model).items():
            setattr(self, name, module)
        if freeze_feature_extractor:
            self.feature_extractor.requires_grad_(False)
        logging.info("sshr frontend: %s CNN + layers 1..%d of %d (%d parameters)", self.spec.upstream, layer, n_layers,
                     sum(p.numel() for p in self.parameters()))

    def _pretrained_parts(self, model: torch.nn.Module) -> Dict[str, Optional[torch.nn.Module]]:
        """The modules of ``model`` this frontend runs, by attribute name."""
        enc = model.encoder
        return {
            "feature_extractor": model.feature_extractor,
            "feature_norm": model.layer_norm,
            "post_extract_proj": model.post_extract_proj,
            "dropout_input": model.dropout_input,
            "pos_conv": enc.pos_conv,
            # post-LN stacks normalise before layer 1; pre-LN stacks after the last (the encoder's job)
            "input_norm": None if self.layer_norm_first else enc.layer_norm,
            "layers": torch.nn.ModuleList(list(enc.layers)[: self.layer]),
        }

    def output_size(self) -> int:
        return self._dim

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        wavs = input[:, : int(input_lengths.max())]
        if self.normalize:
            wavs = normalize_waveforms(wavs, input_lengths)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_feature_extractor):
            feats = self.feature_extractor(wavs)
        feats = self.feature_norm(feats.transpose(1, 2))
        frames = conv_output_lengths(input_lengths, self.kernels_strides).clamp(min=1)
        pad = make_pad_mask(frames, maxlen=feats.size(1)).to(feats.device)
        if self.post_extract_proj is not None:
            feats = self.post_extract_proj(feats)
        x = self.dropout_input(feats).masked_fill(pad.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if self.input_norm is not None:
            x = self.input_norm(x)
        x = F.dropout(x, p=self.dropout, training=self.training).transpose(0, 1)
        pos_bias = None
        for layer in self.layers:
            x, pos_bias = run_layer(layer, x, pad, pos_bias)
        return x.transpose(0, 1), frames.to(input_lengths.device)

    def reload_pretrained_parameters(self) -> None:
        """Called by ESPnet's initialiser after ``--init``: put the upstream's weights back."""
        model, _ = load_ssl_model(self.spec, "frontend_conf.upstream")
        for name, module in self._pretrained_parts(model).items():
            if module is not None:
                getattr(self, name).load_state_dict(module.state_dict())
        logging.info("sshr frontend: reloaded the pre-trained weights of %s", self.spec.upstream)
