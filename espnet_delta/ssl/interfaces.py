"""Layer interfaces: how an upstream's stack of hidden states becomes one feature sequence.

"How to connect speech foundation models and downstream models" (arXiv 2406.12209)
compares the ways of turning the L hidden states of a frozen SSL upstream
(``[B, L, T, D]``; L counts the CNN/projection output too: 25 for a 24-layer model, 13
for a 12-layer one) into one ``[B, T, F]`` feature for a downstream model:

* ``last``: the final hidden state; F = D, no parameters.
* ``weighted_sum``: SUPERB's featurizer, softmax over L learnable scalars initialised
  equal; ``layer_norm: true`` first normalises every layer over D without parameters
  (as S3PRL's Featurizer does). F = D, L parameters.
* ``hconv``: hierarchical convolution over the *layer* axis with the D features as
  channels: Conv1d(kernel 5, stride 3, padding 2) + ReLU, stacked floor(log3 L)
  times; every conv keeps D channels except the last, which has D // L_final, where
  L_final is the layer-axis length after the stack (n -> floor((n - 1) / 3) + 1). The
  output is flattened layer-major to F = L_final * (D // L_final): 25 x 1024 -> 1023,
  13 x 768 -> 768.
* ``concat``: all layers concatenated, then Linear(L * D, output_dim); output_dim
  defaults to D.

Every interface works frame by frame, so padding cannot leak between frames; frames at
or past an utterance's length are zeroed in the output, and an utterance's output in a
padded batch equals its output alone. The output size is computed from (L, D), never
given by hand. Constructors are type-checked (typeguard) so that ``interface_conf``
entries of a YAML config map onto their keyword arguments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from typeguard import typechecked

HiddenStates = Union[torch.Tensor, Sequence[torch.Tensor]]

#: Hierarchical convolution hyper-parameters of arXiv 2406.12209.
HCONV_KERNEL, HCONV_STRIDE, HCONV_PADDING = 5, 3, 2


class AbsLayerInterface(torch.nn.Module, ABC):
    """Maps hidden states ``[B, L, T, D]`` (or a list of L ``[B, T, D]``) and lengths ``[B]``
    to ``([B, T, F], lengths)``; F is :meth:`output_size`, fixed by (L, D)."""

    def __init__(self, num_layers: int, dim: int) -> None:
        super().__init__()
        if num_layers < 1 or dim < 1:
            raise ValueError(f"{type(self).__name__}: need num_layers >= 1 and dim >= 1, got L={num_layers}, D={dim}")
        self.num_layers = num_layers
        self.dim = dim

    @abstractmethod
    def output_size(self) -> int:
        raise NotImplementedError

    @abstractmethod
    def combine(self, states: torch.Tensor) -> torch.Tensor:
        """``[B, L, T, D]`` -> ``[B, T, F]``, each frame on its own."""
        raise NotImplementedError

    def stack(self, hidden_states: HiddenStates) -> torch.Tensor:
        """The states as one ``[B, L, T, D]`` tensor, checked against (L, D)."""
        x = hidden_states if isinstance(hidden_states, torch.Tensor) else torch.stack(list(hidden_states), dim=1)
        if x.dim() != 4 or x.size(1) != self.num_layers or x.size(3) != self.dim:
            raise ValueError(
                f"{type(self).__name__} was built for L={self.num_layers} hidden states of D={self.dim}; "
                f"got states of shape {tuple(x.shape)} (expected [B, {self.num_layers}, T, {self.dim}])"
            )
        return x

    def forward(self, hidden_states: HiddenStates, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.stack(hidden_states)
        out = self.combine(x)
        valid = torch.arange(out.size(1), device=out.device)[None, :] < lengths.to(out.device)[:, None]
        return out * valid.unsqueeze(-1).to(out.dtype), lengths


class LastInterface(AbsLayerInterface):
    """The final hidden state (the usual "last layer" feature)."""

    @typechecked
    def __init__(self, num_layers: int, dim: int) -> None:
        super().__init__(num_layers, dim)

    def output_size(self) -> int:
        return self.dim

    def combine(self, states: torch.Tensor) -> torch.Tensor:
        return states[:, -1]


class WeightedSumInterface(AbsLayerInterface):
    """SUPERB's featurizer: sum_l softmax(w)_l h_l, w initialised to zeros (equal weights)."""

    @typechecked
    def __init__(self, num_layers: int, dim: int, layer_norm: bool = False) -> None:
        super().__init__(num_layers, dim)
        self.layer_norm = layer_norm
        self.weights = torch.nn.Parameter(torch.zeros(num_layers))

    def output_size(self) -> int:
        return self.dim

    def layer_weights(self) -> torch.Tensor:
        """The normalised weights (L,), summing to 1; what analysis plots."""
        return torch.softmax(self.weights, dim=0)

    def combine(self, states: torch.Tensor) -> torch.Tensor:
        if self.layer_norm:
            states = F.layer_norm(states, states.shape[-1:])
        w = self.layer_weights().to(states.dtype)
        return torch.einsum("l,bltd->btd", w, states)


