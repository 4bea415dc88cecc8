"""Command-line entry points: ``python -m espnet_delta.bin.<name>``.

Each command is thin: it parses its arguments (the shared option helpers and the one
parser style live in :mod:`espnet_delta.cli`) and calls library functions. Nothing in
the package imports these modules.
"""
