"""Speed-perturb a Kaldi data dir into ESPnet's <set>_sp (ids sp<f>-<utt>, one copy per factor).

    python -m espnet_delta.bin.speed_perturb --src data/train --out data/train_sp [--factors 0.9 1.0 1.1] [--audio_dir DIR]

The perturbed audio goes to --audio_dir (default <out's parent>/audio_sp/<out's name>);
finished files are reused, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence


from espnet_delta.cli import add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.data.speed_perturb import speed_perturb_dir


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__, option_file=True, prog="python -m espnet_delta.bin.speed_perturb")
    p.add_argument("--src", type=Path, default=None, help="(required) source data dir")
    p.add_argument("--out", type=Path, default=None, help="(required) output data dir, replaced as a whole")
    p.add_argument("--factors", type=float, nargs="+", default=[0.9, 1.0, 1.1], help="speed factors (1.0 keeps the original audio)")
    p.add_argument("--audio_dir", type=Path, default=None, help="where the perturbed audio goes")
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> int:
    """Returns the exit status (0 on success, 2 on a bad argument)."""
    parser = get_parser()
    args = parser.parse_args(cmd)
    if args.src is None or args.out is None:
        parser.error("--src and --out are required")
    setup_logging(args.log_level)
    start = time.monotonic()
    return run_command(lambda: _perturb(args, start), args.log_level, returns_status=True)  # other bad input: 1


def _perturb(args, start: float) -> int:
    try:
        out = speed_perturb_dir(args.src, args.out, args.factors, args.audio_dir)
    except ValueError as exc:  # a bad data dir: one line naming it
        logging.error("%s", exc)
        return 2
    logging.info("done in %.1f s: %s", time.monotonic() - start, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
