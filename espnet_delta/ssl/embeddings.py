"""Fine-tuned and delta SSL embeddings from one pass over a waveform batch.

E_delta = E_ft - E_pt is the shift that fine-tuning causes in a model's hidden
states ("Mind the Shift", arXiv 2601.20142). The extractor runs the reference
model's fine-tuned upstream and, for every other model, its pre-trained and
fine-tuned upstreams on the same waveform batch (each S3PRL upstream applies its
own, identical per-utterance waveform normalisation), selects one hidden state,
aligns frame counts and zeroes padded frames.

Hidden-state indexing follows S3PRL: N transformer layers give N+1 states; state i
is the input of layer i and state N the encoder output after the final LayerNorm
(pre-LN "large" models), like HuggingFace's ``hidden_states[-1]``.

Per-layer normalisation (``hidden_norm``): intermediate states of pre-LN models are
not normalised and their scale grows with depth, so a delta taken there would be
dominated by the deepest layers' magnitudes. ``auto`` (default) applies a
parameter-free LayerNorm over the feature axis to E_ft and E_pt *before*
subtracting whenever the selected state is not the last one, and nothing for the
last one (it is already LayerNorm-ed). ``layer_norm`` always normalises, ``none``
never does.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask

from espnet_delta.features.layout import MODES, stream_names
from espnet_delta.ssl.upstream import FrozenUpstream, load_upstream

HIDDEN_NORMS = ("auto", "layer_norm", "none")


def check_options(mode: str, layer: Union[str, int], hidden_norm: str) -> None:
    """Refuse an unknown ``mode`` / ``hidden_norm`` and a ``layer`` that is neither
    ``"last"`` nor an int (bools are refused although Python counts them as ints)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    if hidden_norm not in HIDDEN_NORMS:
        raise ValueError(f"hidden_norm={hidden_norm!r}; expected one of {HIDDEN_NORMS}")
    if layer != "last" and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise ValueError(f"layer={layer!r}; expected 'last' or a hidden-state index")


def hidden_state_index(layer: Union[str, int], n_states: int) -> int:
    """The index in ``[0, n_states)`` that ``layer`` (``"last"`` or a possibly negative int) names."""
    index = n_states - 1 if layer == "last" else int(layer)
    if not -n_states <= index < n_states:
        raise ValueError(f"layer={layer} is out of range for an upstream with {n_states} hidden states")
    return index % n_states


@dataclasses.dataclass(frozen=True)
class UpstreamSpec:
    """One SSL model as named in a config: S3PRL name, local checkpoint, fine-tuned weights.

    ``name`` (optional) labels the model's cached feature streams (``<name>.ft``,
    ``<name>.pt``); it defaults to the S3PRL name.
    """

    upstream: str
    path_or_url: Optional[str] = None
    finetuned: Optional[str] = None
    name: Optional[str] = None

    @property
    def label(self) -> str:
        return self.name or self.upstream

    @classmethod
    def from_config(cls, conf: Union[dict, "UpstreamSpec"], where: str) -> "UpstreamSpec":
        if isinstance(conf, UpstreamSpec):
            return conf
        if not isinstance(conf, dict):
            raise TypeError(f"{where}: expected a mapping like {{upstream: wavlm_large, finetuned: ...}}, got {conf!r}")
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(conf) - allowed)
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
        if "upstream" not in conf:
            raise ValueError(f"{where}: missing required option 'upstream' (an S3PRL name)")
        return cls(**conf)


def select_hidden_state(
    hidden_states: Sequence[torch.Tensor], layer: Union[str, int], hidden_norm: str
) -> torch.Tensor:
    """Pick one hidden state and apply the documented per-layer normalisation."""
    n_states = len(hidden_states)
    index = hidden_state_index(layer, n_states)
    h = hidden_states[index]
    normalise = hidden_norm == "layer_norm" or (hidden_norm == "auto" and index != n_states - 1)
    return F.layer_norm(h, h.shape[-1:]) if normalise else h


def align_lengths(lengths: List[torch.Tensor], max_frame_diff: int, names: List[str]) -> torch.Tensor:
    """Per-utterance common length; refuse differences above ``max_frame_diff`` frames."""
    stacked = torch.stack([length.to(torch.long) for length in lengths])
    spread = stacked.max(0).values - stacked.min(0).values
    if int(spread.max()) > max_frame_diff:
        utt = int(spread.argmax())
        per_model = {n: int(length[utt]) for n, length in zip(names, lengths)}
        raise RuntimeError(
            f"frame counts differ by more than {max_frame_diff} for batch item {utt}: {per_model}; "
            "the upstreams must share a frame rate"
        )
    return stacked.min(0).values


def mask_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Trim axis 1 (frames) to the longest length and zero frames past each utterance's length."""
    x = x[:, : int(lengths.max())]
    valid = ~make_pad_mask(lengths.to(x.device), maxlen=x.size(1))
    return x * valid.reshape(valid.shape + (1,) * (x.dim() - 2)).to(x.dtype)


