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
