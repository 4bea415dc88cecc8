"""Command-line entry points: ``python -m espnet_delta.bin.<name>``."""

import logging

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"  # ESPnet's


def setup_logging(level="INFO") -> None:
    """One log format for every entry point, so the recipe's logs read alike."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
