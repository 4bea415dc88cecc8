#!/usr/bin/env bash
# The embedded default: a synthetic children's-speech corpus and tiny upstreams,
# pre-trained here (stage 3), every stage offline on a laptop CPU. Options after ./run.sh override the ones below
# (./run.sh --help lists them all). Opt-in, 19 min more on 2 free cores (measured): the layer-interface systems
# (frozen upstream -> last / weighted sum / hconv / concat / PCA / CLS pooling -> BiLSTM -> CTC, chars and phones):
#   ./run.sh --interface_systems conf/interface_systems.yaml
# Opt-in: a tiny Whisper fine-tuned through ESPnet on the child and adult sets (attention decoder, beam search),
# merged in stage 8 with SA merge and the tuned baselines (see docs/whisper.md):
#   ./run.sh --whisper_config conf/whisper/finetune.yaml
# Stage 3 pre-trains on the child and the adult training audio (0.93 h, never dev/test), 3 + 2 epochs: about the
# optimizer steps of the former 6 + 3 epochs on the child audio alone (890 against 846; +8 s per architecture).
# It rescued ft_wav2vec2: dev/test WER 84.9/86.5 -> 63.8/66.5 (62.3/67.5 with conf/finetune.yaml's frozen CNN);
# one seed, Intel Xeon, 2026-12-07; every variant measured is in docs/recipes.md.
# Stage 3 runs its three architectures at once (--pretrain_nj 3; one thread each, the OS shares the two cores:
# 151 s against 223 s for two processes, identical checkpoints). The child fine-tunings ft_<upstream> train on
# train_sp, the training set at speeds 0.9/1.0/1.1 (ESPnet's MyST setting), for conf/finetune.yaml's 2,000 steps:
# ft_wavlm dev/test WER 58.0/65.4 -> 47.2/53.2 (seed 0; docs/recipes.md has every variant measured).
# Stage 8 merges ft_wavlm_merge with ft_wavlm_adult, both fine-tuned with conf/finetune_merge.yaml (the upstream
# moves 10x slower than the head: task vectors small next to the pre-trained base, the merging premise; docs/merging.md).
# Stage 8 grids are 2 x 2 here (4 points per SA reading and per baseline; the paper-scale default is 3 x 3).
set -euo pipefail
. ./db.sh

../../../local/asr.sh \
    --mini_corpus_dir "${MINI_MYST}" \
    --tiny_upstream_dir downloads/upstreams \
    --pretrained_upstream_dir downloads/upstreams_pt \
    --pretrain_sets "train libri_train" --pretrain_opts "--epochs 3 2" --pretrain_nj 3 \
    --tiny_whisper downloads/whisper/tiny_random.pt \
    --probe_config conf/probe.yaml \
    --interface_config conf/interface.yaml \
    --upstream_conf conf/upstreams.yaml \
    --finetune_config conf/finetune.yaml \
    --fusion_config conf/fusion.yaml \
    --fusion_systems conf/fusion_systems.yaml \
    --subset_hours 0.1,0.2 \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --adult_train_set libri_train \
    --merge_finetune_config conf/finetune_merge.yaml \
    --merge_lambdas "0.1 0.3" --merge_alphas "0.7 0.9" \
    --merge_lerp_coefs "0.2 0.4 0.6 0.8" --merge_ta_scales "0.25 0.5 0.75 1.0" \
    --merge_ties_topks "20 50" --merge_ties_scales "0.5 1.0" \
    --nj 2 \
    --ngpu 0 \
    "$@"
