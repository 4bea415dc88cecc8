"""CachedFusionFrontend: the fusion head on cached SSL feature matrices (stage 7).

Stage 6 stores, per utterance, one matrix holding the reference E_ft and every other
model's E_pt and E_ft (see :mod:`espnet_delta.features.layout`). ESPnet's ``kaldi_ark``
loader hands this frontend the padded ``(B, T, D_total)`` batch; it picks the
reference, computes deltas (``mode: delta``) or takes fine-tuned streams
(``mode: full``) and applies the same :class:`~espnet_delta.fusion.FusionHead` as
:class:`~espnet_delta.asr.frontend.DeltaFusionFrontend`, so a head trained here is the
head the on-the-fly frontend would train, without running any encoder. Every keyword
argument of the constructor is a ``frontend_conf`` key, type-checked (typeguard) as
YAML gives it.

A cache extracted with ``layer: all`` holds every hidden state of every stream; it needs
``interface`` (``last`` | ``weighted_sum`` | ``hconv`` | ``concat`` | ``pca`` |
``cls_pooling``, options in ``interface_conf``): one interface per stream, as ``delta_fusion`` with ``interface``
builds them (same parameter names, so the trained module loads into either frontend).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import humanfriendly
import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from typeguard import typechecked

from espnet_delta.features.layout import FeatureLayout, unflatten_states
from espnet_delta.fusion import FusionHead
from espnet_delta.ssl.interfaces import StreamInterfaces
from espnet_delta.ssl.streams import MODES


class CachedFusionFrontend(AbsFrontend):
    """Cached (E_ft^ref, E_pt^j, E_ft^j ...) matrices -> fusion -> LayerNorm -> Dropout."""

    @typechecked
    def __init__(
        self,
        fs: Union[int, str] = 16000,
        layout: Union[str, Dict[str, Any], None] = None,
        reference: Optional[str] = None,
        deltas: Optional[List[str]] = None,
        mode: str = "delta",
        fusion: str = "concat",
        fusion_conf: Optional[Dict[str, Any]] = None,
        head_norm: bool = True,
        head_dropout: float = 0.1,
        interface: Optional[str] = None,
        interface_conf: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        if isinstance(fs, str):
            fs = humanfriendly.parse_size(fs)
        if layout is None:
            raise ValueError("cached_fusion: frontend_conf.layout (layout.json path or mapping) is required")
        self.layout = FeatureLayout.from_config(layout)
        self.reference = reference or self.layout.reference
        self.deltas = list(deltas) if deltas is not None else self.layout.others
        if not self.deltas:
            raise ValueError("cached_fusion: frontend_conf.deltas needs at least one model")
        if mode not in MODES:
            raise ValueError(f"cached_fusion: mode={mode!r}; expected delta or full")
        self.mode = mode
        if mode == "delta":
            for d in self.deltas:
                self.layout.require_delta(d)  # error early when neither E_delta nor E_pt was cached
        where = self.layout.source or "the feature layout"
        if interface is None and interface_conf:
            raise ValueError("cached_fusion: interface_conf is given but interface is not")
        if self.layout.multi_state and interface is None:
            raise ValueError(f"cached_fusion: {where} holds every hidden state (layer: all); "
                             "set frontend_conf.interface (one of espnet_delta.ssl.interfaces.INTERFACES)")
        if interface is not None and not self.layout.multi_state:
            raise ValueError(f"cached_fusion: interface={interface!r} needs every hidden state, but {where} holds "
                             f"one (layer: {self.layout.layer}); extract with layer: all")
        #: (L, D) per stream: reference first, then each model of ``deltas``
        self.shapes = [self.layout.stream_states(f"{m}.ft") for m in [self.reference, *self.deltas]]
        if interface is not None:
            self.interfaces = StreamInterfaces(interface, self.shapes, interface_conf)
            ref_size, other_sizes = self.interfaces.output_sizes()
        else:
            self.interfaces = None
            ref_size, other_sizes = self.shapes[0][1], [d for _, d in self.shapes[1:]]
        self.head = FusionHead(fusion, ref_size, other_sizes, fusion_conf, head_norm, head_dropout)

    def output_size(self) -> int:
        return self.head.output_size()

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        ref, others = self.layout.fusion_inputs(input, self.reference, self.deltas, self.mode)
        ref, others = ref.float(), [o.float() for o in others]
        if self.interfaces is not None:
            ref, *others = [unflatten_states(x, n) for x, (n, _) in zip([ref, *others], self.shapes)]
            ref, others = self.interfaces(ref, others, input_lengths)
        return self.head(ref, others, input_lengths), input_lengths
