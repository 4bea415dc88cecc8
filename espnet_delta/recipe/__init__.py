"""Stage glue that local/asr.sh calls (configs, job lists, per-stage drivers); users type
the commands in :mod:`espnet_delta.bin`."""
