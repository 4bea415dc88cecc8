"""Write a tiny random Whisper checkpoint that ``whisper.load_model(path)`` loads offline.

    python -m espnet_delta.bin.make_tiny_whisper --out downloads/whisper/tiny_random.pt

The file is kept when present (a recipe stage may call this every time).
"""

import argparse
import dataclasses
from pathlib import Path
from typing import Optional, Sequence


from espnet_delta.cli import add_bool_argument, add_log_level_argument, new_parser, run_command, setup_logging
from espnet_delta.whisper.tiny import TinyWhisperConfig, make_tiny_whisper


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__, option_file=True)
    p.add_argument("--out", type=Path, default=None, help="checkpoint file to write (required)")
    p.add_argument("--seed", type=int, default=0)
    for field in dataclasses.fields(TinyWhisperConfig):
        p.add_argument(f"--{field.name}", type=int, default=field.default)
    add_bool_argument(p, "--overwrite", help="rewrite an existing checkpoint")
    add_log_level_argument(p)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    if args.out is None:
        parser.error("--out is required")
    setup_logging(args.log_level)
    config = TinyWhisperConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TinyWhisperConfig)})
    run_command(lambda: make_tiny_whisper(args.out, seed=args.seed, config=config, overwrite=args.overwrite), args.log_level)


if __name__ == "__main__":
    main()
