"""Generate the synthetic mini corpus (MyST + LibriSpeech layouts) with espeak-ng.

    python -m espnet_delta.bin.make_mini_corpus --out DIR [--scale 1.0] [--seed 0] [--nj 2]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Optional, Sequence


from espnet_delta.cli import add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.data.mini_corpus import make_mini_corpus


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__, option_file=True, prog="python -m espnet_delta.bin.make_mini_corpus")
    p.add_argument("--out", default=None, help="(required) corpus folder to create (left alone if already complete)")
    p.add_argument("--scale", type=float, default=1.0, help="size factor; speakers and utterances per speaker scale with sqrt(scale)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sentence grammar and voice choices")
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
    corpus = run_command(lambda: make_mini_corpus(args.out, scale=args.scale, seed=args.seed, nj=args.nj), args.log_level)
    logging.info("done in %.1f s: --myst %s --librispeech %s", time.monotonic() - start, corpus.myst_root, corpus.librispeech_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
