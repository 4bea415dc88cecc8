"""Transcribe wav.scp utterances with Whisper into 'utt_id<TAB>hypothesis' lines (MyST screening).

    python -m espnet_delta.bin.transcribe_whisper --model large-v2 \\
        --wav_scp data/train/wav.scp --wav_scp data/dev/wav.scp --wav_scp data/test/wav.scp \\
        --out data/whisper_large-v2.tsv [--device cuda] [--batch_size 16] [--max_tokens 224] \\
        [--download_root DIR] [--nj N --shard K]

--model is an openai-whisper hub name (tiny ... large-v2, large-v3, turbo; downloaded into
--download_root) or a checkpoint file (python -m espnet_delta.bin.make_tiny_whisper writes a
tiny random one). English, greedy, no timestamps, no fallback, at most --max_tokens tokens per
30-s window; fp16 on a GPU. Resumable: a rerun skips what is already transcribed. Parallel
shards: start --shard k for k = 1..nj; each appends to <out>.part<k>of<nj> and the last to
finish writes <out> (see espnet_delta.whisper.transcribe). The data preparation filter reads
<out> with --whisper_hyp (python -m espnet_delta.bin.prepare_data).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence


from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, run_command, setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__, option_file=True)
    p.add_argument("--model", default=None, help="(required) hub name (e.g. large-v2) or Whisper checkpoint file")
    p.add_argument("--wav_scp", type=Path, action="append", default=None,
                   help="(required, repeatable) Kaldi wav.scp of 16 kHz mono audio")
    p.add_argument("--out", type=Path, default=None, help="(required) the utt_id<TAB>hypothesis file to write")
    p.add_argument("--download_root", default=None, help="where hub models are cached (default: ~/.cache/whisper)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:K (fp16 on a GPU)")
    p.add_argument("--language", default="en")
    p.add_argument("--max_tokens", type=int, default=224, help="most tokens decoded per 30-s window")
    p.add_argument("--batch_size", type=int, default=16, help="30-s windows per whisper.decode call")
    p.add_argument("--nj", type=int, default=1, help="number of shards (with --shard)")
    p.add_argument("--shard", type=int, default=None, help="transcribe only shard K (1..nj)")
    p.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_bool_argument(p, "--progress", default=True, help="tqdm progress bar")
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> int:
    """Returns the exit status: 0 done (or this shard done), 1 error (one logged line), 2 bad arguments."""
    parser = get_parser()
    args = parser.parse_args(cmd)
    for name in ("model", "wav_scp", "out"):
        if getattr(args, name) is None:
            parser.error(f"--{name} is required")
    if args.max_tokens < 1 or args.batch_size < 1 or args.nj < 1:
        parser.error("--max_tokens, --batch_size and --nj must be positive")
    setup_logging(args.log_level)
    import torch

    from espnet_delta.whisper.transcribe import TranscribeConfig

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    config = TranscribeConfig(model=args.model, language=args.language, max_tokens=args.max_tokens,
                              batch_size=args.batch_size, download_root=args.download_root)
    return run_command(lambda: _transcribe(args, config), args.log_level, returns_status=True)


def _transcribe(args, config) -> int:
    from espnet_delta.whisper.transcribe import transcribe_wav_scps

    result = transcribe_wav_scps(args.wav_scp, args.out, config, device=args.device, nj=args.nj, shard=args.shard,
                                 progress=args.progress)
    if result.num_transcribed:
        logging.info("transcribed %d utterances (%.2f h of audio) in %.1f s (real-time factor %.4f); %d done before",
                     result.num_transcribed, result.audio_seconds / 3600, result.compute_seconds,
                     result.compute_seconds / max(result.audio_seconds, 1e-9), result.num_skipped)
    else:
        logging.info("nothing to transcribe: all %d utterances of this shard have hypotheses", result.num_skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
