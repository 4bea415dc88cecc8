"""Checksums of a feature cache: recorded when a shard is written, checked when the cache is reused.

Each complete shard k has ``feats.<k>.sum`` (JSON, written after its ark and shape file and
before its scp, so a complete shard always has one): the ark's size, modification time
and CRC-32, the CRC-32 of its scp and shape files and of ``layout.json`` as the shard was
written under it. The check on reuse (:func:`check_shard`) costs a ``stat`` per ark plus
reading the small text files: the ark's size is compared always, its CRC-32 only when its
size or modification time differs from the record (the file was written to, truncated,
replaced or copied) or with ``full=True``. A byte changed in place while the
modification time is kept (media corruption, or a tool that restores it) is found only
by the full check. CRC-32 (zlib) rather than SHA-256: the point is accidents, not
tampering, and it is 2.4 times faster here (docs/fusion.md has the measured cost).

A shard written before checksums existed (no ``.sum``) is read once in full: every
matrix is loaded and compared with its shape file, then the record is written, with a
log line. :func:`check_merged` compares ``feats.scp``, ``feats_shape`` and
``utt2num_frames`` with what the shards' own files say, naming the first line that differs.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from espnet_delta.fileio import write_text_atomic

SUM_FORMAT = "espnet_delta.features.sum/1"
_CHUNK = 1 << 22  # 4 MiB reads


class CrcWriter:
    """A binary file wrapped so that everything written to it is also summed (CRC-32):
    the ark's checksum costs no second read of the file."""

    def __init__(self, fd) -> None:
        self.fd = fd
        self.crc = 0

    def write(self, data) -> int:
        self.crc = zlib.crc32(data, self.crc)
        return self.fd.write(data)

    def tell(self) -> int:
        return self.fd.tell()

    @property
    def hexdigest(self) -> str:
        return f"{self.crc:08x}"


