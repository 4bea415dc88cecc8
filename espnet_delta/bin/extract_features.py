"""Extract SSL feature streams of a data dir once, sharded and resumable.

    python -m espnet_delta.bin.extract_features --config conf/extract.yaml \\
        --data_dir data/train --out_dir dump/feats/train --num_shards 2 [--shard K] \\
        [--batch_seconds 60] [--batch_size 8] [--feats_fp16] [--autocast none|bf16|fp16] [--device cpu]

conf/extract.yaml (paths relative to the current directory)::

    reference: {upstream: wavlm_local, path_or_url: downloads/upstreams/wavlm.pt,
                finetuned: exp/ft_wavlm/valid.wer_ctc.best.pth}
    others:                        # each contributes E_delta and E_ft (mode: delta)
      - {upstream: hubert_local, path_or_url: downloads/upstreams/hubert.pt,
         finetuned: exp/ft_hubert/valid.wer_ctc.best.pth}
    mode: delta                    # delta (E_pt and E_ft) | full (E_ft only)
    layer: last                    # or a hidden-state index
    hidden_norm: auto

Per utterance one matrix (T, sum of the stream dims) is stored; <out_dir>/layout.json
names the column range of each stream (see espnet_delta.features.layout.FeatureLayout).

Parallel shards, run.pl style: start `--shard k` for k = 1..num_shards (each writes only
its shard's ark/scp; threads default to cores / num_shards), then the last one to finish
merges into feats.scp, feats_shape and utt2num_frames; `--merge_only` merges
explicitly and fails if a shard is missing. Without --shard, every missing shard is
written in turn and then merged. Rerunning skips finished shards and redoes
interrupted ones. The shard count is a scheduling knob: a cache extracted with
another --num_shards is reused when complete and otherwise resumed (its complete
shards kept, the missing utterances split anew). An out_dir written for another
configuration (models, checkpoint files, layer, dtype, wav.scp) is refused;
--overwrite deletes its features first (not together with --shard: delete the
directory before starting parallel shards).

Precision: --feats_fp16 is the STORAGE dtype: float16, 2 bytes per value instead of 4 (a
1024-dim stream at 50 frames/s: 369 MB instead of 737 MB per audio hour). The delta
E_ft - E_pt is taken in float32 from the float32 forwards and rounded once, so it
keeps 2^-11 of its own magnitude. --autocast is the COMPUTE precision of the upstream
forwards (bf16/fp16 under torch.autocast, for GPUs; default none = float32).
Upstreams with bit-identical CNN feature encoders (pre-trained and fine-tuned models
of one upstream when fine-tuning froze the CNN) run the CNN once (--share_cnn false:
run it per model).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.features.extract import extract_features


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)  # --config is the extraction YAML
    p.add_argument("--config", required=True, help="extraction YAML: reference, others, mode, layer, hidden_norm")
    p.add_argument("--data_dir", required=True, action="append",
                   help="Kaldi-style data dir with wav.scp (16 kHz mono files); repeat with --out_dir for several sets")
    p.add_argument("--out_dir", required=True, action="append", help="output directory, e.g. dump/feats/train")
    p.add_argument("--num_shards", type=int, default=1,
                   help="number of shards (parallel jobs); not part of the cache's identity")
    p.add_argument("--shard", type=int, default=None, help="write only shard K (1..num_shards)")
    add_bool_argument(p, "--merge_only", help="only merge complete shards into feats.scp (fails if one is missing)")
    p.add_argument("--batch_seconds", type=float, default=60.0, help="max padded audio seconds per batch")
    p.add_argument("--batch_size", type=int, default=8, help="max utterances per batch")
    add_bool_argument(p, "--feats_fp16", help="STORAGE dtype: store float16 instead of float32 (rounded once)")
    p.add_argument("--autocast", choices=("none", "bf16", "fp16"), default="none",
                   help="COMPUTE precision of the upstream forwards (torch.autocast; none = float32)")
    add_bool_argument(p, "--share_cnn", default=True,
                      help="run a CNN feature encoder once for upstreams whose encoders are bit-identical")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument(
        "--num_threads", type=int, default=None, help="torch threads (default: cores, or cores / num_shards with --shard)"
    )
    add_bool_argument(p, "--overwrite", help="delete features of an earlier, different extraction in out_dir first")
    add_bool_argument(p, "--progress", default=True, help="show a progress bar")
    add_log_level_argument(p)
    return p


def default_threads(num_shards: int, sharded: bool) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // num_shards) if sharded else cores


def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    import torch

    threads = args.num_threads or default_threads(args.num_shards, args.shard is not None)
    torch.set_num_threads(threads)
    if len(args.data_dir) != len(args.out_dir):
        logging.error("give one --out_dir per --data_dir (got %d and %d)", len(args.data_dir), len(args.out_dir))
        sys.exit(1)
    run_command(lambda: _extract(args, threads), args.log_level, also=(RuntimeError,))  # incomplete shards, ...


def _extract(args, threads: int) -> None:
    from pathlib import Path

    from espnet_delta.features.config import ExtractionConfig

    extractor = None
    config = ExtractionConfig.from_config(args.config)
    for data_dir, out_dir in zip(args.data_dir, args.out_dir):
        # one process serves several sets: the models are loaded once, and only when needed
        if extractor is None and not args.merge_only and not (Path(out_dir) / "feats.scp").is_file():
            extractor = config.build_extractor(autocast=args.autocast, share_cnn=args.share_cnn)
        result = extract_features(
            config,
            data_dir,
            out_dir,
            num_shards=args.num_shards,
            shard=args.shard,
            batch_seconds=args.batch_seconds,
            batch_size=args.batch_size,
            fp16=args.feats_fp16,
            autocast=args.autocast,
            device=args.device,
            overwrite=args.overwrite,
            merge_only=args.merge_only,
            progress=args.progress,
            extractor=extractor,
        )
        report(result, threads)


def report(result, threads: int) -> None:
    if result.num_utts:
        rate = result.compute_seconds / (result.audio_seconds / 60) if result.audio_seconds else float("nan")
        logging.info(
            "%s: extracted %d utterances (%.1f min of audio) in %.1f s on %d thread(s) (%.2f s per minute of audio)",
            result.out_dir,
            result.num_utts,
            result.audio_seconds / 60,
            result.compute_seconds,
            threads,
            rate,
        )


if __name__ == "__main__":
    main()
