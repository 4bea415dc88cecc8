#!/usr/bin/env bash
# Augmentation task vectors and their transfer at paper scale (arXiv 2501.08468; local/transfer.sh has
# the stages, docs/recipes.md "Augmentation task vectors"), after ./run.sh (stages 1-5; with
# --adult_train_set libri_train for the SA row): tau_aug = theta_aug - theta_orig of the reference
# (WavLM Large, conf/finetune.yaml), theta_aug fine-tuned on MyST with speed perturbation and
# SpecAugment (conf/tuning/specaug_large.yaml), added to a model of a second child corpus.
# The paper's second corpus is CMU Kids (LDC97S63). This project has no CMU Kids reader: prepare
# data/kids_{train,dev,test} as Kaldi dirs (wav.scp, text normalised as MyST's, utt2spk) first;
# --kids_corpus_dir DIR instead generates the synthetic mini_kids corpus there (what the dry run does).
#   ./transfer.sh                                   # needs data/kids_{train,dev,test}
#   ./transfer.sh --dry_run true --kids_corpus_dir kids_corpus   # after ./run.sh --dry_run true
# Options after ./transfer.sh override the ones below (./transfer.sh --help lists them).
set -euo pipefail

../../../local/transfer.sh \
    --upstreams wavlm \
    --upstream_conf conf/upstreams.yaml \
    --finetune_config conf/finetune.yaml \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --specaug_config conf/tuning/specaug_large.yaml \
    --nj 1 \
    --ngpu 1 \
    --gpu_inference true \
    "$@"