def crc32_bytes(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


def crc32_file(path: Path) -> str:
    crc = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            if not block:
                return f"{crc:08x}"
            crc = zlib.crc32(block, crc)


def _text_record(data: bytes) -> Dict[str, Any]:
    return {"size": len(data), "crc32": crc32_bytes(data)}


def write_sum(path: Path, ark: Path, ark_crc: str, scp: bytes, shape: bytes, layout_crc: Optional[str]) -> None:
    """Record a shard's checksums (call after its ark and shape, before its scp)."""
    st = ark.stat()
    record = {
        "format": SUM_FORMAT,
        "ark": {"name": ark.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "crc32": ark_crc},
        "scp": _text_record(scp),
        "shape": _text_record(shape),
        "layout_crc32": layout_crc,
    }
    write_text_atomic(path, json.dumps(record, indent=1) + "\n", fsync=True)


def read_sum(path: Path) -> Optional[Dict[str, Any]]:
    """The record, or None when missing; an unreadable one is reported by :func:`check_shard`."""
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def recorded_layout_crc(sums: Iterable[Path]) -> Optional[Tuple[str, Path]]:
    """The layout.json CRC-32 recorded by the first shard that has one, and that shard's file."""
    for path in sums:
        try:
            record = read_sum(path)
        except (OSError, ValueError):
            continue
        if record and record.get("layout_crc32"):
            return record["layout_crc32"], path
    return None


def _fields(record: Dict[str, Any]) -> None:
    """KeyError / TypeError unless ``record`` has what :func:`check_shard` reads."""
    for key in ("ark", "scp", "shape"):
        int(record[key]["size"]), str(record[key]["crc32"])
    int(record["ark"]["mtime_ns"])


def check_shard(files, full: bool = False) -> Optional[str]:
    """One line naming the damaged file of a complete shard (``files``: a
    :class:`~espnet_delta.features.shards.ShardFiles`), or None when it is intact. A
    modification time that moved with the contents intact is recorded anew."""
    try:
        record = read_sum(files.sum)
        if record is not None:
            _fields(record)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{files.sum}: unreadable checksum record ({type(e).__name__}: {e})"
    if record is None:
        return None  # written before checksums: record_legacy()
    for path, key in ((files.scp, "scp"), (files.shape, "shape")):
        if not path.is_file():
            return f"{path}: missing"
        data = path.read_bytes()
        if _text_record(data) != {k: record[key][k] for k in ("size", "crc32")}:
            return f"{path}: changed since extraction (size {len(data)}, recorded {record[key]['size']}; checksum differs)"
    ark = record["ark"]
    if not files.ark.is_file():
        return f"{files.ark}: missing"
    st = files.ark.stat()
    if st.st_size != ark["size"]:
        what = "truncated" if st.st_size < ark["size"] else "grown"
        return f"{files.ark}: {what}: {st.st_size} bytes, {ark['size']} recorded at extraction"
    if full or st.st_mtime_ns != ark["mtime_ns"]:
        t0 = time.perf_counter()
        crc = crc32_file(files.ark)
        if crc != ark["crc32"]:
            return f"{files.ark}: contents changed since extraction (CRC-32 {crc}, recorded {ark['crc32']})"
        logging.info("%s: checksum verified (%d bytes in %.2f s)", files.ark, st.st_size, time.perf_counter() - t0)
        if st.st_mtime_ns != ark["mtime_ns"]:  # copied or touched, contents intact: remember the new time
            record["ark"]["mtime_ns"] = st.st_mtime_ns
            _record(files.sum, lambda: write_text_atomic(files.sum, json.dumps(record, indent=1) + "\n", fsync=True))
    return None


def _record(path: Path, write) -> None:
    """Write a checksum record; a cache that cannot be written (read-only, full) is still used."""
    try:
        write()
    except OSError as e:
        logging.warning("%s: could not record the checksums (%s); they are computed again next time", path, e)


def record_legacy(files, layout_crc32: Optional[str]) -> Optional[str]:
    """A complete shard without ``.sum`` (extracted before checksums): load every matrix,
    compare with the shape file, record the checksums. Returns a damage line or None."""
    import kaldiio
    import numpy as np

    from espnet_delta.fileio import read_table

    t0 = time.perf_counter()
    try:
        shapes = {row.key: row.value for row in read_table(files.shape, what="shape file")}
        rows = read_table(files.scp, what="scp")
    except ValueError as e:
        return str(e)
    size = files.ark.stat().st_size if files.ark.is_file() else -1
    for row in rows:
        ark_path, _, offset = row.value.rpartition(":")
        if Path(ark_path).name != files.ark.name or not offset.isdigit() or int(offset) >= size:
            return f"{files.scp}:{row.lineno}: {row.key} -> {row.value} is not inside {files.ark} ({size} bytes)"
        try:
            mat = np.asarray(kaldiio.load_mat(f"{files.ark}:{offset}"))
        except Exception as e:  # noqa: BLE001  (kaldiio raises many types on a damaged record)
            return f"{files.ark}: record of {row.key} at offset {offset} unreadable ({type(e).__name__}: {e})"
        if shapes.get(row.key) != ",".join(str(n) for n in mat.shape):
            return f"{files.ark}: record of {row.key} has shape {mat.shape}, the shape file says {shapes.get(row.key)}"
        if not np.isfinite(mat).all():
            return f"{files.ark}: record of {row.key} holds non-finite values"
    _record(files.sum, lambda: write_sum(files.sum, files.ark, crc32_file(files.ark), files.scp.read_bytes(),
                                         files.shape.read_bytes(), layout_crc32))
    logging.info("%s: extracted before checksums were recorded: read in full (%d utterances, %d bytes, %.1f s), "
                 "checksums recorded in %s", files.ark, len(rows), size, time.perf_counter() - t0, files.sum)
    return None


def check_merged(out_dir: Path, shard_files: Sequence, merged_files: Sequence[str]) -> Optional[str]:
    """One line naming the first line of a merged file (``feats.scp``, ``feats_shape``,
    ``utt2num_frames``) that disagrees with the shards' scp and shape files, or None."""
    scp: Dict[str, str] = {}
    shape: Dict[str, str] = {}
    for files in shard_files:
        for path, table in ((files.scp, scp), (files.shape, shape)):
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:  # being redone by a parallel --shard call
                return f"{path}: missing"
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                table[key] = value
    expected = {
        "feats.scp": scp,
        "feats_shape": shape,
        "utt2num_frames": {u: v.split(",")[0] for u, v in shape.items()},
    }
    for name in merged_files:
        path = out_dir / name
        if not path.is_file():
            return f"{path}: missing"
        lines = path.read_text(encoding="utf-8").splitlines()
        table = expected[name]
        for lineno, line in enumerate(lines, 1):
            key, _, value = line.partition(" ")
            if table.get(key) != value:
                return f"{path}:{lineno}: {line!r} " + _why(key, value, table.get(key), name)
        if len(lines) != len(table):
            return f"{path}: {len(lines)} lines, the shards hold {len(table)} utterances"
    return None


def _why(key: str, value: str, want: Optional[str], name: str) -> str:
    if want is None:
        return "names an utterance no shard holds"
    if name == "feats.scp":
        ark, _, offset = value.rpartition(":")
        size = os.path.getsize(ark) if os.path.isfile(ark) else None
        if size is not None and offset.isdigit() and int(offset) >= size:
            return f"points past the end of {ark} ({size} bytes); the shard says {want}"
    return f"differs from the shard's entry {key} {want}"


def check_format_of(layout_path: Path) -> None:
    """Refuse a layout.json of another format (an older cache) before writing it again."""
    from espnet_delta.features.layout import check_format

    try:
        data = json.loads(layout_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # missing or not JSON: written again
    if isinstance(data, dict):
        check_format({"format": data.get("format", "(none)")}, str(layout_path))


def restore_layout(layout, path: Path, recorded: Tuple[str, Path]) -> None:
    """Write ``layout`` (a :class:`~espnet_delta.features.layout.FeatureLayout` built from the
    config) to ``path`` if it is the layout the shards recorded; else refuse in one line."""
    from espnet_delta.features.layout import LayoutMismatchError

    text = json.dumps(layout.to_dict(), indent=2) + "\n"  # as FeatureLayout.save writes it
    if crc32_bytes(text.encode("utf-8")) != recorded[0]:
        raise LayoutMismatchError(
            f"{path}: the config no longer gives the layout the features were extracted with (CRC-32 "
            f"{recorded[0]} recorded in {recorded[1]}); use another --out_dir, or pass --overwrite to extract again"
        )
    layout.save(path)
    logging.info("%s: written again, equal to the layout recorded at extraction", path)
