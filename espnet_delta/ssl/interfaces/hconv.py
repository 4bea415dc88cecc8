"""Hierarchical convolution over the layer axis (arXiv 2406.12209).

The seed fixes kernel 5, stride 3 and a depth of floor(log3 L). The rest is the
project's choice (the seed does not say), marked ``PROJECT CHOICE`` below and in
docs/interfaces.md:

* padding 2 on the layer axis (so an L = 3 stack still gives one output position);
* ReLU after every convolution, the last included;
* the last convolution's channels: D // L_final, where L_final is the layer-axis length
  after the stack, so that the flattened output stays close to D (13 x 768 -> 768,
  25 x 1024 -> 3 x 341 = 1023); every earlier convolution keeps D channels;
* layer-major flattening of (L_final, channels) per frame:
  [position 0 channels, position 1 channels, ...].
"""

from __future__ import annotations

import torch
from typeguard import typechecked

from espnet_delta.ssl.interfaces.base import AbsLayerInterface

#: kernel and stride: the seed's; padding: PROJECT CHOICE (not fixed by the seed).
HCONV_KERNEL, HCONV_STRIDE, HCONV_PADDING = 5, 3, 2


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
    """Stacked strided 1-D convolutions over the layer axis, per frame, D features as channels."""

    @typechecked
    def __init__(self, num_layers: int, dim: int) -> None:
        super().__init__(num_layers, dim)
        self.depth = hconv_depth(num_layers)
        if self.depth < 1:
            raise ValueError(f"hconv needs at least {HCONV_STRIDE} hidden states, got L={num_layers}")
        self.final_length = num_layers
        for _ in range(self.depth):
            self.final_length = hconv_length(self.final_length)
        # PROJECT CHOICE: the last conv has D // L_final channels (flattened output ~ D)
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
            x = torch.relu(conv(x))  # PROJECT CHOICE: ReLU after the last conv too
        # PROJECT CHOICE: (B*T, C, L_final) flattened layer-major: [position 0 channels, position 1 channels, ...]
        return x.transpose(1, 2).reshape(b, t, self.output_size())
