"""Command-line entry points: ``python -m espnet_delta.bin.<name>``.

Every command follows espnet2's layout: ``get_parser()`` builds the parser and
``main(cmd=None)`` parses ``cmd`` (a list; ``None`` = ``sys.argv[1:]``), so tests
call commands in-process. Booleans go through espnet2's ``str2bool``.
"""

import argparse
import logging

from espnet2.utils.types import str2bool

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"  # ESPnet's
LOG_LEVELS = ("ERROR", "WARNING", "INFO", "DEBUG")


def setup_logging(level="INFO") -> None:
    """One log format for every entry point, so the recipe's logs read alike."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


def add_bool_argument(parser, *names: str, default: bool = False, help: str = "", **kwargs) -> argparse.Action:
    """A boolean option: ``--name`` alone means true, ``--name true|false`` as ESPnet's
    shell scripts pass booleans (``str2bool``: true/false, yes/no, 1/0)."""
    return parser.add_argument(*names, type=str2bool, nargs="?", const=True, default=default, help=help, **kwargs)


def add_log_level_argument(parser) -> argparse.Action:
    return parser.add_argument("--log_level", default="INFO", choices=LOG_LEVELS, help="logging level")


def parse_test_sets(parser, items) -> "list":
    """``[(name, Path)]`` from repeated ``--test NAME=SCP`` options; a parser error when one is
    missing, malformed or names no existing file (decode, beam_decode, gate_means share it)."""
    from pathlib import Path

    if not items:
        parser.error("--test NAME=SCP is required")
    tests = []
    for item in items:
        name, sep, scp = item.partition("=")
        if not sep or not Path(scp).is_file():
            parser.error(f"--test expects NAME=SCP with an existing file, got {item!r}")
        tests.append((name, Path(scp)))
    return tests
