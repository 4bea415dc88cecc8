"""Layer interfaces: how an upstream's stack of hidden states becomes one feature sequence.

"Interface Design for Self-Supervised Speech Models" (arXiv 2406.12209) compares ways of
turning the L hidden states of a frozen SSL upstream (``[B, L, T, D]``; L counts the
CNN/projection output too: 25 for a 24-layer model, 13 for a 12-layer one) into one
``[B, T, F]`` feature for a downstream model. Registered names (``interface:`` in YAML,
options in ``interface_conf``, one-to-one onto the constructors' keyword arguments):

* ``last``: the final hidden state; F = D, no parameters.
* ``weighted_sum``: SUPERB's featurizer, softmax over L learnable scalars initialised
  equal; ``layer_norm: true`` first normalises every layer over D without parameters.
* ``hconv``: hierarchical convolution over the layer axis (:mod:`.hconv`; the details
  the seed leaves open are marked there as the project's choices).
* ``concat``: all layers concatenated (layer-major), then Linear(L * D, output_dim).
* ``pca``: the concatenation projected on its ``output_dim`` principal directions,
  fitted on the first training frames, then fixed buffers (:mod:`.pca`).
* ``cls_pooling``: a learned token attending over the layer axis per frame (:mod:`.cls_pooling`).

Every interface works frame by frame, so padding cannot leak between frames; frames at
or past an utterance's length are zeroed in the output. The output size is computed
from (L, D), never given by hand. Constructors are type-checked (typeguard).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch

from espnet_delta.ssl.interfaces.base import FIXED_PREFIX, AbsLayerInterface, HiddenStates, layer_major
from espnet_delta.ssl.interfaces.cls_pooling import CLSPoolingInterface
from espnet_delta.ssl.interfaces.hconv import (
    HCONV_KERNEL,
    HCONV_PADDING,
    HCONV_STRIDE,
    HierarchicalConvInterface,
    hconv_depth,
    hconv_length,
)
from espnet_delta.ssl.interfaces.pca import PCAInterface, principal_directions
from espnet_delta.ssl.interfaces.simple import ConcatInterface, LastInterface, WeightedSumInterface

__all__ = [
    "AbsLayerInterface", "CLSPoolingInterface", "ConcatInterface", "FIXED_PREFIX", "HCONV_KERNEL", "HCONV_PADDING",
    "HCONV_STRIDE", "HiddenStates", "HierarchicalConvInterface", "INTERFACES", "LastInterface", "PCAInterface",
    "StreamInterfaces", "WeightedSumInterface", "build_interface", "hconv_depth", "hconv_length", "interface_names",
    "layer_major", "principal_directions",
]

INTERFACES: Dict[str, Type[AbsLayerInterface]] = {
    "last": LastInterface,
    "weighted_sum": WeightedSumInterface,
    "hconv": HierarchicalConvInterface,
    "concat": ConcatInterface,
    "pca": PCAInterface,
    "cls_pooling": CLSPoolingInterface,
}


def build_interface(name: str, num_layers: int, dim: int, **conf) -> AbsLayerInterface:
    """The interface ``name`` for L = ``num_layers`` states of ``dim``; ``conf`` are its YAML options."""
    if name not in INTERFACES:
        raise ValueError(f"interface={name!r}; expected one of {sorted(INTERFACES)}")
    try:
        return INTERFACES[name](num_layers, dim, **conf)
    except TypeError as e:
        raise TypeError(f"interface {name!r}: bad interface_conf {conf}: {e}") from e


def interface_names() -> List[str]:
    return list(INTERFACES)


class StreamInterfaces(torch.nn.Module):
    """One interface per fusion stream: the reference's and each other model's.

    Shared by the on-the-fly (``delta_fusion``) and cached (``cached_fusion``) frontends,
    so both hold the same parameters and buffers under the same names (``ref``,
    ``others.<j>``) and a module trained with one loads into the other. A fitted
    interface (``pca``) fits each stream on that stream's own training frames.
    """

    def __init__(self, name: str, shapes: Sequence[Tuple[int, int]], conf: Optional[Dict] = None) -> None:
        super().__init__()
        conf = conf or {}
        (ref_layers, ref_dim), others = shapes[0], shapes[1:]
        self.ref = build_interface(name, ref_layers, ref_dim, **conf)
        self.others = torch.nn.ModuleList(build_interface(name, n, d, **conf) for n, d in others)

    def output_sizes(self) -> Tuple[int, List[int]]:
        """(reference size, [size per other stream])."""
        return self.ref.output_size(), [i.output_size() for i in self.others]

    def forward(
        self, ref: HiddenStates, others: Sequence[HiddenStates], lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """``[B, L, T, D]`` per stream -> ``[B, T, F]`` per stream."""
        return self.ref(ref, lengths)[0], [iface(o, lengths)[0] for iface, o in zip(self.others, others)]
