"""DeltaFusionFrontend: waveform -> fused fine-tuned + delta SSL features, as an ESPnet frontend.

Used from any ESPnet ASR config once the plugin is registered
(``python -m espnet_delta.bin.asr_train`` does it)::

    frontend: delta_fusion
    frontend_conf:
      reference: {upstream: wavlm_large, finetuned: exp/ft_wavlm/valid.wer_ctc.best.pth}
      deltas:
        - {upstream: wav2vec2_large_ll60k, finetuned: exp/ft_w2v2/valid.wer_ctc.best.pth}
      fusion: concat        # concat | weighted | xattn | moe
      mode: delta           # delta | full
      layer: last           # one hidden state per model ...
      # interface: hconv    # ... or every hidden state through a layer interface per stream
      # interface_conf: {}  # (last | weighted_sum | hconv | concat | pca | cls_pooling; espnet_delta.ssl.interfaces)

With ``interface`` set, ``layer`` must stay ``last`` (it is not used): the reference's
E_ft and every model's delta (or E_ft) are taken at every hidden state ([B, L, T, D],
``hidden_norm`` applied per state before the delta), one interface per stream (the
reference and each other model, each with its own parameters) turns each into
[B, T, F], and fusion runs on those (``pca`` fits one projection per stream on that
stream's first training frames, saved as buffers). Without it (the default) the frontend is
unchanged. Every keyword argument of the constructor is a ``frontend_conf`` key, type-checked
(typeguard) as YAML gives it. All upstreams are frozen, run in eval mode under ``no_grad`` and are kept out of the
model's parameters and state dict (see :class:`espnet_delta.ssl.upstream.FrozenUpstream`):
only the fusion module and the head normalisation are trained and saved. A saved
model therefore rebuilds its upstreams from the paths in its config.yaml when it is
loaded for inference; those files must still exist.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from typeguard import typechecked

from espnet_delta.ssl.embeddings import SSLEmbeddingExtractor
from espnet_delta.ssl.interfaces import StreamInterfaces
from espnet_delta.ssl.upstream import sample_rate_16k, use_download_dir
from espnet_delta.fusion import FusionHead


class DeltaFusionFrontend(AbsFrontend):
    """Frozen SSL upstreams -> (E_ft^ref, E_delta^j ...) -> fusion -> LayerNorm -> Dropout."""

    @typechecked
    def __init__(
        self,
        fs: Union[int, str] = 16000,
        reference: Optional[Dict[str, Any]] = None,
        deltas: Optional[List[Dict[str, Any]]] = None,
        fusion: str = "concat",
        mode: str = "delta",
        layer: Union[str, int] = "last",
        hidden_norm: str = "auto",
        fusion_conf: Optional[Dict[str, Any]] = None,
        head_norm: bool = True,
        head_dropout: float = 0.1,
        max_frame_diff: int = 2,
        download_dir: Optional[str] = None,
        interface: Optional[str] = None,
        interface_conf: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        sample_rate_16k(fs, "delta_fusion")
        if reference is None:
            raise ValueError("delta_fusion: frontend_conf.reference is required, e.g. {upstream: wavlm_large, finetuned: ...}")
        if not deltas:
            raise ValueError("delta_fusion: frontend_conf.deltas needs at least one model")
        use_download_dir(download_dir)
        if interface is None and interface_conf:
            raise ValueError("delta_fusion: interface_conf is given but interface is not")
        if interface is not None and layer != "last":
            raise ValueError(f"delta_fusion: layer={layer!r} and interface={interface!r} exclude each other; "
                             "an interface reads every hidden state")
        self.extractor = SSLEmbeddingExtractor(
            reference, deltas, mode=mode, layer=layer, hidden_norm=hidden_norm, max_frame_diff=max_frame_diff
        )
        ref_size, other_sizes = self.extractor.reference_size, self.extractor.other_sizes
        if interface is not None:
            shapes = [(self.extractor.reference_num_states, ref_size)]
            shapes += list(zip(self.extractor.other_num_states, other_sizes))
            self.interfaces = StreamInterfaces(interface, shapes, interface_conf)
            ref_size, other_sizes = self.interfaces.output_sizes()
        else:
            self.interfaces = None
        self.head = FusionHead(
            fusion,
            ref_size,
            other_sizes,
            fusion_conf=fusion_conf,
            head_norm=head_norm,
            head_dropout=head_dropout,
        )
        logging.info(
            "delta_fusion: %s%s fusion of %s (%d) with %s %s -> %d dims",
            fusion,
            "" if interface is None else f" ({interface} interface per stream)",
            self.extractor.reference_spec.upstream,
            self.extractor.reference_size,
            mode,
            [f"{s.upstream} ({d})" for s, d in zip(self.extractor.other_specs, self.extractor.other_sizes)],
            self.output_size(),
        )

    def output_size(self) -> int:
        return self.head.output_size()

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.interfaces is None:
            ref, others, lengths = self.extractor(input, input_lengths)
        else:
            ref, others, lengths = self.extractor.layer_streams(input, input_lengths)
            ref, others = self.interfaces(ref, others, lengths)
        return self.head(ref, others, lengths), lengths

    def reload_pretrained_parameters(self) -> None:
        """Called by ESPnet's initialiser after it re-initialises every parameter.

        The frozen upstreams are not parameters of this module, so the initialiser
        never touched them: there is nothing to reload.
        """
        logging.info("delta_fusion: upstream weights are outside the model state; nothing to reload")
