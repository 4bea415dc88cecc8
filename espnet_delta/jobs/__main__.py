"""``python -m espnet_delta.jobs``: see :mod:`espnet_delta.jobs.cli`."""

from espnet_delta.jobs.cli import main

main()
