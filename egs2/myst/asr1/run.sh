#!/usr/bin/env bash
# MyST children's speech at paper scale: large S3PRL hub models, a GPU.
# Set the corpus paths in db.sh, then
#   ./run.sh                                    # screens MyST with Whisper large-v2 first (stage 1; see docs/myst.md)
#   ./run.sh --adult_train_set libri_train      # + merging (needs LIBRISPEECH in db.sh)
#   ./run.sh --adult_train_set libri_train --whisper_config conf/tuning/whisper_small_finetune.yaml \
#       --whisper_decode_config conf/tuning/whisper_small_decode.yaml   # + Whisper-small fine-tuning and merging
# Options after ./run.sh override the ones below (./run.sh --help lists them all).
# conf/*.yaml link to the paper configs in conf/tuning/.
# Job placement (cmd.sh: local or slurm): --nj trainings at once, each on --ngpu GPUs (DDP when
# > 1; --num_nodes M for several nodes on Slurm); extraction and decoding on GPUs
# (--gpu_inference true) in --inference_nj jobs, by default one per visible GPU (local) - a GPU
# job never shares its GPU. On one 1-GPU machine this runs one job at a time; on a Slurm cluster
# e.g. ./run.sh --cmd_backend slurm --nj 4 --ngpu 4 --inference_nj 16
set -euo pipefail
. ./db.sh

# --whisper_model '' (no screening, e.g. offline) needs no --whisper_hyp: the file below is used where it exists
# (an earlier screening's, or your own), else the engine turns the Whisper WER filter off and says so.
../../../local/asr.sh \
    --myst "${MYST}" \
    --librispeech "${LIBRISPEECH}" \
    --upstream_conf conf/upstreams.yaml \
    --finetune_config conf/finetune.yaml \
    --fusion_config conf/fusion.yaml \
    --fusion_systems conf/fusion_systems.yaml \
    --subset_hours 1,5,10 \
    --whisper_model large-v2 \
    --whisper_hyp data/whisper_large-v2.tsv \
    --nj 1 \
    --ngpu 1 \
    --gpu_inference true \
    --feats_fp16 true \
    "$@"
