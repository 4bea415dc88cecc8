#!/usr/bin/env bash
# The shared stage engine of every espnet_delta recipe (see ../README.md, "Stages").
# A recipe's run.sh sets corpus options and calls this script; any option can be
# overridden on the command line: ./run.sh --stage 3 --stop_stage 4 --nj 4
set -euo pipefail

help_message() {
    cat <<HELP
Usage: $0 [options]
  --stage N --stop_stage M   run stages N..M (default 1..9)
  --myst DIR                 MyST root (data/{train,development,test}/...)
  --librispeech DIR          LibriSpeech root (adult speech), optional
  --mini_corpus_dir DIR      generate the synthetic mini corpus here in stage 1 and use it
  --tiny_upstream_dir DIR    write tiny random upstream checkpoints here in stage 1
  --whisper_hyp FILE         utt_id<TAB>hypothesis file for the MyST WER filter
  --subset_hours LIST        nested train subsets, e.g. 1,5,10
  --data_dir DIR --exp_dir DIR   outputs (default data, exp)
  --nj N  --ngpu N  --train_set NAME
HELP
}

# shellcheck source=utils.sh
. "$(dirname "${BASH_SOURCE[0]}")/utils.sh"

stage=1
stop_stage=9
myst=
librispeech=
mini_corpus_dir=
mini_corpus_scale=1.0
tiny_upstream_dir=
whisper_hyp=
subset_hours=1,5,10
keep_long_test=false
data_dir=data
exp_dir=exp
nj=2
ngpu=0
train_set=train
valid_set=dev
test_sets="test"

parse_options "$@"

# shellcheck source=path.sh
. "$(dirname "${BASH_SOURCE[0]}")/path.sh"
export python

if [ -n "${mini_corpus_dir}" ]; then
    myst=${mini_corpus_dir}/myst
    librispeech=${mini_corpus_dir}/librispeech
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    log "Stage 1: data preparation -> ${data_dir}"
    if [ -n "${mini_corpus_dir}" ]; then
        log "Generating the synthetic mini corpus in ${mini_corpus_dir} (skipped when complete)"
        ${python} -m espnet_delta.bin.make_mini_corpus --out "${mini_corpus_dir}" --scale "${mini_corpus_scale}" --nj "${nj}"
    fi
    if [ -n "${tiny_upstream_dir}" ]; then
        log "Writing tiny random upstreams to ${tiny_upstream_dir} (skipped when present)"
        ${python} -m espnet_delta.bin.make_tiny_upstreams --out_dir "${tiny_upstream_dir}"
    fi
    [ -n "${myst}" ] || { log "ERROR: --myst <root> (or --mini_corpus_dir) is required for stage 1"; exit 2; }
    data_args=(--myst "${myst}" --data_dir "${data_dir}" --subset_hours "${subset_hours}" --keep_long_test "${keep_long_test}")
    [ -n "${librispeech}" ] && data_args+=(--librispeech "${librispeech}")
    [ -n "${whisper_hyp}" ] && data_args+=(--whisper_hyp "${whisper_hyp}")
    "${repo_root}/local/data.sh" "${data_args[@]}"
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    log "Stage 2: character token list -> ${data_dir}/token_list/char/tokens.txt"
    ${python} -m espnet_delta.bin.make_tokens --text "${data_dir}/${train_set}/text" \
        --out "${data_dir}/token_list/char/tokens.txt"
fi

log "Successfully finished stages ${stage}..${stop_stage}"
