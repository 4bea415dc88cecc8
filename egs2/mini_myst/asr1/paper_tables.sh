#!/usr/bin/env bash
# Tables 1-5 of arXiv 2601.20142 on the mini corpus (local/paper_tables.sh; docs/recipes.md, "Paper tables"):
#   ./paper_tables.sh                     # all five tables
#   ./paper_tables.sh --tables "1 3"      # some of them
# Data sizes, scaled from the paper's full (133 h) / 10 h / 5 h / 1 h: full (0.49 h) / 0.2 h /
# 0.1 h / 0.05 h (train, train_12min, train_6min, train_3min). Every size is fine-tuned for the
# same number of updates as the full set (conf/paper/finetune_subsets.yaml), as egs2/myst does
# with 12,000 (the project's reading of Fan et al.'s protocol, which the paper follows).
# Writes exp/paper_tables.md and the "## Table N" sections of RESULTS.md, with the paper's
# published tables once below the run's, marked as not comparable (--compare_paper once).
set -euo pipefail

../../../local/paper_tables.sh \
    --sizes "full 0.2 0.1 0.05" \
    --systems_dir conf/paper \
    --subset_finetune_config conf/paper/finetune_subsets.yaml \
    --adult_train_set libri_train \
    --child_label "mini MyST" \
    --adult_label "mini LibriSpeech" \
    --compare_paper once \
    "$@"
