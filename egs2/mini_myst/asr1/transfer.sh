#!/usr/bin/env bash
# Augmentation task vectors and their transfer to a second synthetic child corpus (mini_kids,
# generated in downloads/mini_kids), after ./run.sh; see local/transfer.sh for the stages.
# theta_orig is run.sh's ft_wavlm, fine-tuned on the speed-perturbed train_sp; theta_aug is the same
# fine-tuning with SpecAugment (conf/specaug.yaml), so tau_aug is SpecAugment's task vector (seed 002's
# augmentation). conf/finetune.yaml is bounded by iterations (2,000 steps), so the second corpus's
# baseline, with half the child speech, trains as many steps as ft_wavlm.
# Options after ./transfer.sh override the ones below (./transfer.sh --help lists them).
set -euo pipefail

../../../local/transfer.sh \
    --kids_corpus_dir downloads/mini_kids \
    --upstreams wavlm \
    --upstream_conf conf/upstreams.yaml \
    --finetune_config conf/finetune.yaml \
    --train_set train_sp \
    --speed_perturb_factors '' \
    --specaug_config conf/specaug.yaml \
    --nj 2 \
    "$@"
