#!/usr/bin/env bash
# MyST children's speech at paper scale: large S3PRL hub models, a GPU.
#   ./run.sh --myst /path/to/myst [--librispeech /path/to/LibriSpeech] [--whisper_hyp whisper.tsv]
# Options after ./run.sh override the ones below.
set -euo pipefail

../../../local/asr.sh \
    --subset_hours 1,5,10 \
    --nj 8 \
    --ngpu 1 \
    "$@"
