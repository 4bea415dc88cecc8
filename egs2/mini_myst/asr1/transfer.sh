#!/usr/bin/env bash
# Augmentation task vectors and their transfer to a second synthetic child corpus (mini_kids,
# generated in downloads/mini_kids), after ./run.sh; see local/transfer.sh for the stages. The
# second corpus has half the child training speech, so its baseline gets 15 epochs (~2000 steps,
# as the 8 epochs on train) instead of conf/finetune.yaml's 8.
# Options after ./transfer.sh override the ones below (./transfer.sh --help lists them).
set -euo pipefail

../../../local/transfer.sh \
    --kids_corpus_dir downloads/mini_kids \
    --upstreams wavlm \
    --upstream_conf conf/upstreams.yaml \
    --finetune_config conf/finetune.yaml \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --specaug_config conf/specaug.yaml \
    --kids_max_epoch 15 \
    --nj 2 \
    "$@"
