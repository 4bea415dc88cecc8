"""Shard files of a feature cache: names, the per-shard lock, ark records, merging.

A shard is complete iff its scp exists (written last, by rename); a killed run
leaves ``*.tmp`` files or an ark without scp, which the next run removes.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import kaldiio
import numpy as np
from espnet2.fileio.read_text import read_2columns_text

from espnet_delta.features.audio import AudioItem
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
    def lock(self) -> Path:
        return self.out_dir / f".feats.{self.k}.lock"

    def tmp(self, path: Path) -> Path:
        return path.with_name(path.name + ".tmp")

    def complete(self) -> bool:
        return self.scp.is_file()

    def partial_files(self) -> List[Path]:
        """What a killed run of this shard may leave: its ark and shape without scp, and
        temporaries (the ark's fixed one; ``.feats.<k>.{shape,scp}.*.tmp`` of atomic writes)."""
        paths = [self.ark, self.shape, self.tmp(self.ark)]
        paths += [p for f in (self.shape, self.scp) for p in self.out_dir.glob(f".{f.name}.*.tmp")]
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