class SSLEmbeddingExtractor(torch.nn.Module):
    """Reference E_ft plus, per other model, E_delta (``mode: delta``) or E_ft (``mode: full``)."""

    def __init__(
        self,
        reference: Union[dict, UpstreamSpec],
        others: Sequence[Union[dict, UpstreamSpec]],
        mode: str = "delta",
        layer: Union[str, int] = "last",
        hidden_norm: str = "auto",
        max_frame_diff: int = 2,
    ) -> None:
        super().__init__()
        check_options(mode, layer, hidden_norm)
        self.mode = mode
        self.layer = layer
        self.hidden_norm = hidden_norm
        self.max_frame_diff = max_frame_diff
        self.reference_spec = UpstreamSpec.from_config(reference, "reference")
        self.other_specs = [UpstreamSpec.from_config(o, f"deltas[{i}]") for i, o in enumerate(others)]
        if not self.other_specs:
            raise ValueError("deltas: give at least one model to fuse with the reference")
        for i, spec in enumerate(self.other_specs):
            if spec.finetuned is None:
                raise ValueError(f"deltas[{i}] ({spec.upstream}): 'finetuned' is required")
        self.stream_names()  # refuse clashing labels before loading any model

        self.reference_ft = FrozenUpstream(_load(self.reference_spec, finetuned=True))
        self.others_ft = torch.nn.ModuleList(FrozenUpstream(_load(s, finetuned=True)) for s in self.other_specs)
        self.others_pt = torch.nn.ModuleList(
            FrozenUpstream(_load(s, finetuned=False)) for s in self.other_specs if mode == "delta"
        )

    @property
    def reference_size(self) -> int:
        return self.reference_ft.hidden_sizes[-1]

    @property
    def other_sizes(self) -> List[int]:
        return [u.hidden_sizes[-1] for u in self.others_ft]

    @property
    def reference_num_states(self) -> int:
        return len(self.reference_ft.hidden_sizes)

    @property
    def other_num_states(self) -> List[int]:
        return [len(u.hidden_sizes) for u in self.others_ft]

    def _state(self, upstream: FrozenUpstream, wavs: torch.Tensor, wavs_len: torch.Tensor):
        hs, frames = upstream(wavs, wavs_len)
        return select_hidden_state(hs, self.layer, self.hidden_norm), frames

    def _all_states(self, upstream: FrozenUpstream, wavs: torch.Tensor, wavs_len: torch.Tensor):
        """Every hidden state, each normalised as :func:`select_hidden_state` would, as (B, T, L, D)."""
        hs, frames = upstream(wavs, wavs_len)
        return torch.stack([select_hidden_state(hs, i, self.hidden_norm) for i in range(len(hs))], dim=2), frames

    def _run(self, wavs: torch.Tensor, wavs_len: torch.Tensor, pick) -> Tuple[List[torch.Tensor], torch.Tensor]:
        with torch.no_grad():
            outs, lens = [], []
            out, n = pick(self.reference_ft, wavs, wavs_len)
            outs.append(out)
            lens.append(n)
            for j, ft in enumerate(self.others_ft):
                if self.mode == "delta":
                    out, n = pick(self.others_pt[j], wavs, wavs_len)
                    outs.append(out)
                    lens.append(n)
                out, n = pick(ft, wavs, wavs_len)
                outs.append(out)
                lens.append(n)
            lengths = align_lengths(lens, self.max_frame_diff, self.stream_names())
            return [mask_padding(o, lengths) for o in outs], lengths

    def streams(self, wavs: torch.Tensor, wavs_len: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """The raw streams of one pass, aligned and padding-zeroed, with their lengths.

        Order: reference E_ft, then per other model E_pt (``mode: delta`` only) and E_ft,
        as named by :meth:`stream_names`. Feature caching stores these, so that one
        extraction serves both modes and every subset of the other models.
        """
        return self._run(wavs, wavs_len, self._state)

    def layer_streams(
        self, wavs: torch.Tensor, wavs_len: torch.Tensor
    ) -> Tuple[torch.Tensor, List[torch.Tensor], torch.Tensor]:
        """Like :meth:`forward` at every hidden state: ``(E_ref (B,L,T,D), [E_j (B,L_j,T,D_j)], lengths)``.

        ``layer`` is ignored; ``hidden_norm`` applies per state exactly as for a single
        selected state (``auto``: every state but the last is normalised, before the
        delta is taken), so state i of the result equals :meth:`forward` with ``layer=i``.
        """
        outs, lengths = self._run(wavs, wavs_len, self._all_states)
        outs = [o.transpose(1, 2) for o in outs]
        return outs[0], self._others(outs[1:]), lengths

    def stream_names(self) -> List[str]:
        return stream_names(self.reference_spec.label, [s.label for s in self.other_specs], self.mode)

    def forward(
        self, wavs: torch.Tensor, wavs_len: torch.Tensor
    ) -> Tuple[torch.Tensor, List[torch.Tensor], torch.Tensor]:
        """Return ``(E_ref (B,T,D), [E_j (B,T,D_j)], lengths (B,))`` with padded frames zeroed."""
        outs, lengths = self.streams(wavs, wavs_len)
        return outs[0], self._others(outs[1:]), lengths

    def _others(self, rest: List[torch.Tensor]) -> List[torch.Tensor]:
        """E_ft - E_pt per other model (``mode: delta``) or E_ft (``mode: full``)."""
        if self.mode == "delta":
            return [ft - pt for pt, ft in zip(rest[0::2], rest[1::2])]
        return rest

    def describe(self) -> Dict[str, object]:
        return {
            "reference": dataclasses.asdict(self.reference_spec),
            "others": [dataclasses.asdict(s) for s in self.other_specs],
            "mode": self.mode,
            "layer": self.layer,
        }


def _load(spec: UpstreamSpec, finetuned: bool):
    return load_upstream(spec.upstream, spec.path_or_url, spec.finetuned if finetuned else None)
