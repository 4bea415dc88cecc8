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

from espnet_delta.features.audio import (
    AudioItem,
    AudioReader,
    _utts_fingerprint,
    make_batches,
    padded_batch,
    prefetched,
    read_wav_scp,
    shard_items,
)
from espnet_delta.features.config import SAMPLE_RATE, ExtractionConfig, LayoutMismatchError, check_layout_file, layout_for
from espnet_delta.features.layout import AUTOCASTS, LAYOUT_FILE, LAYOUT_FORMAT, FeatureLayout
from espnet_delta.fileio import write_lines_atomic
from espnet_delta.features.shards import (
    ShardFiles,
    _check_shards_file,
    _ShardLock,
    clear_out_dir,
    merge_shards,
    write_matrix,
)
from espnet_delta.ssl.embeddings import SSLEmbeddingExtractor


@dataclasses.dataclass
class ExtractionResult:
    out_dir: Path
    written: List[int]  # shards computed by this call
    skipped: List[int]  # shards found complete
    merged: bool  # feats.scp is complete after this call
    num_utts: int = 0  # utterances computed by this call
    audio_seconds: float = 0.0  # their audio
    compute_seconds: float = 0.0  # wall time of writing the shards (models loaded before)


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
    pin = device.type == "cuda"
    try:
        with open(ark_tmp, "wb") as fd:
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
    write_lines_atomic(files.shape, (f"{utt} {t},{total}\n" for utt, _, t in entries), fsync=True)
    write_lines_atomic(files.scp, (f"{utt} {files.ark}:{offset}\n" for utt, offset, _ in entries), fsync=True)
    return len(entries), sum(lengths) / SAMPLE_RATE


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
    autocast: str = "none",
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

    ``fp16`` is the STORAGE dtype (float16 values, rounded once from float32 streams);
    ``autocast`` (``none`` | ``bf16`` | ``fp16``) the COMPUTE precision of the upstream
    forwards, recorded in layout.json (a cache is never resumed with another one).
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

    # 1. refuse a directory written for another configuration, before loading any model
    layout_path = out_dir / LAYOUT_FILE
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
        if extractor is None:
            extractor = config.build_extractor(autocast=autocast)
        else:
            config.check_extractor(extractor)
            extractor.autocast = autocast
        layout = layout_for(extractor, config, dtype)
        if layout_path.is_file():
            check_layout_file(layout_path, layout.to_dict(), with_columns=True)
        else:
            layout.save(layout_path)
        dev = torch.device(device or default_device())
        extractor.to(dev)
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
