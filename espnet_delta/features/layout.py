"""Cached SSL feature matrices: the column layout and how to read streams back.

Feature extraction (:mod:`espnet_delta.features.extract`, ``python -m
espnet_delta.bin.extract_features``) stores ONE float matrix ``(T, sum D_s)`` per
utterance: the streams of :meth:`SSLEmbeddingExtractor.stream_names` concatenated
along the feature axis, e.g. for a WavLM reference and HuBERT / wav2vec2 as the other
models (``mode: delta``)::

    wavlm_local.ft | hubert_local.delta | hubert_local.ft | wav2vec2_local.delta | wav2vec2_local.ft

so that one extraction serves both fusion modes (delta = the ``.delta`` columns,
full = the ``.ft`` columns) and every subset of the other models. The layout
(stream names and their column ranges, plus provenance) is ``layout.json`` next to
the features; :class:`FeatureLayout` reads it, or a plain dict of the same shape
(e.g. from a YAML config), and slices a matrix -- numpy array or torch tensor, one
utterance ``(T, D)`` or a padded batch ``(B, T, D)`` -- into streams.

Why the delta is stored (format 2) rather than E_pt (format 1): the delta is
computed in float32 from the float32 forwards and rounded ONCE to the storage dtype,
so a float16 cache holds it to 2^-11 of its own magnitude. Format 1 stored E_ft and
E_pt rounded separately; their difference then carries the float16 spacing of the
operands (2^-8 absolute near |E| = 10 at worst, half of 2^-7), which for a small
delta can exceed the delta itself. A hand-written layout (a dict without ``format``)
may still name ``<model>.pt`` streams; the delta is then ``ft - pt`` in float32.
With ``layer: all`` every stream holds all L hidden states of its model, flattened
state-major (``L x D`` columns per frame; ``states`` in the stream's entry), for fusion
through a layer interface per stream (:class:`~espnet_delta.asr.frontend.cached_fusion.CachedFusionFrontend`'s
``interface``); :func:`unflatten_states` turns such a stream back into ``[B, L, T, D]``.
Storage: 4 bytes per value in float32, 2 in float16 (kaldiio's NPY record adds ~80
bytes per utterance); a 1024-dim stream at 50 frames/s is 184.3 M values per audio
hour, i.e. 737 MB (float32) or 369 MB (float16).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from espnet_delta.fileio import write_text_atomic
from espnet_delta.ssl.streams import AUTOCASTS, DELTA, FT, KINDS, MODES, PT, stream_name

#: Version tag written into layout.json. 2: the other models' streams are
#: ``<name>.delta`` (E_ft - E_pt, rounded once) and ``<name>.ft``; 1 stored ``<name>.pt``.
LAYOUT_FORMAT = "espnet_delta.features.layout/2"
LAYOUT_FILE = "layout.json"
DTYPES = ("float32", "float16")


class LayoutError(ValueError):
    """A layout (file or dict) is malformed, or a matrix/stream does not fit it."""


class LayoutMismatchError(RuntimeError):
    """Features on disk were written for a different configuration or layout format."""


def split_stream_name(name: str) -> Tuple[str, str]:
    model, dot, kind = name.rpartition(".")
    if not dot or not model or kind not in KINDS:
        raise LayoutError(f"stream name {name!r} is not '<model>.ft', '<model>.delta' or '<model>.pt'")
    return model, kind


@dataclasses.dataclass(frozen=True)
class StreamColumns:
    """Columns ``[start, end)`` of one stream in the stored matrix; ``states`` > 1: the
    stream holds that many hidden states of ``dim // states`` features each, state-major
    (extraction with ``layer: all``)."""

    name: str
    start: int
    end: int
    states: int = 1

    def __post_init__(self) -> None:
        if self.states < 1 or (self.end - self.start) % self.states:
            raise LayoutError(
                f"stream {self.name!r}: {self.end - self.start} columns do not split into {self.states} hidden states"
            )

    @property
    def dim(self) -> int:
        return self.end - self.start

    @property
    def state_dim(self) -> int:
        return self.dim // self.states

    @property
    def slice(self) -> slice:
        return slice(self.start, self.end)


@dataclasses.dataclass(frozen=True)
class FeatureLayout:
    """Which columns of a cached feature matrix hold which stream.

    ``streams`` are contiguous and cover ``[0, dim)``; the first one is the reference
    model's fine-tuned stream. The other fields describe how the features were made
    (``models`` holds the specs and checkpoint fingerprints) and are informational
    for a reader. ``source`` (the file it was read from) is used in error messages
    only.
    """

    streams: Tuple[StreamColumns, ...]
    dtype: str = "float32"
    mode: Optional[str] = None
    layer: Union[str, int] = "last"
    hidden_norm: str = "auto"
    sample_rate: int = 16000
    frame_shift: int = 320
    models: Optional[Dict[str, Any]] = None
    autocast: str = "none"
    source: Optional[str] = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        where = self._where()
        if not self.streams:
            raise LayoutError(f"{where}: no streams")
        seen = set()
        expected_start = 0
        for s in self.streams:
            split_stream_name(s.name)
            if s.name in seen:
                raise LayoutError(
                    f"{where}: stream {s.name!r} appears twice; two models of one extraction need distinct names"
                )
            seen.add(s.name)
            if s.start != expected_start or s.end <= s.start:
                raise LayoutError(
                    f"{where}: stream {s.name!r} has columns [{s.start}, {s.end}); streams must be contiguous "
                    f"and non-empty, this one should start at {expected_start}"
                )
            expected_start = s.end
        if split_stream_name(self.streams[0].name)[1] != FT:
            raise LayoutError(
                f"{where}: the first stream must be the reference's fine-tuned one, got {self.streams[0].name!r}"
            )
        if self.dtype not in DTYPES:
            raise LayoutError(f"{where}: dtype={self.dtype!r}; expected one of {DTYPES}")
        if self.autocast not in AUTOCASTS:
            raise LayoutError(f"{where}: autocast={self.autocast!r}; expected one of {AUTOCASTS}")

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: Optional[str] = None) -> "FeatureLayout":
        """From :meth:`to_dict` output or a hand-written mapping.

        ``streams`` is a list of ``{name, start, end}`` or ``{name, dim}`` (columns then
        follow in list order); everything else is optional. Unknown keys are ignored; a
        ``format`` other than :data:`LAYOUT_FORMAT` (an older cache) is refused with
        :class:`LayoutMismatchError`, since its columns mean something else.
        """
        where = source or "feature layout"
        if not isinstance(data, dict) or "streams" not in data:
            raise LayoutError(f"{where}: expected a mapping with a 'streams' list, got {type(data).__name__}")
        check_format(data, where)
        raw = data["streams"]
        if not isinstance(raw, list):
            raise LayoutError(f"{where}: 'streams' must be a list of {{name, start, end}} or {{name, dim}}")
        streams, start = [], 0
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict) or "name" not in entry:
                raise LayoutError(f"{where}: streams[{i}] must be a mapping with 'name', got {entry!r}")
            if "start" in entry and "end" in entry:
                s, e = int(entry["start"]), int(entry["end"])
                if "dim" in entry and int(entry["dim"]) != e - s:
                    raise LayoutError(f"{where}: streams[{i}] ({entry['name']}): dim {entry['dim']} != end - start")
            elif "dim" in entry:
                s, e = start, start + int(entry["dim"])
            else:
                raise LayoutError(f"{where}: streams[{i}] ({entry['name']}) needs 'start' and 'end', or 'dim'")
            streams.append(StreamColumns(str(entry["name"]), s, e, states=int(entry.get("states", 1))))
            start = e
        if "dim" in data and int(data["dim"]) != start:
            raise LayoutError(f"{where}: 'dim' is {data['dim']} but the streams cover {start} columns")
        optional = ("dtype", "mode", "layer", "hidden_norm", "sample_rate", "frame_shift", "models", "autocast")
        kwargs = {f: data[f] for f in optional if f in data}
        return cls(streams=tuple(streams), source=source, **kwargs)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "FeatureLayout":
        """Read ``layout.json`` (or a directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / LAYOUT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"feature layout not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise LayoutError(f"{path}: invalid JSON: {e}") from e
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_config(cls, conf: Union[str, os.PathLike, Dict[str, Any], "FeatureLayout"]) -> "FeatureLayout":
        """A layout from a path (file or feature dir), a dict, or a layout."""
        if isinstance(conf, FeatureLayout):
            return conf
        if isinstance(conf, dict):
            return cls.from_dict(conf)
        if isinstance(conf, (str, os.PathLike)):
            return cls.load(conf)
        raise LayoutError(f"feature layout: expected a path to layout.json or a mapping, got {type(conf).__name__}")

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "format": LAYOUT_FORMAT,
            "dim": self.dim,
            "dtype": self.dtype,
            "streams": [
                {"name": s.name, "start": s.start, "end": s.end, "dim": s.dim, **({"states": s.states} if s.states > 1 else {})}
                for s in self.streams
            ],
            "reference": self.reference,
            "others": self.others,
            "mode": self.mode,
            "layer": self.layer,
            "hidden_norm": self.hidden_norm,
            "sample_rate": self.sample_rate,
            "frame_shift": self.frame_shift,
            "frame_rate": self.frame_rate,
            "autocast": self.autocast,
        }
        if self.models is not None:
            out["models"] = self.models
        return out

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write JSON atomically (temporary file, then rename)."""
        return write_json_atomic(self.to_dict(), Path(path))

    # ----------------------------------------------------------------- queries

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.streams]

    @property
    def dim(self) -> int:
        return self.streams[-1].end

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.frame_shift

    @property
    def reference(self) -> str:
        """Model name of the reference (the first stream)."""
        return split_stream_name(self.streams[0].name)[0]

    @property
    def others(self) -> List[str]:
        """Model names of the other models, in column order."""
        out: List[str] = []
        for s in self.streams[1:]:
            model = split_stream_name(s.name)[0]
            if model not in out:
                out.append(model)
        return out

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.streams)

    def stream_columns(self, name: str) -> StreamColumns:
        for s in self.streams:
            if s.name == name:
                return s
        raise LayoutError(f"{self._where()}: no stream {name!r}; the layout has {self.names}")

    def columns(self, name: str) -> slice:
        """Column slice of a stream (``"hubert_local.ft"``)."""
        return self.stream_columns(name).slice

    def stream_dim(self, name: str) -> int:
        return self.stream_columns(name).dim

    def stream_states(self, name: str) -> Tuple[int, int]:
        """``(L, D)``: hidden states per frame and features per state (``(1, dim)`` for one state)."""
        s = self.stream_columns(name)
        return s.states, s.state_dim

    @property
    def multi_state(self) -> bool:
        """Whether the streams hold every hidden state (``layer: all``)."""
        return any(s.states > 1 for s in self.streams)

    # ----------------------------------------------------------------- reading

    def check_matrix(self, matrix) -> None:
        if matrix.shape[-1] != self.dim:
            raise LayoutError(
                f"{self._where()}: feature matrix has {matrix.shape[-1]} columns, the layout {self.dim} "
                f"({', '.join(f'{s.name}:{s.dim}' for s in self.streams)})"
            )

    def stream(self, matrix, name: str):
        """One stream of ``matrix`` (``(..., D_total)`` -> ``(..., D_s)``), a view."""
        self.check_matrix(matrix)
        return matrix[..., self.columns(name)]

    def read_streams(self, matrix, names: Sequence[str]) -> list:
        return [self.stream(matrix, n) for n in names]

    def ft(self, matrix, model: str):
        """E_ft of ``model``: a model name (its ``name``, default the S3PRL name, e.g.
        ``"hubert_local"``) or a stream name (``"hubert_local.ft"``)."""
        return self.stream(matrix, stream_name(_model_of(model), FT))

    def pt(self, matrix, model: str):
        """E_pt of ``model``: the stored stream, else E_ft - E_delta (float32; for analysis)."""
        model = _model_of(model)
        if self.has(stream_name(model, PT)):
            return self.stream(matrix, stream_name(model, PT))
        self.require_delta(model)
        return _at_least_float32(self.ft(matrix, model)) - _at_least_float32(self.delta(matrix, model))

    def require_delta(self, model: str) -> None:
        """Refuse a model whose delta cannot be read (extracted with ``mode: full``)."""
        model = _model_of(model)
        if not (self.has(stream_name(model, DELTA)) or self.has(stream_name(model, PT))):
            raise LayoutError(
                f"{self._where()}: no delta stream {stream_name(model, DELTA)!r} (nor a pre-trained stream "
                f"{stream_name(model, PT)!r} to compute it from); the features were extracted with mode: "
                f"{self.mode}; extract with mode: delta"
            )

    def delta(self, matrix, model: str):
        """E_delta = E_ft - E_pt of ``model`` in at least float32: the stored ``.delta``
        stream (rounded once at extraction), else ``ft - pt`` of a hand-written layout."""
        model = _model_of(model)
        self.require_delta(model)
        if self.has(stream_name(model, DELTA)):
            return _at_least_float32(self.stream(matrix, stream_name(model, DELTA)))
        pt = self.stream(matrix, stream_name(model, PT))
        return _at_least_float32(self.ft(matrix, model)) - _at_least_float32(pt)

    def fusion_inputs(self, matrix, reference: str, others: Sequence[str], mode: str = "delta"):
        """``(E_ft^ref, [E_delta^j or E_ft^j for j in others])`` as the fusion head takes them."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; expected one of {MODES}")
        ref = self.ft(matrix, reference)
        pick = self.delta if mode == "delta" else self.ft
        return ref, [pick(matrix, o) for o in others]

    def _where(self) -> str:
        return self.source or "feature layout"


