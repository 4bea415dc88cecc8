#!/usr/bin/env bash
# SSHR (arXiv 2309.16937) on an embedded multilingual corpus: six languages spoken by
# espeak-ng, a tiny 6-layer WavLM pre-trained here on the corpus audio (stage 3), the
# fine-tuned baseline and the SSHR systems of conf/sshr_systems.yaml for graphemes (CER)
# and phonemes (PER) per language, and a language-ID probe of every layer of the frozen
# pre-trained model (stage 5). The seeds give no hours for their corpora: a paper-config dry run
# (docs/dry_run.md) counts full steps with --dry_run_hours "train=H". Offline, CPU; measured 9 min 55 s from scratch on two idle Intel Xeon cores, at most 1.48 GB in one process and 2.39 GB in all (see docs/performance.md). Options after ./run.sh
# override the ones below (./run.sh --help lists them all).
set -euo pipefail
. ./db.sh

../../../local/asr.sh \
    --multilingual_corpus_dir "${MINI_MULTILINGUAL}" \
    --tiny_upstream_dir downloads/upstreams \
    --tiny_upstream_opts "--archs wavlm --num_layers 6 --feature_extractor single --conv_channels 512" \
    --pretrained_upstream_dir downloads/upstreams_pt \
    --pretrain_archs wavlm \
    --upstreams wavlm \
    --upstream_conf conf/upstreams.yaml \
    --finetune_config '' \
    --sshr_config conf/sshr.yaml \
    --sshr_systems conf/sshr_systems.yaml \
    --sshr_units "char phn" \
    --langid_probe true \
    --results_baseline sshr_baseline_char \
    --test_sets test \
    --stop_stage 5 \
    --dry_run_hours none \
    --nj 2 \
    --ngpu 0 \
    "$@"
