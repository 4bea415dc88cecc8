"""Generate the second synthetic child corpus (mini_kids, read storybook speech) and its Kaldi dirs.

    python -m espnet_delta.bin.make_mini_kids --out DIR [--data_dir data] [--prefix kids_] [--scale 1.0] [--seed 0] [--nj 2]

Writes the corpus (DIR/kids/, DIR/phones.txt) and, with --data_dir, the Kaldi dirs
<data_dir>/<prefix>{train,dev,test} and <data_dir>/<prefix>prep_summary.tsv.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence


from espnet_delta.cli import add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.data.mini_kids import make_mini_kids, prepare_kids


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__, option_file=True, prog="python -m espnet_delta.bin.make_mini_kids")
    p.add_argument("--out", default=None, help="(required) corpus folder to create (left alone if already complete)")
    p.add_argument("--data_dir", type=Path, default=None, help="also write Kaldi dirs <data_dir>/<prefix>{train,dev,test}")
    p.add_argument("--prefix", default="kids_", help="prefix of the data dir names")
    p.add_argument("--scale", type=float, default=1.0, help="size factor; speakers and utterances per speaker scale with sqrt(scale)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sentences and voice choices")
    p.add_argument("--nj", type=int, default=2, help="parallel espeak-ng/sox jobs")
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> int:
    """Returns the exit status (0 on success, 2 on a bad argument)."""
    parser = get_parser()
    args = parser.parse_args(cmd)
    if args.out is None:
        parser.error("--out is required")
    setup_logging(args.log_level)
    if args.scale <= 0:
        logging.error("--scale must be positive")
        return 2
    start = time.monotonic()
    root = run_command(lambda: _make(args), args.log_level)
    logging.info("done in %.1f s: corpus %s", time.monotonic() - start, root)
    return 0


def _make(args) -> Path:
    root = make_mini_kids(args.out, scale=args.scale, seed=args.seed, nj=args.nj)
    if args.data_dir is not None:
        prepare_kids(root, args.data_dir, prefix=args.prefix)
    return root


if __name__ == "__main__":
    sys.exit(main())
