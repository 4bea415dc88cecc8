"""What every command shares: one parser style, boolean and log-level options, one log format.

Commands (``espnet_delta.bin.*`` and the planner's ``espnet_delta.recipe.*`` entry points)
follow espnet2's layout: ``get_parser()`` builds the parser with :func:`new_parser` and
``main(cmd=None)`` parses ``cmd`` (a list; ``None`` = ``sys.argv[1:]``), so tests call
commands in-process. Booleans go through espnet2's ``str2bool``, as ESPnet's shell
scripts pass them. This module sits at the bottom of the import order (library code
uses :data:`LOG_FORMAT`), so it imports nothing of the package.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from espnet2.utils.types import str2bool  # noqa: F401  (re-exported for benchmarks and tests)

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"  # ESPnet's
LOG_LEVELS = ("ERROR", "WARNING", "INFO", "DEBUG")


def new_parser(description: Optional[str], option_file: bool = False, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every command: the module docstring as written above the options.

    ``option_file``: espnet2's parser, whose ``--config FILE`` reads option values from a
    YAML file (keys are option names, the command line wins), for commands whose own
    ``--config`` is not an input of theirs (extract_features and init_state read one).
    """
    if option_file:
        from espnet2.utils.config_argparse import ArgumentParser

        return ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def setup_logging(level="INFO") -> None:
    """One log format for every entry point, so the recipe's logs read alike."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


def add_bool_argument(parser, *names: str, default: bool = False, help: str = "", **kwargs) -> argparse.Action:
    """A boolean option: ``--name`` alone means true, ``--name true|false`` as ESPnet's
    shell scripts pass booleans (``str2bool``: true/false, yes/no, 1/0)."""
    return parser.add_argument(*names, type=str2bool, nargs="?", const=True, default=default, help=help, **kwargs)


def add_log_level_argument(parser) -> argparse.Action:
    return parser.add_argument("--log_level", default="INFO", choices=LOG_LEVELS, help="logging level")


def add_test_set_argument(parser, what: str = "wav.scp or feats.scp") -> argparse.Action:
    """Repeatable ``--test NAME=SCP`` (read back with :func:`parse_test_sets`)."""
    return parser.add_argument("--test", action="append", default=None, metavar="NAME=SCP",
                               help=f"test set name and its {what} (repeatable; required)")


def parse_test_sets(parser, items: Optional[Sequence[str]]) -> List[Tuple[str, Path]]:
    """``[(name, Path)]`` from repeated ``--test NAME=SCP`` options; a parser error when one is
    missing, malformed or names no existing file (decode, beam_decode, gate_means share it)."""
    if not items:
        parser.error("--test NAME=SCP is required")
    tests = []
    for item in items:
        name, sep, scp = item.partition("=")
        if not sep or not Path(scp).is_file():
            parser.error(f"--test expects NAME=SCP with an existing file, got {item!r}")
        tests.append((name, Path(scp)))
    return tests