def read_streams(matrix, layout: Union[FeatureLayout, Dict[str, Any], str, os.PathLike], names: Sequence[str]) -> list:
    """The named streams (``"wavlm_local.ft"``, ...) of a cached feature matrix."""
    return FeatureLayout.from_config(layout).read_streams(matrix, names)


def _model_of(name: str) -> str:
    if any(name.endswith(f".{kind}") for kind in KINDS):
        return split_stream_name(name)[0]
    return name


def check_format(data: Dict[str, Any], where: str) -> None:
    """Refuse a layout written in another format (a hand-written one has no ``format``)."""
    found = data.get("format")
    if found is not None and found != LAYOUT_FORMAT:
        raise LayoutMismatchError(
            f"{where}: layout format {found!r}, this version reads {LAYOUT_FORMAT!r}. Format 1 stored E_pt "
            "and E_ft separately (a float16 cache then loses small deltas); format 2 stores the delta itself. "
            "Extract these features again (extract_features --overwrite, or delete the directory)"
        )


def _at_least_float32(x):
    if hasattr(x, "is_floating_point"):  # torch
        import torch

        return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    import numpy as np

    return x.astype(np.float32) if x.dtype == np.float16 else x


def write_json_atomic(data: Dict[str, Any], out: Path) -> Path:
    return write_text_atomic(out, json.dumps(data, indent=2) + "\n")


def unflatten_states(x, states: int):
    """A stored multi-state stream ``(B, T, L * D)`` as the ``(B, L, T, D)`` a layer interface takes."""
    b, t, width = x.shape
    if width % states:
        raise LayoutError(f"a stream of {width} columns does not split into {states} hidden states")
    return x.reshape(b, t, states, width // states).transpose(1, 2)