def hconv_depth(num_layers: int) -> int:
    """floor(log3 L) in integers: the largest k with 3**k <= L."""
    depth = 0
    while HCONV_STRIDE ** (depth + 1) <= num_layers:
        depth += 1
    return depth


def hconv_length(n: int) -> int:
    """Layer-axis length after one conv: floor((n + 2 * padding - kernel) / stride) + 1."""
    return (n + 2 * HCONV_PADDING - HCONV_KERNEL) // HCONV_STRIDE + 1


class HierarchicalConvInterface(AbsLayerInterface):
    """Stacked strided 1-D convolutions over the layer axis, per frame (arXiv 2406.12209)."""

    @typechecked
    def __init__(self, num_layers: int, dim: int) -> None:
        super().__init__(num_layers, dim)
        self.depth = hconv_depth(num_layers)
        if self.depth < 1:
            raise ValueError(f"hconv needs at least {HCONV_STRIDE} hidden states, got L={num_layers}")
        self.final_length = num_layers
        for _ in range(self.depth):
            self.final_length = hconv_length(self.final_length)
        self.final_channels = dim // self.final_length
        if self.final_channels < 1:
            raise ValueError(f"hconv: D={dim} is smaller than the final layer-axis length {self.final_length}")
        convs = []
        for i in range(self.depth):
            out_channels = self.final_channels if i == self.depth - 1 else dim
            convs.append(torch.nn.Conv1d(dim, out_channels, HCONV_KERNEL, HCONV_STRIDE, HCONV_PADDING))
        self.convs = torch.nn.ModuleList(convs)

    def output_size(self) -> int:
        return self.final_length * self.final_channels

    def combine(self, states: torch.Tensor) -> torch.Tensor:
        b, n_layers, t, d = states.shape
        x = states.permute(0, 2, 3, 1).reshape(b * t, d, n_layers)  # frames are independent
        for conv in self.convs:
            x = torch.relu(conv(x))
        # (B*T, C, L_final) -> layer-major flattening: [layer 0 channels, layer 1 channels, ...]
        return x.transpose(1, 2).reshape(b, t, self.output_size())


class ConcatInterface(AbsLayerInterface):
    """All L states side by side (L * D), projected by one Linear to ``output_dim`` (default D)."""

    @typechecked
    def __init__(self, num_layers: int, dim: int, output_dim: Optional[int] = None) -> None:
        super().__init__(num_layers, dim)
        if output_dim is not None and output_dim < 1:
            raise ValueError(f"concat: output_dim must be positive, got {output_dim}")
        self.projection = torch.nn.Linear(num_layers * dim, output_dim or dim)

    def output_size(self) -> int:
        return self.projection.out_features

    def combine(self, states: torch.Tensor) -> torch.Tensor:
        b, n_layers, t, d = states.shape
        return self.projection(states.permute(0, 2, 1, 3).reshape(b, t, n_layers * d))


INTERFACES: Dict[str, Type[AbsLayerInterface]] = {
    "last": LastInterface,
    "weighted_sum": WeightedSumInterface,
    "hconv": HierarchicalConvInterface,
    "concat": ConcatInterface,
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
    so both hold the same parameters under the same names (``ref``, ``others.<j>``) and a
    module trained with one loads into the other.
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
