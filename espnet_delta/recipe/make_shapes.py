"""Write ESPnet speech shape files (``<utt> <num_samples>``) for Kaldi data dirs.

    python -m espnet_delta.recipe.make_shapes --data_dir data --sets train dev test --out_dir dump/shapes

writes ``<out_dir>/<set>/speech_shape`` for each set.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet_delta.cli import add_log_level_argument, reports_bad_input, setup_logging
from espnet_delta.data.shapes import write_speech_shape


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", type=Path, required=True)
    p.add_argument("--sets", nargs="+", required=True)
    p.add_argument("--out_dir", type=Path, required=True)
    add_log_level_argument(p)
    return p


@reports_bad_input
def main(cmd: Optional[Sequence[str]] = None) -> None:
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    for name in args.sets:
        scp = args.data_dir / name / "wav.scp"
        if not scp.is_file():
            p.error(f"{scp} not found")
        if (scp.parent / "segments").exists():  # wav.scp would list recordings, not utterances
            logging.error("%s: segments files are not supported: one audio file per utterance in wav.scp",
                          scp.parent / "segments")
            sys.exit(1)
        try:
            out = write_speech_shape(scp, args.out_dir / name / "speech_shape")
        except ValueError as e:  # names the wav.scp line and the audio file
            logging.error("%s", e)
            sys.exit(1)
        logging.info("wrote %s", out)


if __name__ == "__main__":
    main()
