"""What to extract (the extraction config) and whether an existing cache holds exactly that.

A cache directory is reused only when its ``layout.json`` matches the config: stream
names, dtype, mode, layer, hidden_norm and each checkpoint's fingerprint (absolute
path, size, mtime: a retrained checkpoint is a different model). How the cache is split
into shards is not part of its identity (:func:`espnet_delta.features.shards.plan_shards`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from espnet_delta.features.layout import (  # noqa: F401  (LayoutMismatchError: re-exported)
    FeatureLayout,
    LayoutMismatchError,
    StreamColumns,
    check_format,
)
from espnet_delta.fileio import load_yaml
from espnet_delta.ssl.embeddings import (
    ALL_STATES,
    SSLEmbeddingExtractor,
    UpstreamSpec,
    check_options,
    hidden_state_index,
)
from espnet_delta.ssl.streams import stream_names

SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class ExtractionConfig:
    """What to extract: ``{reference, others, mode, layer, hidden_norm}`` (conf/extract.yaml).

    ``layer`` is ``last``, a hidden-state index, or ``all``: every hidden state of every
    stream (L x D columns per frame, state-major), for fusion with a layer interface
    per stream (``cached_fusion``'s ``interface``).

    Each model is ``{upstream, path_or_url, finetuned, name}``; ``name`` (default: the
    S3PRL name) names its streams, and must differ between models of one extraction
    (e.g. two HuBERTs fine-tuned on different data, or WavLM as reference and as a
    delta model).

    ``deltas`` is accepted instead of ``others`` (the frontend's name for it), so the
    ``frontend_conf`` of a delta_fusion config can be reused. Checkpoint paths are
    relative to the current directory (the recipe directory).
    """

    reference: UpstreamSpec
    others: Tuple[UpstreamSpec, ...]
    mode: str = "delta"
    layer: Union[str, int] = "last"
    hidden_norm: str = "auto"
    max_frame_diff: int = 2

    def __post_init__(self) -> None:
        check_options(self.mode, self.layer, self.hidden_norm, allow_all=True)
        if not self.others:
            raise ValueError("others: give at least one model besides the reference")
        for i, spec in enumerate(self.others):
            if spec.finetuned is None:
                raise ValueError(f"others[{i}] ({spec.upstream}): 'finetuned' is required")
        self.stream_names()  # refuses a name that occurs twice

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = "extraction config") -> "ExtractionConfig":
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        allowed = {"reference", "others", "deltas", "mode", "layer", "hidden_norm", "max_frame_diff"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        if "others" in data and "deltas" in data:
            raise ValueError(f"{where}: give 'others' or 'deltas', not both")
        if "reference" not in data:
            raise ValueError(f"{where}: 'reference' is required, e.g. {{upstream: wavlm_local, path_or_url: ...}}")
        others = data.get("others", data.get("deltas")) or []
        if not isinstance(others, list):
            raise ValueError(f"{where}: 'others' must be a list of {{upstream, path_or_url, finetuned}}")
        try:
            return cls(
                reference=UpstreamSpec.from_config(data["reference"], f"{where}: reference"),
                others=tuple(UpstreamSpec.from_config(o, f"{where}: others[{i}]") for i, o in enumerate(others)),
                mode=data.get("mode", "delta"),
                layer=data.get("layer", "last"),
                hidden_norm=data.get("hidden_norm", "auto"),
                max_frame_diff=int(data.get("max_frame_diff", 2)),
            )
        except (TypeError, ValueError) as e:
            msg = str(e)
            raise ValueError(msg if msg.startswith(where) else f"{where}: {msg}") from e

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "ExtractionConfig":
        return cls.from_dict(load_yaml(Path(path)), where=str(path))

    @classmethod
    def from_config(cls, conf: Union[str, os.PathLike, Dict[str, Any], "ExtractionConfig"]) -> "ExtractionConfig":
        if isinstance(conf, ExtractionConfig):
            return conf
        if isinstance(conf, dict):
            return cls.from_dict(conf)
        return cls.load(conf)

    def check_files(self) -> None:
        """Fail early (before any model is loaded) on a missing checkpoint."""
        specs = [("reference", self.reference)] + [(f"others[{i}]", s) for i, s in enumerate(self.others)]
        for where, spec in specs:
            if spec.finetuned is not None and not Path(spec.finetuned).is_file():
                raise FileNotFoundError(f"{where}.finetuned: checkpoint not found: {spec.finetuned}")
            local = spec.path_or_url is not None and spec.upstream.endswith("_local")
            if local and not Path(spec.path_or_url).is_file():
                raise FileNotFoundError(f"{where}.path_or_url: checkpoint not found: {spec.path_or_url}")

    def stream_names(self) -> List[str]:
        """Same order as :meth:`SSLEmbeddingExtractor.stream_names`."""
        return stream_names(self.reference.label, [s.label for s in self.others], self.mode)

    def build_extractor(self, autocast: str = "none", share_cnn: bool = True) -> SSLEmbeddingExtractor:
        """The extractor; ``autocast`` and ``share_cnn`` are compute options (see
        :class:`SSLEmbeddingExtractor`), not part of what is extracted."""
        return SSLEmbeddingExtractor(
            self.reference,
            list(self.others),
            mode=self.mode,
            layer=self.layer,
            hidden_norm=self.hidden_norm,
            max_frame_diff=self.max_frame_diff,
            autocast=autocast,
            share_cnn=share_cnn,
        )

    def models_record(self) -> Dict[str, Any]:
        """The specs as given plus a fingerprint (absolute path, size, mtime) of each checkpoint."""
        return {"reference": _spec_record(self.reference), "others": [_spec_record(s) for s in self.others]}

    def check_extractor(self, extractor: SSLEmbeddingExtractor) -> None:
        """Refuse an extractor built for another configuration."""
        ext = extractor
        theirs = (ext.reference_spec, tuple(ext.other_specs), ext.mode, ext.layer, ext.hidden_norm)
        ours = (self.reference, self.others, self.mode, self.layer, self.hidden_norm)
        if theirs != ours:
            raise ValueError(f"the given extractor was built for {ext.describe()}, not for this extraction config")


def _spec_record(spec: UpstreamSpec) -> Dict[str, Any]:
    record: Dict[str, Any] = dataclasses.asdict(spec)
    record["files"] = {key: _fingerprint(record[key]) for key in _AS_GIVEN if record[key] is not None}
    return record


def _fingerprint(path: str) -> Optional[Dict[str, Any]]:
    """Absolute path, size and mtime of a checkpoint (None for something that is not a file, e.g. a URL)."""
    p = Path(path)
    if not p.is_file():
        return None
    st = p.stat()  # follows symlinks: valid.loss.best.pth -> Nepoch.pth
    return {"path": os.path.abspath(p), "size": st.st_size, "mtime": st.st_mtime}




def layout_for(extractor: SSLEmbeddingExtractor, config: ExtractionConfig, dtype: str) -> FeatureLayout:
    """The column layout of the matrices ``extractor`` produces."""
    names = extractor.stream_names()
    if names != config.stream_names():
        raise ValueError(f"extractor streams {names} differ from the config's {config.stream_names()}")

    def state_shape(upstream) -> Tuple[int, int]:  # (states, dim) per model (depths may differ)
        sizes = upstream.hidden_sizes
        if config.layer == ALL_STATES:
            if len(set(sizes)) != 1:
                raise ValueError(f"layer: all needs hidden states of one size; {extractor.describe()} has {sizes}")
            return len(sizes), int(sizes[0])
        return 1, int(sizes[hidden_state_index(config.layer, len(sizes))])

    shapes = [state_shape(extractor.reference_ft)]
    for j, ft in enumerate(extractor.others_ft):
        if config.mode == "delta":  # E_delta has E_pt's (= E_ft's) dimension
            shapes.append(state_shape(extractor.others_pt[j]))
        shapes.append(state_shape(ft))
    streams, start = [], 0
    for name, (states, dim) in zip(names, shapes):
        streams.append(StreamColumns(name, start, start + states * dim, states=states))
        start += states * dim
    return FeatureLayout(
        streams=tuple(streams),
        dtype=dtype,
        mode=config.mode,
        layer=config.layer,
        hidden_norm=config.hidden_norm,
        sample_rate=SAMPLE_RATE,
        frame_shift=_frame_shift(extractor),
        models=config.models_record(),
        autocast=extractor.autocast,
    )


def _frame_shift(extractor: SSLEmbeddingExtractor) -> int:
    from espnet_delta.ssl.upstream import conv_strides

    try:
        return int(math.prod(s for _, s in conv_strides(extractor.reference_ft.upstream.upstream.model)))
    except AttributeError:
        logging.warning(
            "could not read the conv strides of %s; assuming 320 samples per frame", extractor.reference_spec.upstream
        )
        return 320


#: layout.json keys that are provenance as given, not identity: a checkpoint is identified
#: by its fingerprint (absolute path, size, mtime), not by how its path was spelt.
_AS_GIVEN = ("path_or_url", "finetuned")


def _comparable(layout: Dict[str, Any], with_columns: bool) -> Dict[str, Any]:
    keys = ["format", "dtype", "autocast", "mode", "layer", "hidden_norm"]
    keys += ["sample_rate", "frame_shift"] if with_columns else []
    out: Dict[str, Any] = {k: layout.get(k) for k in keys}
    out["autocast"] = out["autocast"] or "none"
    out["stream_names"] = [s["name"] for s in layout.get("streams", [])]
    if with_columns:
        out["streams"] = [[s["name"], s["start"], s["end"]] for s in layout.get("streams", [])]
    models = json.loads(json.dumps(layout.get("models") or {}))
    for spec in [models.get("reference")] + list(models.get("others") or []):
        if isinstance(spec, dict):
            for key in _AS_GIVEN:
                spec.pop(key, None)
    out["models"] = models
    return out


def _differences(old: Any, new: Any, prefix: str = "") -> List[Tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += _differences(a, b, f"{prefix}[{i}]")
        return out
    return [] if old == new else [(prefix, old, new)]


def check_layout_file(path: Path, expected: Dict[str, Any], with_columns: bool = True) -> None:
    """Raise :class:`LayoutMismatchError` naming the differing keys when ``path`` disagrees."""
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LayoutMismatchError(
            f"{path}: cannot read the existing layout ({e}); pass --overwrite to start over"
        ) from e
    if not isinstance(existing, dict):
        raise LayoutMismatchError(f"{path}: not a layout mapping; pass --overwrite to start over")
    check_format({"format": existing.get("format", "(none)")}, str(path))
    diffs = _differences(_comparable(existing, with_columns), _comparable(expected, with_columns))
    if diffs:
        shown = "; ".join(f"{key}: {old!r} in the file, {new!r} now" for key, old, new in diffs[:5])
        more = f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""
        raise LayoutMismatchError(
            f"{path} was written for a different configuration: {shown}{more}. "
            "Use another --out_dir, or pass --overwrite to delete these features and extract again"
        )
