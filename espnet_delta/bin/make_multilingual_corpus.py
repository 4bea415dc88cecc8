"""Generate the synthetic multilingual corpus (en, es, de, fr, it, nl) with espeak-ng; write Kaldi dirs.

    python -m espnet_delta.bin.make_multilingual_corpus --out DIR [--data_dir data] [--scale 1.0] [--seed 0] [--nj 2]

Writes the corpus (audio, utterances.tsv, phones.txt) and, with --data_dir, the Kaldi
dirs <data_dir>/{train,dev,test} with text (graphemes), text.phn and utt2lang.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence


from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.data.multilingual_corpus import make_multilingual_corpus, write_data_dirs


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__, option_file=True, prog="python -m espnet_delta.bin.make_multilingual_corpus")
    p.add_argument("--out", default=None, help="(required) corpus folder to create (left alone if already complete)")
    p.add_argument("--data_dir", type=Path, default=None, help="also write Kaldi dirs <data_dir>/{train,dev,test}")
    p.add_argument("--scale", type=float, default=1.0, help="size factor; speakers and utterances per speaker scale with sqrt(scale)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sentences and voice choices")
    p.add_argument("--nj", type=int, default=2, help="parallel espeak-ng/sox jobs")
    add_bool_argument(p, "--only_data", default=False, help="only (re)write --data_dir from an existing corpus")
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
    if args.only_data and args.data_dir is None:
        logging.error("--only_data needs --data_dir")
        return 2
    start = time.monotonic()
    root = run_command(lambda: _make(args), args.log_level)
    logging.info("done in %.1f s: corpus %s", time.monotonic() - start, root)
    return 0


def _make(args) -> Path:
    root = Path(args.out) if args.only_data else make_multilingual_corpus(args.out, args.scale, args.seed, args.nj)
    if args.data_dir is not None:
        write_data_dirs(root, args.data_dir)
    return root


if __name__ == "__main__":
    sys.exit(main())
