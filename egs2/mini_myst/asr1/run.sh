#!/usr/bin/env bash
# The embedded default: a synthetic children's-speech corpus and tiny random upstreams,
# every stage offline on a laptop CPU. Options after ./run.sh override the ones below.
set -euo pipefail

../../../local/asr.sh \
    --mini_corpus_dir downloads/mini_myst \
    --tiny_upstream_dir downloads/upstreams \
    --subset_hours 0.1,0.2 \
    --adult_train_set libri_train \
    --nj 2 \
    --ngpu 0 \
    "$@"
