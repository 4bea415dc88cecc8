"""Prepare Kaldi data dirs for MyST (+ LibriSpeech) and print the summary table.

    python -m espnet_delta.bin.prepare_data --myst ROOT [--librispeech ROOT] \\
        [--whisper_hyp FILE] --out data [--max_duration 30] [--min_words 3] \\
        [--keep_long_test] [--subset_hours 1,5,10] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence


from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.data.prepare import SUMMARY_NAME, PrepConfig, prepare_data
from espnet_delta.data.report import format_summary
from espnet_delta.data.subsets import parse_hours


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__, option_file=True, prog="python -m espnet_delta.bin.prepare_data")
    p.add_argument("--myst", default=None, help="(required) MyST root (holding data/{train,development,test}) or its data/ folder")
    p.add_argument("--librispeech", default=None, help="LibriSpeech root holding train-clean-100, dev-clean, test-clean")
    p.add_argument("--whisper_hyp", default=None, help="file of 'utt_id<TAB>hypothesis' lines; enables the Whisper WER filter")
    p.add_argument("--out", default=None, help="(required) output folder for the data dirs (never inside a corpus)")
    p.add_argument("--max_duration", type=float, default=30.0, help="drop utterances longer than this (seconds)")
    p.add_argument("--min_words", type=int, default=3, help="drop MyST utterances with fewer words after cleaning")
    p.add_argument("--max_wer", type=float, default=0.5, help="drop MyST utterances whose Whisper WER exceeds this (0.5 = 50%%)")
    add_bool_argument(p, "--keep_long_test", help="do not apply --max_duration to the MyST test set")
    p.add_argument("--subset_hours", default="1,5,10", help="comma-separated sizes (hours) of nested train subsets; '' for none")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset shuffle")
    add_bool_argument(p, "--decode_audio", help="decode every file fully to catch truncated audio (slow)")
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> int:
    """Returns the exit status (0 ok, 1 no usable training data, 2 bad arguments)."""
    parser = get_parser()
    args = parser.parse_args(cmd)
    for name in ("myst", "out"):
        if getattr(args, name) is None:
            parser.error(f"--{name} is required")
    try:
        args.subset_hours = tuple(parse_hours(args.subset_hours))
    except ValueError as e:  # --subset_hours 1,x: a usage error
        parser.error(f"--subset_hours: {e}")
    setup_logging(args.log_level)
    return run_command(lambda: _prepare(args), args.log_level, returns_status=True)  # other bad input: 1


def _prepare(args) -> int:
    config = PrepConfig(
        max_duration=args.max_duration,
        min_words=args.min_words,
        max_wer=args.max_wer,
        keep_long_test=args.keep_long_test,
        subset_hours=args.subset_hours,
        seed=args.seed,
        decode_audio=args.decode_audio,
    )
    try:
        stats = prepare_data(args.out, args.myst, args.librispeech, args.whisper_hyp, config)
    except (FileNotFoundError, ValueError) as exc:  # bad arguments: no traceback
        logging.error("%s", exc)
        return 2
    print(format_summary(stats))
    print(f"(also in {args.out}/{SUMMARY_NAME})")
    train = next((s for s in stats if s.name == "train"), None)
    if train is None or train.kept == 0:
        logging.error("MyST train has no usable utterances")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
