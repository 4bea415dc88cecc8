"""Self-supervised pre-training of tiny upstreams (HuBERT-style masked unit prediction).

    python -m espnet_delta.bin.pretrain_upstreams --in_dir downloads/upstreams \\
        --out_dir downloads/upstreams_pt --work_dir exp/pretrain \\
        --wav_scp data/train/wav.scp data/libri_train/wav.scp \\
        [--num_clusters 64] [--epochs 8 [4]] [--archs wavlm hubert wav2vec2]

For each architecture reads the random checkpoint ``<in_dir>/<arch>.pt`` (written by
``make_tiny_upstreams``), trains it on the untranscribed audio of the wav.scp files
(see espnet_delta.ssl.pretrain) and writes ``<out_dir>/<arch>.pt`` in the same S3PRL
local format, to be used as ``path_or_url`` of ``<arch>_local``. A model whose output
exists is skipped; an interrupted one resumes from ``<work_dir>/<arch>/state.pt``.
Several processes may share the work (one architecture each): the recipe runs one
process per architecture with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.ssl.pretrain import PretrainConfig, pretrain
from espnet_delta.ssl.pretrain_targets import FRAME_LENGTH
from espnet_delta.ssl.tiny import ARCHITECTURES


def get_parser() -> argparse.ArgumentParser:
    d = PretrainConfig()
    p = new_parser(__doc__)
    p.add_argument("--in_dir", type=Path, required=True, help="directory of the random <arch>.pt checkpoints")
    p.add_argument("--out_dir", type=Path, required=True, help="directory for the pre-trained <arch>.pt")
    p.add_argument("--work_dir", type=Path, required=True, help="per-epoch states and targets, <work_dir>/<arch>/")
    p.add_argument("--wav_scp", type=Path, nargs="+", required=True, help="untranscribed 16 kHz audio")
    p.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    p.add_argument("--num_clusters", type=int, default=d.num_clusters, help="k-means units")
    p.add_argument("--epochs", type=int, nargs="+", default=list(d.epochs),
                   help="epochs per iteration: iteration 1 predicts MFCC units, later ones units of --target_layer")
    p.add_argument("--target_layer", type=int, default=d.target_layer,
                   help="hidden state (S3PRL numbering, 1..num_layers-1) clustered for iterations >= 2")
    p.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate")
    p.add_argument("--batch_seconds", type=float, default=d.batch_samples / 16000, help="padded audio per batch")
    p.add_argument("--mask_prob", type=float, default=d.mask_prob, help="span starts per valid frame x mask_length")
    p.add_argument("--mask_length", type=int, default=d.mask_length, help="frames per masked span")
    p.add_argument("--masked_weight", type=float, default=d.masked_weight,
                   help="HuBERT's alpha: weight of the masked-frame loss, 1 - alpha on unmasked frames")
    p.add_argument("--seed", type=int, default=d.seed)
    add_bool_argument(p, "--progress", default=True, help="show progress bars")
    add_log_level_argument(p)
    return p


def read_audio(wav_scps: Sequence[Path]) -> List[torch.Tensor]:
    """Every utterance of the wav.scp files as a float tensor; sub-frame ones are dropped."""
    from espnet_delta.data.wav_scp import AudioReader, read_wav_scp

    wavs, dropped = [], 0
    for scp in wav_scps:
        if not Path(scp).is_file():
            raise FileNotFoundError(f"wav.scp not found: {scp}")
        reader = AudioReader(Path(scp))
        for item in read_wav_scp(Path(scp)):
            wav = torch.from_numpy(reader.read(item))
            if len(wav) < FRAME_LENGTH:
                dropped += 1
                continue
            wavs.append(wav)
    if dropped:
        logging.warning("dropped %d utterances shorter than %d samples", dropped, FRAME_LENGTH)
    if not wavs:
        raise ValueError(f"no usable audio in {', '.join(map(str, wav_scps))}")
    return wavs


def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    run_command(lambda: _pretrain(args), args.log_level)


def _pretrain(args) -> None:
    cfg = PretrainConfig(
        num_clusters=args.num_clusters,
        epochs=tuple(args.epochs),
        target_layer=args.target_layer,
        lr=args.lr,
        batch_samples=int(args.batch_seconds * 16000),
        mask_prob=args.mask_prob,
        mask_length=args.mask_length,
        masked_weight=args.masked_weight,
        seed=args.seed,
    )
    todo = [a for a in args.archs if not (args.out_dir / f"{a}.pt").exists()]
    for arch in sorted(set(args.archs) - set(todo)):
        logging.info("pre-trained %s exists, skipping: %s", arch, args.out_dir / f"{arch}.pt")
    if not todo:
        return
    wavs = read_audio(args.wav_scp)
    logging.info("pre-training %s on %d utterances (%.1f min) with %s", " ".join(todo), len(wavs),
                 sum(len(w) for w in wavs) / 16000 / 60, cfg)
    for arch in todo:
        start = time.perf_counter()
        pretrain(args.in_dir / f"{arch}.pt", args.out_dir / f"{arch}.pt", wavs, args.work_dir / arch, cfg,
                 progress=args.progress)
        logging.info("%s pre-trained in %.1f s", arch, time.perf_counter() - start)


if __name__ == "__main__":
    main()
