"""SSLInterfaceFrontend: one frozen S3PRL upstream, all its hidden states, one layer interface.

The single-model setting of arXiv 2406.12209 (frozen upstream -> interface ->
downstream -> CTC), as an ESPnet frontend once the plugin is registered::

    frontend: ssl_interface
    frontend_conf:
      upstream: {upstream: wavlm_local, path_or_url: downloads/upstreams/wavlm.pt, finetuned: null}
      interface: hconv          # last | weighted_sum | hconv | concat | pca | cls_pooling
      interface_conf: {}        # weighted_sum: {layer_norm: true}; concat: {output_dim: 256};
                                # pca: {output_dim: 256, fit_frames: 10000}; cls_pooling: {num_heads: 1}

The upstream is frozen, run in eval mode under ``no_grad`` and kept out of the model's
parameters and state dict (:class:`espnet_delta.ssl.upstream.FrozenUpstream`), so only
the interface is trained and saved here (``pca`` trains nothing: it fits its projection on
the first training batches and saves it as buffers, so decoding never refits); a saved model rebuilds the upstream from the
paths in its config.yaml. ``layers`` optionally keeps a subset of the hidden states
(indices into S3PRL's list, input of layer i = state i), e.g. to match a feature cache
that stores only some layers.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from typeguard import typechecked

from espnet_delta.ssl.embeddings import UpstreamSpec, hidden_state_index
from espnet_delta.ssl.interfaces import build_interface
from espnet_delta.ssl.upstream import FrozenUpstream, load_upstream, sample_rate_16k, use_download_dir


class SSLInterfaceFrontend(AbsFrontend):
    """Frozen S3PRL upstream -> hidden states [B, L, T, D] -> layer interface -> [B, T, F]."""

    @typechecked
    def __init__(
        self,
        fs: Union[int, str] = 16000,
        upstream: Optional[Dict[str, Any]] = None,
        interface: str = "weighted_sum",
        interface_conf: Optional[Dict[str, Any]] = None,
        layers: Optional[List[int]] = None,
        download_dir: Optional[str] = None,
    ) -> None:
        super().__init__()
        sample_rate_16k(fs, "ssl_interface")
        if upstream is None:
            raise ValueError("ssl_interface: frontend_conf.upstream is required, e.g. {upstream: wavlm_large}")
        use_download_dir(download_dir)
        self.spec = UpstreamSpec.from_config(upstream, "frontend_conf.upstream")
        self.upstream = FrozenUpstream(load_upstream(self.spec.upstream, self.spec.path_or_url, self.spec.finetuned))
        sizes = self.upstream.hidden_sizes
        self.layers = None if layers is None else [hidden_state_index(i, len(sizes)) for i in layers]
        kept = sizes if self.layers is None else [sizes[i] for i in self.layers]
        if not kept or len(set(kept)) != 1:
            raise ValueError(f"ssl_interface: {self.spec.upstream} hidden sizes {kept} must be one non-empty width")
        self.interface = build_interface(interface, len(kept), kept[0], **(interface_conf or {}))
        logging.info(
            "ssl_interface: %s, %d hidden states of %d -> %s -> %d dims (%d trainable parameters)",
            self.spec.upstream,
            len(kept),
            kept[0],
            interface,
            self.output_size(),
            sum(p.numel() for p in self.parameters() if p.requires_grad),
        )

    def output_size(self) -> int:
        return self.interface.output_size()

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        states, frames = self.upstream(input, input_lengths)
        if self.layers is not None:
            states = [states[i] for i in self.layers]
        # S3PRL pads to ceil(samples / 320) frames; keep the frames the conv stack computes
        n = int(frames.max())
        return self.interface([s[:, :n] for s in states], frames)

    def reload_pretrained_parameters(self) -> None:
        """Called by ESPnet's initialiser; the frozen upstream is outside the model state."""
        logging.info("ssl_interface: upstream weights are outside the model state; nothing to reload")
