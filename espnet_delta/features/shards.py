"""Shard files of a feature cache: names, the per-shard lock, ark records, the split, merging.

A shard is complete iff its scp exists (written last, by rename); a killed run
leaves ``*.tmp`` files or an ark without scp, which the next run removes.

The shard count is a scheduling knob, not part of what a cache holds: ``shards.json``
records the utterances (count and fingerprint: the cache's identity) and the current
split (:class:`ShardPlan`). A call with another shard count than an unfinished cache's
keeps the complete shards and splits the utterances they lack into new shards numbered
after every earlier one, so no extracted utterance is computed again; a merged cache is
reused as it is.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import kaldiio
import numpy as np
from espnet2.fileio.read_text import read_2columns_text

from espnet_delta.data.wav_scp import AudioItem
from espnet_delta.features.config import LayoutMismatchError, _differences
from espnet_delta.features.layout import LAYOUT_FILE, write_json_atomic
from espnet_delta.fileio import write_lines_atomic

SHARDS_FILE = "shards.json"
MERGED_FILES = ("utt2num_frames", "feats_shape", "feats.scp")  # in write order: feats.scp last


class ShardBusyError(RuntimeError):
    """Another process is writing the same shard."""


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
    def sum(self) -> Path:
        """Checksums of the ark, scp and shape files (:mod:`.integrity`), written before the scp."""
        return self.out_dir / f"feats.{self.k}.sum"

    @property
    def lock(self) -> Path:
        return self.out_dir / f".feats.{self.k}.lock"

    def tmp(self, path: Path) -> Path:
        return path.with_name(path.name + ".tmp")

    def complete(self) -> bool:
        return self.scp.is_file()

    def partial_files(self) -> List[Path]:
        """What a killed run of this shard may leave: its ark, shape and sum without scp, and
        temporaries (the ark's fixed one; ``.feats.<k>.{shape,sum,scp}.*.tmp`` of atomic writes)."""
        paths = [self.ark, self.shape, self.sum, self.tmp(self.ark)]
        paths += [p for f in (self.shape, self.sum, self.scp) for p in self.out_dir.glob(f".{f.name}.*.tmp")]
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


def merge_shards(out_dir: Path, shards: Sequence[int], items: Sequence[AudioItem]) -> None:
    """Write feats.scp, feats_shape and utt2num_frames from the complete shard files
    ``feats.<k>.*`` for k in ``shards`` (:meth:`ShardPlan.indices`)."""
    out_dir = Path(out_dir)
    scp: Dict[str, str] = {}
    shape: Dict[str, str] = {}
    incomplete = [k for k in shards if not ShardFiles(out_dir, k).complete()]
    if incomplete:
        raise RuntimeError(f"{out_dir}: cannot merge, shard file(s) {incomplete} are not complete")
    for k in shards:
        files = ShardFiles(out_dir, k)
        for path, table in ((files.scp, scp), (files.shape, shape)):
            for utt, value in read_2columns_text(path).items():
                if utt in table:
                    raise RuntimeError(f"{path}: utterance {utt} also in another shard")
                table[utt] = value
    wanted = [it.utt for it in items]
    missing = [u for u in wanted if u not in scp or u not in shape]
    extra = sorted(set(scp) - set(wanted))
    if missing or extra:
        raise RuntimeError(
            f"{out_dir}: shards do not match the data: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {extra[:5]} ({len(extra)}); pass --overwrite to extract again"
        )
    write_lines_atomic(out_dir / "utt2num_frames", (f"{u} {shape[u].split(',')[0]}\n" for u in wanted), fsync=True)
    write_lines_atomic(out_dir / "feats_shape", (f"{u} {shape[u]}\n" for u in wanted), fsync=True)
    write_lines_atomic(out_dir / "feats.scp", (f"{u} {scp[u]}\n" for u in wanted), fsync=True)
    logging.info("merged %d shards into %s (%d utterances)", len(shards), out_dir / "feats.scp", len(wanted))


def discard_shard(files: ShardFiles) -> None:
    """Delete a complete shard found damaged: its scp first (so it is incomplete from then
    on), then the rest; under its lock, so that a process writing it is not disturbed."""
    with _ShardLock(files):
        for p in (files.scp, files.sum, files.ark, files.shape):
            p.unlink(missing_ok=True)


def discard_merged(out_dir: Path) -> None:
    """Delete the merged files, feats.scp (the marker of a complete cache) first."""
    for name in reversed(MERGED_FILES):
        (Path(out_dir) / name).unlink(missing_ok=True)


def clear_out_dir(out_dir: Path) -> None:
    """Delete the files this module writes (and nothing else)."""
    patterns = [LAYOUT_FILE, SHARDS_FILE, *MERGED_FILES]
    patterns += ["feats.*.ark", "feats.*.scp", "feats.*.shape", "feats.*.sum", "*.tmp", ".feats.*.lock"]
    for pattern in patterns:
        for p in Path(out_dir).glob(pattern):
            if p.is_file():
                p.unlink()


def _feature_files(out_dir: Path) -> List[Path]:
    found = []
    for pattern in ("feats.*", *MERGED_FILES[:2]):
        found += [p for p in out_dir.glob(pattern) if p.is_file()]
    return sorted(set(found))


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """The split of a cache's utterances into shard files: the complete shards ``kept`` from
    earlier splits, then ``num_shards`` current shards; current shard k (1..num_shards, the
    ``--shard`` numbers) is the file ``feats.<offset + k>.*`` and holds every
    ``num_shards``-th utterance (round-robin, sorted by id) of those the kept shards lack."""

    num_shards: int
    offset: int = 0
    kept: Tuple[int, ...] = ()

    def files(self, out_dir: Path, k: int) -> ShardFiles:
        return ShardFiles(Path(out_dir), self.offset + k)

    def indices(self) -> List[int]:
        """Every shard file index of the cache: the kept ones, then the current ones."""
        return [*self.kept, *range(self.offset + 1, self.offset + self.num_shards + 1)]

    def remaining(self, out_dir: Path, items: Sequence[AudioItem]) -> List[AudioItem]:
        """The items (in their order) that no kept shard holds: what the current shards split."""
        done = set()
        for k in self.kept:
            done.update(read_2columns_text(ShardFiles(Path(out_dir), k).scp))
        return [it for it in items if it.utt not in done]

    def to_dict(self) -> Dict[str, Any]:
        return {"num_shards": self.num_shards, "offset": self.offset, "kept": list(self.kept)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ShardPlan":
        if "num_shards" not in data:  # written before the split could change: {"nj": ...}
            return cls(int(data["nj"]))
        return cls(int(data["num_shards"]), int(data.get("offset", 0)), tuple(int(k) for k in data.get("kept", ())))


#: shards.json keys that identify the cache's utterances (the rest is the current split)
_IDENTITY = ("num_utts", "utts_sha256")


def plan_shards(out_dir: Path, identity: Dict[str, Any], num_shards: int, merged: bool) -> ShardPlan:
    """The split to extract with: the recorded one (always when ``merged``), or, for an
    unfinished cache recorded with another shard count, a new split that keeps its complete
    shards (module docstring). ``identity``: ``num_utts`` and ``utts_sha256`` of the data;
    a cache of other utterances is refused."""
    path = Path(out_dir) / SHARDS_FILE
    if not path.is_file():
        stale = _feature_files(Path(out_dir))
        if stale:
            raise LayoutMismatchError(
                f"{out_dir}: feature files ({stale[0].name}, ...) exist without {SHARDS_FILE}; "
                "pass --overwrite to delete them and extract again"
            )
        plan = ShardPlan(num_shards)
        write_json_atomic({**identity, **plan.to_dict()}, path)
        return plan
    existing = json.loads(path.read_text(encoding="utf-8"))
    diffs = _differences({k: existing.get(k) for k in _IDENTITY}, {k: identity[k] for k in _IDENTITY})
    if diffs:
        shown = "; ".join(f"{key}: {old!r} in the file, {new!r} now" for key, old, new in diffs)
        raise LayoutMismatchError(
            f"{path}: the features were extracted for other utterances (wav.scp changed): {shown}. "
            "Use another --out_dir, or pass --overwrite to extract again"
        )
    plan = ShardPlan.from_dict(existing)
    kept_lost = any(not ShardFiles(Path(out_dir), k).complete() for k in plan.kept)  # one found damaged and discarded
    if merged or (plan.num_shards == num_shards and not kept_lost):
        return plan
    return _replan(Path(out_dir), identity, plan, num_shards)


def _replan(out_dir: Path, identity: Dict[str, Any], old: ShardPlan, num_shards: int) -> ShardPlan:
    """Keep the complete shards of ``old``, remove its partial ones, split the rest anew."""
    kept = []
    for k in old.indices():
        files = ShardFiles(out_dir, k)
        if files.complete():
            kept.append(k)
            continue
        with _ShardLock(files):  # a shard still being written by a run with the old count is refused
            for p in files.partial_files():
                p.unlink()
    plan = ShardPlan(num_shards, offset=max(old.indices(), default=0), kept=tuple(kept))
    write_json_atomic({**identity, **plan.to_dict()}, out_dir / SHARDS_FILE)
    logging.info("%s: split into %d shards before, %d now: keeping the %d complete shard(s) %s, "
                 "the other utterances go to shard files %d..%d", out_dir, old.num_shards, num_shards,
                 len(kept), kept, plan.offset + 1, plan.offset + num_shards)
    return plan
