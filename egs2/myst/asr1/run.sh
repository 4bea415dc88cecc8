#!/usr/bin/env bash
# MyST children's speech at paper scale: large S3PRL hub models, a GPU.
# Set the corpus paths in db.sh, then
#   ./run.sh [--whisper_hyp whisper.tsv]
#   ./run.sh --adult_train_set libri_train      # + merging (needs LIBRISPEECH in db.sh)
# Options after ./run.sh override the ones below (./run.sh --help lists them all).
# conf/*.yaml link to the paper configs in conf/tuning/.
set -euo pipefail
. ./db.sh

../../../local/asr.sh \
    --myst "${MYST}" \
    --librispeech "${LIBRISPEECH}" \
    --upstream_conf conf/upstreams.yaml \
    --finetune_config conf/finetune.yaml \
    --fusion_config conf/fusion.yaml \
    --fusion_systems conf/fusion_systems.yaml \
    --subset_hours 1,5,10 \
    --nj 8 \
    --ngpu 1 \
    --extract_fp16 true \
    "$@"
