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

Compute: upstreams whose CNN feature encoders are bit-identical (the pre-trained and
fine-tuned models of one upstream when fine-tuning froze the CNN) run it once per
batch (``share_cnn``, :func:`~espnet_delta.ssl.upstream.share_feature_encoders`);
``autocast`` (``bf16`` / ``fp16``, default ``none``) runs the upstream forwards under
``torch.autocast``. Either way every selected state is cast to float32 before
normalisation and before any delta is taken.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask

from espnet_delta.ssl.streams import AUTOCASTS, MODES, stream_names
from espnet_delta.ssl.upstream import FrozenUpstream, clear_shared_encoders, load_upstream, share_feature_encoders

HIDDEN_NORMS = ("auto", "layer_norm", "none")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


#: ``layer: all``: every hidden state (for a layer interface; the feature cache stores
#: each stream flattened state-major, L x D columns per frame)
ALL_STATES = "all"


def check_options(mode: str, layer: Union[str, int], hidden_norm: str, allow_all: bool = False) -> None:
    """Refuse an unknown ``mode`` / ``hidden_norm`` and a ``layer`` that is neither
    ``"last"`` nor an int (bools are refused although Python counts them as ints);
    ``"all"`` only where ``allow_all`` (the feature cache)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    if hidden_norm not in HIDDEN_NORMS:
        raise ValueError(f"hidden_norm={hidden_norm!r}; expected one of {HIDDEN_NORMS}")
    if allow_all and layer == ALL_STATES:
        return
    if layer != "last" and (isinstance(layer, bool) or not isinstance(layer, int)):
        expected = "'last', 'all'" if allow_all else "'last'"
        raise ValueError(f"layer={layer!r}; expected {expected} or a hidden-state index")


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


def cache_streams(outs: Sequence[torch.Tensor], mode: str) -> List[torch.Tensor]:
    """Raw outputs ``[E_ft^ref, (E_pt^j,) E_ft^j, ...]`` -> the cached streams
    ``[E_ft^ref, (E_ft^j - E_pt^j,) E_ft^j, ...]``; the delta in at least float32."""
    if mode == "full":
        return list(outs)
    stored = [outs[0]]
    for pt, ft in zip(outs[1::2], outs[2::2]):
        stored += [ft.float() - pt.float(), ft]
    return stored


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
        autocast: str = "none",
        share_cnn: bool = True,
    ) -> None:
        super().__init__()
        check_options(mode, layer, hidden_norm, allow_all=True)
        if autocast not in AUTOCASTS:
            raise ValueError(f"autocast={autocast!r}; expected one of {AUTOCASTS}")
        self.autocast = autocast
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
        #: groups of indices into :meth:`_upstreams` that run one CNN (singletons: their own)
        self.cnn_groups = [[i] for i in range(len(self._upstreams()))]
        if share_cnn:
            self.cnn_groups = share_feature_encoders(self._upstreams(), self._upstream_names())

    def _upstreams(self) -> List[FrozenUpstream]:
        """In forward order: reference E_ft, then per other model E_pt (delta mode) and E_ft."""
        out = [self.reference_ft]
        for j, ft in enumerate(self.others_ft):
            out += ([self.others_pt[j]] if self.mode == "delta" else []) + [ft]
        return out

    def _upstream_names(self) -> List[str]:
        out = [f"{self.reference_spec.label} (fine-tuned)"]
        for s in self.other_specs:
            out += ([f"{s.label} (pre-trained)"] if self.mode == "delta" else []) + [f"{s.label} (fine-tuned)"]
        return out

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

    def _forward(self, upstream: FrozenUpstream, wavs: torch.Tensor, wavs_len: torch.Tensor):
        """Hidden states under the configured autocast (float32 states come back either way).

        On the CPU, autocast runs without oneDNN: its bfloat16 grouped conv1d returns
        wrong values for some shapes (torch 2.9.1: 32 channels, kernel 16, 4 groups --
        the positional convolution of a small model -- is off by over 100 %), while
        ATen's own kernels are correct. CPU autocast is for testing the GPU path.
        """
        if self.autocast == "none":
            return upstream(wavs, wavs_len)
        device = wavs.device.type
        no_onednn = torch.backends.mkldnn.flags(enabled=False) if device == "cpu" else contextlib.nullcontext()
        with no_onednn, torch.autocast(device, dtype=_AUTOCAST_DTYPES[self.autocast]):
            hs, frames = upstream(wavs, wavs_len)
        return [h.float() for h in hs], frames

    def _state(self, upstream: FrozenUpstream, wavs: torch.Tensor, wavs_len: torch.Tensor):
        hs, frames = self._forward(upstream, wavs, wavs_len)
        return select_hidden_state(hs, self.layer, self.hidden_norm), frames

    def _all_states(self, upstream: FrozenUpstream, wavs: torch.Tensor, wavs_len: torch.Tensor):
        """Every hidden state, each normalised as :func:`select_hidden_state` would, as (B, T, L, D)."""
        hs, frames = self._forward(upstream, wavs, wavs_len)
        return torch.stack([select_hidden_state(hs, i, self.hidden_norm) for i in range(len(hs))], dim=2), frames

    def _run(self, wavs: torch.Tensor, wavs_len: torch.Tensor, pick) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Raw outputs in :meth:`_upstreams` order (E_ft^ref, [E_pt^j,] E_ft^j, ...), aligned."""
        upstreams = self._upstreams()
        try:
            with torch.no_grad():
                outs, lens = [], []
                for upstream in upstreams:
                    out, n = pick(upstream, wavs, wavs_len)
                    outs.append(out)
                    lens.append(n)
        finally:
            clear_shared_encoders(upstreams)
        lengths = align_lengths(lens, self.max_frame_diff, self._upstream_names())
        return [mask_padding(o, lengths) for o in outs], lengths

    def streams(self, wavs: torch.Tensor, wavs_len: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """The streams the feature cache stores, aligned, padding-zeroed, float32, with lengths.

        Order as named by :meth:`stream_names`: reference E_ft, then per other model
        E_delta = E_ft - E_pt (``mode: delta`` only; taken here in float32 from the
        float32 states, so a float16 cache rounds the delta once) and E_ft. One
        extraction serves both fusion modes and every subset of the other models.
        """
        if self.layer == ALL_STATES:  # (B, T, L, D) per stream, flattened state-major to (B, T, L * D)
            outs, lengths = self._run(wavs, wavs_len, self._all_states)
            return [o.flatten(2) for o in cache_streams(outs, self.mode)], lengths
        outs, lengths = self._run(wavs, wavs_len, self._state)
        return cache_streams(outs, self.mode), lengths

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
        if self.layer == ALL_STATES:
            raise ValueError("layer='all' gives every hidden state: use layer_streams() or streams(), not forward()")
        outs, lengths = self._run(wavs, wavs_len, self._state)
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
            "autocast": self.autocast,
        }


def _load(spec: UpstreamSpec, finetuned: bool):
    return load_upstream(spec.upstream, spec.path_or_url, spec.finetuned if finetuned else None)
