"""Extract SSL feature streams once, into sharded, resumable kaldiio ark/scp files.

One pass over a data dir runs every upstream of an extraction config (the
reference's fine-tuned model and, per other model, its pre-trained and fine-tuned
models) and stores per utterance ONE matrix ``(T, sum D_s)``: the streams of
:meth:`SSLEmbeddingExtractor.stream_names` side by side. :mod:`espnet_delta.features`
(:class:`~espnet_delta.features.FeatureLayout`) slices it back into streams and
computes deltas.

Output directory (``dump/feats/<set>/``)::

    layout.json          stream names and columns, dtype, layer, hidden_norm, mode, frame
                         shift, the model specs with their checkpoints' paths, sizes, mtimes
    shards.json          nj and a fingerprint of the utterance list (wav.scp)
    feats.<k>.ark        shard k = 1..nj: the matrices (float32 Kaldi "FM", or float16 as
                         kaldiio's NPY-in-ark record with --fp16)
    feats.<k>.shape      "utt T,D" for shard k
    feats.<k>.scp        "utt <out_dir>/feats.<k>.ark:<offset>": written LAST, by rename,
                         so a shard is complete iff its scp exists
    feats.scp            all shards merged, sorted by utterance id (C byte order)
    feats_shape          "utt T,D" (ESPnet's csv shape files: the samplers sort by T and
                         the numel sampler counts T*D elements per utterance)
    utt2num_frames       "utt T"

The merged files are written by whichever call finds every shard complete (so the
last of nj parallel ``--shard k`` calls merges), or by ``--merge_only``; ``feats.scp``
is written last. Utterances are sorted by id and dealt round-robin into shards
(utterance i goes to shard i % nj + 1). A shard being written holds an exclusive
lock (``.feats.<k>.lock``); a killed run leaves ``*.tmp`` files or an ark without
scp, which the next run removes before redoing that shard. Within a shard,
utterances are processed longest first in batches of at most ``batch_size``
utterances and ``batch_seconds`` of padded audio; each utterance's matrix is trimmed
to its own frame count and written as soon as its batch is done.

The ark paths in the scp files are ``out_dir`` as given: relative to the recipe
directory when ``out_dir`` is relative (ESPnet's convention), so run training from
there. A redone shard is byte-identical to an uninterrupted run with the same batch
settings, device and number of threads; another thread count changes values by
about 1e-6, another batch composition by up to about 1e-4 (float summation order).

An existing ``out_dir`` is reused only when its layout.json matches the config
(stream names, dtype, mode, layer, hidden_norm, and each checkpoint's absolute path,
size and mtime: a retrained checkpoint is a different model) and shards.json the
data (same utterances and paths; same nj unless already merged). Otherwise the call
fails naming the file and the differing keys; ``overwrite`` deletes the earlier
features first.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import kaldiio
import numpy as np
import soundfile
import torch

from espnet_delta.configs import load_yaml
from espnet_delta.embeddings import HIDDEN_NORMS, MODES, SSLEmbeddingExtractor, UpstreamSpec
from espnet_delta.features import FT, LAYOUT_FILE, PT, FeatureLayout, StreamColumns, stream_name, write_json_atomic

SAMPLE_RATE = 16000
SHARDS_FILE = "shards.json"
MERGED_FILES = ("utt2num_frames", "feats_shape", "feats.scp")  # in write order: feats.scp last


class LayoutMismatchError(RuntimeError):
    """An output directory holds features of a different configuration."""


class ShardBusyError(RuntimeError):
    """Another process is writing the same shard."""


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class ExtractionConfig:
    """What to extract: ``{reference, others, mode, layer, hidden_norm}`` (conf/extract.yaml).

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
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; expected one of {MODES}")
        if self.hidden_norm not in HIDDEN_NORMS:
            raise ValueError(f"hidden_norm={self.hidden_norm!r}; expected one of {HIDDEN_NORMS}")
        if self.layer != "last" and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise ValueError(f"layer={self.layer!r}; expected 'last' or a hidden-state index")
        if not self.others:
            raise ValueError("others: give at least one model besides the reference")
        for i, spec in enumerate(self.others):
            if spec.finetuned is None:
                raise ValueError(f"others[{i}] ({spec.upstream}): 'finetuned' is required")
        names = self.stream_names()
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(
                f"stream names {dups} occur twice: the streams are named '<name>.ft' / '<name>.pt' after each "
                "model's 'name' (default: its S3PRL upstream name); give the models distinct names"
            )

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
        names = [stream_name(self.reference.label, FT)]
        for spec in self.others:
            names += ([stream_name(spec.label, PT)] if self.mode == "delta" else []) + [stream_name(spec.label, FT)]
        return names

    def build_extractor(self) -> SSLEmbeddingExtractor:
        return SSLEmbeddingExtractor(
            self.reference,
            list(self.others),
            mode=self.mode,
            layer=self.layer,
            hidden_norm=self.hidden_norm,
            max_frame_diff=self.max_frame_diff,
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


# --------------------------------------------------------------------------- layout


def layout_for(extractor: SSLEmbeddingExtractor, config: ExtractionConfig, dtype: str) -> FeatureLayout:
    """The column layout of the matrices ``extractor`` produces."""
    names = extractor.stream_names()
    if names != config.stream_names():
        raise ValueError(f"extractor streams {names} differ from the config's {config.stream_names()}")
    index = -1 if config.layer == "last" else int(config.layer)
    dims = [extractor.reference_ft.hidden_sizes[index]]
    for j, ft in enumerate(extractor.others_ft):
        if config.mode == "delta":
            dims.append(extractor.others_pt[j].hidden_sizes[index])
        dims.append(ft.hidden_sizes[index])
    streams, start = [], 0
    for name, dim in zip(names, dims):
        streams.append(StreamColumns(name, start, start + int(dim)))
        start += int(dim)
    return FeatureLayout(
        streams=tuple(streams),
        dtype=dtype,
        mode=config.mode,
        layer=config.layer,
        hidden_norm=config.hidden_norm,
        sample_rate=SAMPLE_RATE,
        frame_shift=_frame_shift(extractor),
        models=config.models_record(),
    )


def _frame_shift(extractor: SSLEmbeddingExtractor) -> int:
    from espnet_delta.upstream import conv_strides

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
    keys = ["dtype", "mode", "layer", "hidden_norm"] + (["sample_rate", "frame_shift"] if with_columns else [])
    out: Dict[str, Any] = {k: layout.get(k) for k in keys}
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
    diffs = _differences(_comparable(existing, with_columns), _comparable(expected, with_columns))
    if diffs:
        shown = "; ".join(f"{key}: {old!r} in the file, {new!r} now" for key, old, new in diffs[:5])
        more = f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""
        raise LayoutMismatchError(
            f"{path} was written for a different configuration: {shown}{more}. "
            "Use another --out_dir, or pass --overwrite to delete these features and extract again"
        )


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class AudioItem:
    utt: str
    path: str
    lineno: int  # in wav.scp, for error messages


def read_wav_scp(wav_scp: Path) -> List[AudioItem]:
    """``utt path`` lines, sorted by id in C byte order; pipes and duplicate ids refused."""
    items, seen = [], {}
    with open(wav_scp, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            utt, _, path = line.rstrip("\n").partition(" ")
            path = path.strip()
            if not path or path.endswith("|"):
                raise ValueError(f"{wav_scp}:{lineno}: expected '<utt> <audio file>' (no pipes), got {line.strip()!r}")
            if utt in seen:
                raise ValueError(f"{wav_scp}:{lineno}: utterance {utt} already on line {seen[utt]}")
            seen[utt] = lineno
            items.append(AudioItem(utt, path, lineno))
    if not items:
        raise ValueError(f"{wav_scp}: no utterances")
    return sorted(items, key=lambda it: it.utt.encode("utf-8"))


def shard_items(items: Sequence[AudioItem], nj: int, shard: int) -> List[AudioItem]:
    """Round-robin: the i-th utterance (sorted by id) goes to shard i % nj + 1."""
    return list(items[shard - 1 :: nj])


def _utts_fingerprint(items: Sequence[AudioItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.utt} {it.path}\n".encode("utf-8"))
    return h.hexdigest()


class AudioReader:
    def __init__(self, wav_scp: Path) -> None:
        self.wav_scp = wav_scp

    def _where(self, item: AudioItem) -> str:
        return f"{self.wav_scp}:{item.lineno}: {item.utt}"

    def num_samples(self, item: AudioItem) -> int:
        try:
            info = soundfile.info(item.path)
        except Exception as e:  # soundfile raises several types
            raise ValueError(f"{self._where(item)}: cannot read {item.path}: {e}") from e
        self._check_format(item, info.samplerate, info.channels)
        if info.frames <= 0 or info.frames >= 1 << 62:  # FLAC header without a length
            return len(self.read(item))
        return int(info.frames)

    def read(self, item: AudioItem) -> np.ndarray:
        try:
            wav, rate = soundfile.read(item.path, dtype="float32", always_2d=True)
        except Exception as e:
            raise ValueError(f"{self._where(item)}: cannot read {item.path}: {e}") from e
        self._check_format(item, rate, wav.shape[1])
        if wav.shape[0] == 0:
            raise ValueError(f"{self._where(item)}: {item.path} holds no samples")
        return wav[:, 0]

    def _check_format(self, item: AudioItem, rate: int, channels: int) -> None:
        if rate != SAMPLE_RATE or channels != 1:
            raise ValueError(
                f"{self._where(item)}: {item.path} is {rate} Hz with {channels} channel(s); "
                f"the upstreams take {SAMPLE_RATE} Hz mono (data preparation resamples)"
            )


def make_batches(
    items: Sequence[AudioItem], lengths: Sequence[int], batch_samples: int, batch_size: int
) -> List[List[Tuple[AudioItem, int]]]:
    """Longest first; a batch holds at most ``batch_size`` utterances and ``batch_samples``
    padded samples (one utterance longer than that forms a batch alone)."""
    order = sorted(zip(items, lengths), key=lambda p: (-p[1], p[0].utt.encode("utf-8")))
    batches: List[List[Tuple[AudioItem, int]]] = []
    current: List[Tuple[AudioItem, int]] = []
    for item, n in order:
        if current and (len(current) >= batch_size or (len(current) + 1) * current[0][1] > batch_samples):
            batches.append(current)
            current = []
        current.append((item, n))
    if current:
        batches.append(current)
    return batches


# --------------------------------------------------------------------------- shard files


@dataclasses.dataclass(frozen=True)
class ShardFiles:
    out_dir: Path
    k: int

    @property
    def ark(self) -> Path:
        return self.out_dir / f"feats.{self.k}.ark"

    @property
    def scp(self) -> Path:
        return self.out_dir / f"feats.{self.k}.scp"

    @property
    def shape(self) -> Path:
        return self.out_dir / f"feats.{self.k}.shape"

    @property
    def lock(self) -> Path:
        return self.out_dir / f".feats.{self.k}.lock"

    def tmp(self, path: Path) -> Path:
        return path.with_name(path.name + ".tmp")

    def complete(self) -> bool:
        return self.scp.is_file()

    def partial_files(self) -> List[Path]:
        paths = [self.ark, self.shape, self.tmp(self.ark), self.tmp(self.shape), self.tmp(self.scp)]
        return [p for p in paths if p.exists()]


class _ShardLock:
    """Exclusive, non-blocking flock on ``.feats.<k>.lock``; released when the process dies."""

    def __init__(self, files: ShardFiles) -> None:
        self.files = files
        self.fd: Optional[int] = None

    def __enter__(self) -> "_ShardLock":
        self.fd = os.open(self.files.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self.fd)
            self.fd = None
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise ShardBusyError(
                    f"{self.files.out_dir}: shard {self.files.k} is being written by another process "
                    f"(lock {self.files.lock})"
                ) from e
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def write_matrix(fd, utt: str, matrix: np.ndarray) -> int:
    """Append one ``utt matrix`` record to an open ark file; return the scp offset.

    float32 is Kaldi's binary "FM" matrix; float16, which Kaldi's format lacks, is
    kaldiio's NPY record. ``kaldiio.load_scp`` (and so ESPnet's ``kaldi_ark`` loader,
    which casts to float32) reads both.
    """
    offset = fd.tell() + len((utt + " ").encode("utf-8"))
    if matrix.dtype == np.float16:
        kaldiio.save_ark(fd, {utt: matrix}, write_function="numpy")
    else:
        kaldiio.save_ark(fd, {utt: matrix})
    return offset


def _atomic_lines(path: Path, lines: Iterable[str], unique_tmp: bool = False) -> None:
    """Write via a temporary file and rename. ``unique_tmp`` for files that two
    processes may write at once (the merged files); shard files are under a lock."""
    if unique_tmp:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        f = os.fdopen(fd, "w", encoding="utf-8")
        tmp = Path(tmp_name)
    else:
        tmp = path.with_name(path.name + ".tmp")
        f = open(tmp, "w", encoding="utf-8")
    try:
        with f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- extraction


@dataclasses.dataclass
class ExtractionResult:
    out_dir: Path
    written: List[int]  # shards computed by this call
    skipped: List[int]  # shards found complete
    merged: bool  # feats.scp is complete after this call
    num_utts: int = 0  # utterances computed by this call
    audio_seconds: float = 0.0  # their audio
    compute_seconds: float = 0.0  # wall time of writing the shards (models loaded before)
    load_seconds: float = 0.0  # wall time of loading the models


def _write_shard(
    extractor: SSLEmbeddingExtractor,
    layout: FeatureLayout,
    items: Sequence[AudioItem],
    files: ShardFiles,
    nj: int,
    audio: AudioReader,
    *,
    batch_samples: int,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> Tuple[int, float]:
    """Compute and write one shard; returns (utterances, audio seconds)."""
    from tqdm import tqdm

    for p in files.partial_files():
        logging.info("shard %d: removing partial file %s from an interrupted run", files.k, p)
        p.unlink()
    lengths = [audio.num_samples(it) for it in items]
    batches = make_batches(items, lengths, batch_samples, batch_size)
    dims = [s.dim for s in layout.streams]
    np_dtype = np.dtype(layout.dtype)
    fp16 = np_dtype == np.float16
    entries: List[Tuple[str, int, int]] = []  # utt, offset, frames
    ark_tmp = files.tmp(files.ark)
    bar = tqdm(total=len(items), unit="utt", desc=f"shard {files.k}/{nj}", disable=not progress, leave=False)
    try:
        with open(ark_tmp, "wb") as fd:
            for batch in batches:
                signals = [torch.from_numpy(audio.read(item)) for item, _ in batch]
                lens = torch.tensor([len(w) for w in signals], dtype=torch.long)
                wavs = torch.zeros(len(batch), int(lens.max()))
                for i, wav in enumerate(signals):
                    wavs[i, : len(wav)] = wav
                streams, frames = extractor.streams(wavs.to(device), lens.to(device))
                got = [int(s.size(-1)) for s in streams]
                if got != dims:
                    raise RuntimeError(f"stream dims {got} differ from the layout's {dims} ({layout.names})")
                matrix = torch.cat(streams, dim=-1).float().cpu()
                frames = frames.cpu()
                for i, (item, _) in enumerate(batch):
                    mat = matrix[i, : int(frames[i])].numpy().astype(np_dtype)
                    if not np.isfinite(mat).all():
                        why = " after conversion to float16 (beyond 65504); extract without --fp16" if fp16 else ""
                        raise RuntimeError(f"{item.utt}: non-finite features{why}")
                    entries.append((item.utt, write_matrix(fd, item.utt, mat), mat.shape[0]))
                bar.update(len(batch))
            fd.flush()
            os.fsync(fd.fileno())
    finally:
        bar.close()
    os.replace(ark_tmp, files.ark)
    entries.sort(key=lambda e: e[0].encode("utf-8"))
    total = layout.dim
    _atomic_lines(files.shape, (f"{utt} {t},{total}\n" for utt, _, t in entries))
    _atomic_lines(files.scp, (f"{utt} {files.ark}:{offset}\n" for utt, offset, _ in entries))
    return len(entries), sum(lengths) / SAMPLE_RATE


def merge_shards(out_dir: Path, nj: int, items: Sequence[AudioItem]) -> None:
    """Write feats.scp, feats_shape and utt2num_frames from the nj complete shards."""
    out_dir = Path(out_dir)
    scp: Dict[str, str] = {}
    shape: Dict[str, str] = {}
    incomplete = [k for k in range(1, nj + 1) if not ShardFiles(out_dir, k).complete()]
    if incomplete:
        raise RuntimeError(f"{out_dir}: cannot merge, shard(s) {incomplete} of {nj} are not complete")
    for k in range(1, nj + 1):
        files = ShardFiles(out_dir, k)
        for path, table in ((files.scp, scp), (files.shape, shape)):
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    utt, _, value = line.rstrip("\n").partition(" ")
                    if utt in table:
                        raise RuntimeError(f"{path}:{lineno}: utterance {utt} also in another shard")
                    table[utt] = value
    wanted = [it.utt for it in items]
    missing = [u for u in wanted if u not in scp or u not in shape]
    extra = sorted(set(scp) - set(wanted))
    if missing or extra:
        raise RuntimeError(
            f"{out_dir}: shards do not match the data: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {extra[:5]} ({len(extra)}); pass --overwrite to extract again"
        )
    _atomic_lines(out_dir / "utt2num_frames", (f"{u} {shape[u].split(',')[0]}\n" for u in wanted), unique_tmp=True)
    _atomic_lines(out_dir / "feats_shape", (f"{u} {shape[u]}\n" for u in wanted), unique_tmp=True)
    _atomic_lines(out_dir / "feats.scp", (f"{u} {scp[u]}\n" for u in wanted), unique_tmp=True)
    logging.info("merged %d shards into %s (%d utterances)", nj, out_dir / "feats.scp", len(wanted))


def clear_out_dir(out_dir: Path) -> None:
    """Delete the files this module writes (and nothing else)."""
    patterns = [LAYOUT_FILE, SHARDS_FILE, *MERGED_FILES]
    patterns += ["feats.*.ark", "feats.*.scp", "feats.*.shape", "*.tmp", ".feats.*.lock"]
    for pattern in patterns:
        for p in Path(out_dir).glob(pattern):
            if p.is_file():
                p.unlink()


def _feature_files(out_dir: Path) -> List[Path]:
    found = []
    for pattern in ("feats.*", *MERGED_FILES[:2]):
        found += [p for p in out_dir.glob(pattern) if p.is_file()]
    return sorted(set(found))


def _check_shards_file(out_dir: Path, expected: Dict[str, Any], merged: bool) -> None:
    """Same utterances (always) and the same nj (unless the merged files are complete)."""
    path = out_dir / SHARDS_FILE
    if not path.is_file():
        stale = _feature_files(out_dir)
        if stale:
            raise LayoutMismatchError(
                f"{out_dir}: feature files ({stale[0].name}, ...) exist without {SHARDS_FILE}; "
                "pass --overwrite to delete them and extract again"
            )
        write_json_atomic(expected, path)
        return
    existing = json.loads(path.read_text(encoding="utf-8"))
    diffs = [d for d in _differences(existing, expected) if not (merged and d[0] == "nj")]
    if diffs:
        shown = "; ".join(f"{key}: {old!r} in the file, {new!r} now" for key, old, new in diffs)
        hint = " (wav.scp changed)" if any(k == "utts_sha256" for k, _, _ in diffs) else ""
        raise LayoutMismatchError(
            f"{path}: the features were split differently{hint}: {shown}. "
            "Use the same --nj and data, or pass --overwrite to extract again"
        )


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def extract_features(
    config: Union[str, os.PathLike, Dict[str, Any], ExtractionConfig],
    data_dir: Union[str, os.PathLike],
    out_dir: Union[str, os.PathLike],
    nj: int = 1,
    shard: Optional[int] = None,
    *,
    batch_seconds: float = 60.0,
    batch_size: int = 8,
    fp16: bool = False,
    device: Optional[str] = None,
    overwrite: bool = False,
    merge_only: bool = False,
    progress: bool = True,
    extractor: Optional[SSLEmbeddingExtractor] = None,
) -> ExtractionResult:
    """Extract the streams of ``config`` for ``data_dir/wav.scp`` into ``out_dir``.

    With ``shard=k`` only shard k is written (run nj of these in parallel); without,
    every missing shard is written in turn. Finished shards are skipped; partial ones
    are removed and redone. Whichever call finds all shards complete merges them.
    ``merge_only`` computes nothing and fails unless every shard is complete.
    ``overwrite`` deletes earlier features in ``out_dir`` first (not with ``shard``:
    parallel calls would delete each other's work). ``extractor``: an already built
    :class:`SSLEmbeddingExtractor` for this config, to avoid loading the models again.
    """
    config = ExtractionConfig.from_config(config)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if nj < 1:
        raise ValueError(f"nj={nj}; expected >= 1")
    if shard is not None and not 1 <= shard <= nj:
        raise ValueError(f"shard={shard}; expected 1..{nj}")
    if overwrite and shard is not None:
        raise ValueError(
            "overwrite cannot be combined with shard: parallel shard jobs would delete each other's work; "
            f"delete {out_dir} (or run once with overwrite and no shard) before starting the shard jobs"
        )
    if batch_size < 1 or batch_seconds <= 0:
        raise ValueError(f"batch_size={batch_size}, batch_seconds={batch_seconds}; expected positive values")
    if out_dir.resolve() == data_dir.resolve():
        raise ValueError(f"out_dir {out_dir} is the data dir; give a separate directory such as dump/feats/<set>")
    wav_scp = data_dir / "wav.scp"
    if not wav_scp.is_file():
        raise FileNotFoundError(f"wav.scp not found: {wav_scp}")
    items = read_wav_scp(wav_scp)
    config.check_files()
    dtype = "float16" if fp16 else "float32"

    if overwrite and out_dir.is_dir():
        logging.info("--overwrite: deleting earlier features in %s", out_dir)
        clear_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # 1. refuse a directory written for another configuration, before loading any model
    layout_path = out_dir / LAYOUT_FILE
    partial_expected = {
        "dtype": dtype,
        "mode": config.mode,
        "layer": config.layer,
        "hidden_norm": config.hidden_norm,
        "streams": [{"name": n} for n in config.stream_names()],
        "models": config.models_record(),
    }
    if layout_path.is_file():
        check_layout_file(layout_path, partial_expected, with_columns=False)
    elif (out_dir / "feats.scp").is_file() or any(ShardFiles(out_dir, k).complete() for k in range(1, nj + 1)):
        raise LayoutMismatchError(
            f"{out_dir}: features exist without {LAYOUT_FILE}, so what they hold is unknown; "
            "pass --overwrite to delete them and extract again"
        )
    split = {"nj": nj, "num_utts": len(items), "utts_sha256": _utts_fingerprint(items)}
    _check_shards_file(out_dir, split, merged=(out_dir / "feats.scp").is_file())

    result = ExtractionResult(out_dir=out_dir, written=[], skipped=[], merged=False)
    all_shards = [ShardFiles(out_dir, k) for k in range(1, nj + 1)]
    if (out_dir / "feats.scp").is_file():
        logging.info("%s: complete (%d utterances), nothing to do", out_dir / "feats.scp", len(items))
        result.merged = True
        result.skipped = [f.k for f in all_shards]
        return result

    mine = [all_shards[shard - 1]] if shard is not None else all_shards
    todo = []
    for files in mine:
        if files.complete():
            logging.info("shard %d/%d: complete (%s), skipped", files.k, nj, files.scp)
            result.skipped.append(files.k)
        else:
            todo.append(files)
    if merge_only and not all(f.complete() for f in all_shards):
        missing = [f.k for f in all_shards if not f.complete()]
        raise RuntimeError(f"{out_dir}: --merge_only, but shard(s) {missing} of {nj} are not complete")

    if todo and not merge_only:
        t0 = time.perf_counter()
        if extractor is None:
            extractor = config.build_extractor()
        else:
            config.check_extractor(extractor)
        layout = layout_for(extractor, config, dtype)
        if layout_path.is_file():
            check_layout_file(layout_path, layout.to_dict(), with_columns=True)
        else:
            layout.save(layout_path)
        dev = torch.device(device or default_device())
        extractor.to(dev)
        result.load_seconds = time.perf_counter() - t0
        audio = AudioReader(wav_scp)
        t0 = time.perf_counter()
        for files in todo:
            with _ShardLock(files):
                if files.complete():  # finished by another process meanwhile
                    result.skipped.append(files.k)
                    continue
                n, secs = _write_shard(
                    extractor,
                    layout,
                    shard_items(items, nj, files.k),
                    files,
                    nj,
                    audio,
                    batch_samples=int(batch_seconds * SAMPLE_RATE),
                    batch_size=batch_size,
                    device=dev,
                    progress=progress,
                )
            logging.info("shard %d/%d: wrote %d utterances (%.1f s of audio) to %s", files.k, nj, n, secs, files.ark)
            result.written.append(files.k)
            result.num_utts += n
            result.audio_seconds += secs
        result.compute_seconds = time.perf_counter() - t0

    if all(f.complete() for f in all_shards):
        merge_shards(out_dir, nj, items)
        result.merged = True
    else:
        waiting = [f.k for f in all_shards if not f.complete()]
        logging.info("%s: shard(s) %s not complete yet; the call that completes the last one merges", out_dir, waiting)
    return result
