"""An encoder that passes features through unchanged.

ESPnet 202511's ASR task has no identity encoder (``--encoder identity`` is refused),
but a linear CTC head directly on frontend features (CTC fine-tuning of an SSL
upstream, fusion training) needs one.
"""

from typing import Optional, Tuple

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from typeguard import typechecked


class IdentityEncoder(AbsEncoder):
    """Returns its input; ``output_size`` equals ``input_size``."""

    @typechecked
    def __init__(self, input_size: int) -> None:
        super().__init__()
        self._output_size = input_size

    def output_size(self) -> int:
        return self._output_size

    def forward(
        self, xs_pad: torch.Tensor, ilens: torch.Tensor, prev_states: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        return xs_pad, ilens, None
