"""Write ESPnet's character token list from Kaldi ``text`` files (stage 2).

    python -m espnet_delta.recipe.make_tokens --text data/train/text --out data/token_list/char/tokens.txt
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet_delta.cli import add_log_level_argument, reports_bad_input, setup_logging
from espnet_delta.data.tokens import char_token_list, write_token_list


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, nargs="+", required=True, help="Kaldi text file(s): <utt> <transcript>")
    p.add_argument("--out", type=Path, required=True, help="token list to write (one token per line)")
    add_log_level_argument(p)
    return p


@reports_bad_input
def main(cmd: Optional[Sequence[str]] = None) -> None:
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    for path in args.text:
        if not path.is_file():
            p.error(f"text file not found: {path}")
    try:
        tokens = char_token_list(args.text)
    except ValueError as e:  # a TableError names the file and line
        logging.error("%s", e)
        sys.exit(1)
    write_token_list(tokens, args.out)
    logging.info("wrote %d tokens to %s", len(tokens), args.out)


if __name__ == "__main__":
    main()
