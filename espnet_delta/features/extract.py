"""The extraction driver: one pass over a data dir writes every shard of the feature cache.

See :mod:`espnet_delta.features.layout` for the directory layout and the resume rules.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from espnet_delta.data.wav_scp import AudioItem, AudioReader, read_wav_scp
from espnet_delta.features.audio import _utts_fingerprint, make_batches, padded_batch, prefetched, shard_items
from espnet_delta.features.config import SAMPLE_RATE, ExtractionConfig, LayoutMismatchError, check_layout_file, layout_for
from espnet_delta.features.layout import LAYOUT_FILE, LAYOUT_FORMAT, FeatureLayout
from espnet_delta.fileio import DiskFullError, format_bytes, is_disk_full, write_lines_atomic
from espnet_delta.features.integrity import (
    CrcWriter,
    check_format_of,
    check_merged,
    check_shard,
    crc32_file,
    record_legacy,
    recorded_layout_crc,
    restore_layout,
    write_sum,
)
from espnet_delta.features.shards import (
    MERGED_FILES,
    ShardFiles,
    _ShardLock,
    clear_out_dir,
    discard_merged,
    discard_shard,
    merge_shards,
    plan_shards,
    write_matrix,
)
from espnet_delta.ssl.embeddings import SSLEmbeddingExtractor
from espnet_delta.ssl.streams import AUTOCASTS


@dataclasses.dataclass
class ExtractionResult:
    out_dir: Path
    written: List[int]  # shards computed by this call
    skipped: List[int]  # shards found complete
    merged: bool  # feats.scp is complete after this call
    num_utts: int = 0  # utterances computed by this call
    audio_seconds: float = 0.0  # their audio
    compute_seconds: float = 0.0  # wall time of writing the shards (models loaded before)
    repaired: List[int] = dataclasses.field(default_factory=list)  # shard files found damaged and written again


class FeatureDiskFullError(RuntimeError):
    """A cache write failed for want of space; one line naming the file and the space the
    unfinished part of the cache needs (the partial shard is removed, no scp written)."""


def record_bytes(utt: str, frames: int, dim: int, dtype: np.dtype) -> int:
    """Bytes of one ark record (Kaldi "FM": key, space, 15 header bytes; kaldiio's NPY record:
    about 140 header bytes) plus its scp and shape lines."""
    header = 15 if dtype == np.float32 else 140
    return frames * dim * dtype.itemsize + 2 * (len(utt) + 1) + header + 80


def estimate_bytes(items: Sequence[AudioItem], audio: AudioReader, layout: FeatureLayout) -> int:
    """Expected size of these utterances' records: frames (samples / frame shift) x dims x bytes."""
    dtype = np.dtype(layout.dtype)
    return sum(record_bytes(it.utt, audio.num_samples(it) // layout.frame_shift, layout.dim, dtype) for it in items)


def _write_shard(
    extractor: SSLEmbeddingExtractor,
    layout: FeatureLayout,
    items: Sequence[AudioItem],
    files: ShardFiles,
    label: str,
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
    bar = tqdm(total=len(items), unit="utt", desc=f"shard {label}", disable=not progress, leave=False)
    pin = device.type == "cuda"
    try:
        with open(ark_tmp, "wb") as raw:
            fd = CrcWriter(raw)  # the ark's checksum, summed as it is written
            for batch, (wavs, lens) in prefetched(batches, lambda b: padded_batch(audio, b, pin_memory=pin)):
                wavs, lens = wavs.to(device, non_blocking=pin), lens.to(device)
                streams, frames = extractor.streams(wavs, lens)
                got = [int(s.size(-1)) for s in streams]
                if got != dims:
                    raise RuntimeError(f"stream dims {got} differ from the layout's {dims} ({layout.names})")
                # float32 streams (E_delta taken in float32); the storage dtype rounds each value once
                matrix = torch.cat(streams, dim=-1).float().cpu()
                frames = frames.cpu()
                for i, (item, _) in enumerate(batch):
                    mat = matrix[i, : int(frames[i])].numpy().astype(np_dtype)
                    if not np.isfinite(mat).all():
                        why = " after conversion to float16 (beyond 65504); extract without --feats_fp16" if fp16 else ""
                        raise RuntimeError(f"{item.utt}: non-finite features{why}")
                    entries.append((item.utt, write_matrix(fd, item.utt, mat), mat.shape[0]))
                bar.update(len(batch))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(ark_tmp, files.ark)
        entries.sort(key=lambda e: e[0].encode("utf-8"))
        shape = "".join(f"{utt} {t},{layout.dim}\n" for utt, _, t in entries).encode("utf-8")
        scp = "".join(f"{utt} {files.ark}:{offset}\n" for utt, offset, _ in entries).encode("utf-8")
        write_lines_atomic(files.shape, [shape.decode("utf-8")], fsync=True)
        write_sum(files.sum, files.ark, fd.hexdigest, scp, shape, layout_crc_of(files.out_dir))
        write_lines_atomic(files.scp, [scp.decode("utf-8")], fsync=True)  # last: the shard is complete
    except OSError as e:
        if not is_disk_full(e):
            raise
        for p in [ark_tmp, *files.partial_files()]:  # give the space back; the rerun redoes the shard
            p.unlink(missing_ok=True)
        raise DiskFullError(e.errno, e.filename or ark_tmp) from e
    finally:
        bar.close()
    return len(entries), sum(lengths) / SAMPLE_RATE


def layout_crc_of(out_dir: Path) -> str:
    return crc32_file(Path(out_dir) / LAYOUT_FILE)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def extract_features(
    config: Union[str, os.PathLike, Dict[str, Any], ExtractionConfig],
    data_dir: Union[str, os.PathLike],
    out_dir: Union[str, os.PathLike],
    num_shards: int = 1,
    shard: Optional[int] = None,
    *,
    batch_seconds: float = 60.0,
    batch_size: int = 8,
    fp16: bool = False,
    autocast: str = "none",
    device: Optional[str] = None,
    overwrite: bool = False,
    merge_only: bool = False,
    progress: bool = True,
    extractor: Optional[SSLEmbeddingExtractor] = None,
    full_check: bool = False,
) -> ExtractionResult:
    """Extract the streams of ``config`` for ``data_dir/wav.scp`` into ``out_dir``.

    With ``shard=k`` only shard k is written (run ``num_shards`` of these in parallel);
    without, every missing shard is written in turn. Finished shards are skipped; partial
    ones are removed and redone. Whichever call finds all shards complete merges them.
    ``merge_only`` computes nothing and fails unless every shard is complete.
    ``overwrite`` deletes earlier features in ``out_dir`` first (not with ``shard``:
    parallel calls would delete each other's work). ``extractor``: an already built
    :class:`SSLEmbeddingExtractor` for this config, to avoid loading the models again.
    ``num_shards`` is no part of the cache's identity: a cache extracted with another
    count is reused when merged and otherwise resumed, its complete shards kept
    (:func:`espnet_delta.features.shards.plan_shards`).

    ``fp16`` is the STORAGE dtype (float16 values, rounded once from float32 streams);
    ``autocast`` (``none`` | ``bf16`` | ``fp16``) the COMPUTE precision of the upstream
    forwards, recorded in layout.json (a cache is never resumed with another one).

    Complete shards are checked before they are reused (:mod:`.integrity`: sizes always,
    CRC-32 of an ark whose size or time changed, of every ark with ``full_check``); a
    damaged shard is deleted and extracted again, damaged merged files are merged again,
    an edited layout.json is written again from the config. A full disk raises
    :class:`FeatureDiskFullError` (one line: the file and the space the rest needs).
    """
    try:
        return _extract(ExtractionConfig.from_config(config), Path(data_dir), Path(out_dir), num_shards, shard,
                        batch_seconds=batch_seconds, batch_size=batch_size, fp16=fp16, autocast=autocast,
                        device=device, overwrite=overwrite, merge_only=merge_only, progress=progress,
                        extractor=extractor, full_check=full_check)
    except DiskFullError as e:  # a small file (layout, record, merged table): the message names it
        raise FeatureDiskFullError(str(e)) from e


def _extract(config: ExtractionConfig, data_dir: Path, out_dir: Path, num_shards: int, shard: Optional[int], *,
             batch_seconds: float, batch_size: int, fp16: bool, autocast: str, device: Optional[str],
             overwrite: bool, merge_only: bool, progress: bool, extractor: Optional[SSLEmbeddingExtractor],
             full_check: bool) -> ExtractionResult:
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards}; expected >= 1")
    if shard is not None and not 1 <= shard <= num_shards:
        raise ValueError(f"shard={shard}; expected 1..{num_shards}")
    if overwrite and shard is not None:
        raise ValueError(
            "overwrite cannot be combined with shard: parallel shard jobs would delete each other's work; "
            f"delete {out_dir} (or run once with overwrite and no shard) before starting the shard jobs"
        )
    if autocast not in AUTOCASTS:
        raise ValueError(f"autocast={autocast!r}; expected one of {AUTOCASTS}")
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

    # 1. refuse a directory written for another configuration, before loading any model; a
    #    layout.json that differs from the one the shards recorded was edited: written again below
    layout_path = out_dir / LAYOUT_FILE
    recorded = recorded_layout_crc(sorted(out_dir.glob("feats.*.sum")))
    restore_layout = recorded is not None and (not layout_path.is_file() or layout_crc_of(out_dir) != recorded[0])
    if restore_layout:
        now = layout_crc_of(out_dir) if layout_path.is_file() else "missing"
        logging.warning("%s: changed since extraction (CRC-32 %s, %s recorded in %s); writing it again from the "
                        "config, the features are kept", layout_path, now, recorded[0], recorded[1])
    partial_expected = {
        "format": LAYOUT_FORMAT,
        "dtype": dtype,
        "autocast": autocast,
        "mode": config.mode,
        "layer": config.layer,
        "hidden_norm": config.hidden_norm,
        "streams": [{"name": n} for n in config.stream_names()],
        "models": config.models_record(),
    }
    if restore_layout:  # checked against the record once the models are loaded; a cache of another format is refused
        check_format_of(layout_path)
    elif layout_path.is_file():
        check_layout_file(layout_path, partial_expected, with_columns=False)
    elif (out_dir / "feats.scp").is_file() or any(out_dir.glob("feats.*.scp")):
        raise LayoutMismatchError(
            f"{out_dir}: features exist without {LAYOUT_FILE}, so what they hold is unknown; "
            "pass --overwrite to delete them and extract again"
        )
    # 2. the same utterances; the split is the recorded one, or a new one keeping the complete shards
    merged = (out_dir / "feats.scp").is_file()
    identity = {"num_utts": len(items), "utts_sha256": _utts_fingerprint(items)}
    plan = plan_shards(out_dir, identity, num_shards, merged)
    # 3. reuse: the complete shards this call answers for, and the merged files, checked before anything reads them
    result = ExtractionResult(out_dir=out_dir, written=[], skipped=[], merged=False)
    merged_damaged = False
    owned = plan.indices() if shard is None else [plan.files(out_dir, shard).k, *(plan.kept if shard == 1 else ())]
    for k in owned:
        files = ShardFiles(out_dir, k)
        if not files.complete():
            continue
        layout_record = recorded[0] if recorded else (layout_crc_of(out_dir) if layout_path.is_file() else None)
        problem = check_shard(files, full_check) if files.sum.is_file() else record_legacy(files, layout_record)
        if problem:
            logging.warning("%s: shard file %d is damaged; extracting it again", problem, k)
            discard_shard(files)
            result.repaired.append(k)
    if merged and not result.repaired:
        problem = check_merged(out_dir, [ShardFiles(out_dir, k) for k in plan.indices()], MERGED_FILES)
        if problem:
            logging.warning("%s; merging the shards again", problem)
            merged_damaged = True
    if result.repaired or merged_damaged:
        discard_merged(out_dir)
        merged = False
        plan = plan_shards(out_dir, identity, num_shards, merged)  # the same split unless a kept shard was lost

    numbers = list(range(1, num_shards + 1))  # the current shards, as --shard counts them
    if merged:
        if restore_layout:
            _restore_layout(config, extractor, autocast, dtype, layout_path, recorded)
        logging.info("%s: complete (%d utterances), nothing to do", out_dir / "feats.scp", len(items))
        result.merged = True
        result.skipped = numbers
        return result

    mine = [shard] if shard is not None else numbers
    todo = []
    for k in mine:
        files = plan.files(out_dir, k)
        if files.complete():
            logging.info("shard %d/%d: complete (%s), skipped", k, num_shards, files.scp)
            result.skipped.append(k)
        else:
            todo.append(k)
    missing = [k for k in numbers if not plan.files(out_dir, k).complete()]
    if merge_only and missing:
        raise RuntimeError(f"{out_dir}: --merge_only, but shard(s) {missing} of {num_shards} are not complete")

    if restore_layout:
        extractor, layout = _restore_layout(config, extractor, autocast, dtype, layout_path, recorded)
    if todo and not merge_only:
        if not restore_layout:
            extractor = _extractor_for(config, extractor, autocast)
            layout = layout_for(extractor, config, dtype)
            if layout_path.is_file():
                check_layout_file(layout_path, layout.to_dict(), with_columns=True)
            else:
                layout.save(layout_path)
        dev = torch.device(device or default_device())
        extractor.to(dev)
        audio = AudioReader(wav_scp)
        remaining = plan.remaining(out_dir, items)  # all of them unless an earlier split left complete shards
        t0 = time.perf_counter()
        for k in todo:
            files = plan.files(out_dir, k)
            with _ShardLock(files):
                if files.complete():  # finished by another process meanwhile
                    result.skipped.append(k)
                    continue
                try:
                    n, secs = _write_shard(
                        extractor,
                        layout,
                        shard_items(remaining, num_shards, k),
                        files,
                        f"{k}/{num_shards}",
                        audio,
                        batch_samples=int(batch_seconds * SAMPLE_RATE),
                        batch_size=batch_size,
                        device=dev,
                        progress=progress,
                    )
                except DiskFullError as e:
                    left = [it for j in numbers if not plan.files(out_dir, j).complete()
                            for it in shard_items(remaining, num_shards, j)]
                    need = estimate_bytes(left, audio, layout)
                    raise FeatureDiskFullError(
                        f"{e} (shard {k}/{num_shards}; the {len(left)} utterances not yet cached need about "
                        f"{format_bytes(need)}: frames x {layout.dim} dims x {np.dtype(layout.dtype).itemsize} bytes)"
                    ) from e
            logging.info("shard %d/%d: wrote %d utterances (%.1f s of audio) to %s", k, num_shards, n, secs, files.ark)
            result.written.append(k)
            result.num_utts += n
            result.audio_seconds += secs
        result.compute_seconds = time.perf_counter() - t0

    waiting = [k for k in numbers if not plan.files(out_dir, k).complete()]
    if not waiting:
        merge_shards(out_dir, plan.indices(), items)
        result.merged = True
    else:
        logging.info("%s: shard(s) %s not complete yet; the call that completes the last one merges", out_dir, waiting)
    return result


def _extractor_for(config: ExtractionConfig, extractor: Optional[SSLEmbeddingExtractor], autocast: str):
    if extractor is None:
        return config.build_extractor(autocast=autocast)
    config.check_extractor(extractor)
    extractor.autocast = autocast
    return extractor


def _restore_layout(config: ExtractionConfig, extractor: Optional[SSLEmbeddingExtractor], autocast: str, dtype: str,
                    path: Path, recorded: Tuple[str, Path]) -> Tuple[SSLEmbeddingExtractor, FeatureLayout]:
    """Write layout.json again from the config, if that gives the layout the shards recorded."""
    extractor = _extractor_for(config, extractor, autocast)
    layout = layout_for(extractor, config, dtype)
    restore_layout(layout, path, recorded)
    return extractor, layout
