#!/usr/bin/env bash
# Tables 1-5 of arXiv 2601.20142 at paper scale (local/paper_tables.sh; docs/recipes.md, "Paper tables"):
#   ./paper_tables.sh --tables 1     # one table; default all five
#   ./paper_tables.sh --dry_run true --run_opts "--ngpu 0 --gpu_inference false"   # every table's configs and
#       systems, trainings capped, on a generated corpus and random paper-topology models (docs/dry_run.md)
# Sizes full / 10 h / 5 h / 1 h of MyST train (stage 1's nested train_<h>h subsets), each its own
# fine-tuning (conf/tuning/finetune_large.yaml: 12,000 updates at every size, the project's
# reading of the protocol of Fan et al. 2024 that the paper follows) and fusion run.
# Table 4 fine-tunes HuBERT and wav2vec2 on LibriSpeech (LIBRISPEECH in db.sh; libri_train).
# Writes exp/paper_tables.md and the "## Table N" sections of RESULTS.md, each cell with the
# paper's published value and the difference (--compare_paper auto = cells for these sizes).
set -euo pipefail

../../../local/paper_tables.sh \
    --sizes "full 10 5 1" \
    --systems_dir conf/tuning/paper \
    --adult_train_set libri_train \
    "$@"
