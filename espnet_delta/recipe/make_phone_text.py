"""Phone targets of the data sets and their token list (stage 2, corpora with phones).

    python -m espnet_delta.recipe.make_phone_text --phones downloads/mini_myst/phones.txt \\
        --data_dir data --sets train dev test --train_set train --token_list data/token_list/phn/tokens.txt

``--phones`` is a corpus-wide ``<utt_id> <phone> <phone> ...`` table (the mini corpus
writes ``phones.txt``). For every set, ``<data_dir>/<set>/text.phn`` gets the phones of
exactly the utterances of ``<data_dir>/<set>/text``, in its order, so that phone
systems train and are scored on the same utterances as the character ones (data
preparation may have dropped some). An utterance of a set without phones is an error
naming both files. The token list is built from the training set's ``text.phn``
(:func:`espnet_delta.data.tokens.phone_token_list`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_delta.cli import add_log_level_argument, reports_bad_input, setup_logging
from espnet_delta.data.tokens import phone_token_list, write_token_list
from espnet_delta.fileio import read_table, write_text_atomic

PHONE_TEXT = "text.phn"


def read_phones(path: Path) -> Dict[str, str]:
    """utt id -> space-separated phones; an utterance without phones is an error."""
    phones = {}
    for row in read_table(path, what="phone table"):
        if not row.value.split():
            raise ValueError(f"{path}:{row.lineno}: utterance {row.key!r} has no phones")
        phones[row.key] = " ".join(row.value.split())
    return phones


def write_phone_text(set_dir: Path, phones: Dict[str, str], phones_file: Path) -> Path:
    """``<set_dir>/text.phn`` for the utterances of ``<set_dir>/text``."""
    keys = [row.key for row in read_table(set_dir / "text", what="text")]
    missing = [k for k in keys if k not in phones]
    if missing:
        raise ValueError(f"{phones_file} has no phones for {len(missing)} utterance(s) of {set_dir / 'text'}, "
                         f"first {missing[0]!r}")
    return write_text_atomic(set_dir / PHONE_TEXT, "".join(f"{k} {phones[k]}\n" for k in keys))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phones", type=Path, required=True, help="corpus table: <utt_id> <phones...>")
    p.add_argument("--data_dir", type=Path, required=True)
    p.add_argument("--sets", nargs="+", required=True, help="data sets to write text.phn for")
    p.add_argument("--train_set", required=True, help="the token list is built from its text.phn")
    p.add_argument("--token_list", type=Path, required=True, help="phone token list to write")
    add_log_level_argument(p)
    return p


@reports_bad_input
def main(cmd: Optional[Sequence[str]] = None) -> None:
    p = get_parser()
    args = p.parse_args(cmd)
    setup_logging(args.log_level)
    if not args.phones.is_file():
        p.error(f"phone table not found: {args.phones}")
    try:
        phones = read_phones(args.phones)
        sets: List[str] = list(dict.fromkeys([args.train_set, *args.sets]))
        for name in sets:
            out = write_phone_text(args.data_dir / name, phones, args.phones)
            logging.info("wrote %s", out)
        tokens = phone_token_list([args.data_dir / args.train_set / PHONE_TEXT])
    except ValueError as e:  # each names its file (and line)
        logging.error("%s", e)
        sys.exit(1)
    write_token_list(tokens, args.token_list)
    logging.info("wrote %d phone tokens to %s", len(tokens), args.token_list)


if __name__ == "__main__":
    main()
