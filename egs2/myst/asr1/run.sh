#!/usr/bin/env bash
# MyST children's speech at paper scale: large S3PRL hub models, a GPU.
#   ./run.sh --myst /path/to/myst [--whisper_hyp whisper.tsv]
#   ./run.sh --myst /path/to/myst --librispeech /path/to/LibriSpeech --adult_train_set libri_train   # + merging
# Options after ./run.sh override the ones below.
set -euo pipefail

conf=../../../conf
../../../local/asr.sh \
    --upstream_conf "${conf}/upstreams_large.yaml" \
    --finetune_config "${conf}/finetune_large.yaml" \
    --fusion_config "${conf}/fusion_paper.yaml" \
    --fusion_systems "${conf}/fusion_systems.yaml" \
    --subset_hours 1,5,10 \
    --nj 8 \
    --ngpu 1 \
    --extract_fp16 true \
    "$@"
