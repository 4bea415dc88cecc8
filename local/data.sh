#!/usr/bin/env bash
# Data preparation (stage 1 of local/asr.sh): MyST (+ LibriSpeech) -> Kaldi data dirs under
# --data_dir, as ESPnet recipes' local/data.sh. Also usable alone from a recipe directory:
#   local/data.sh --myst <root> [--librispeech <root>] [--whisper_hyp <file>] [--data_dir data]
# Writes <data_dir>/{train,dev,test,libri_*,train_*}/ and <data_dir>/prep_summary.tsv.
set -euo pipefail

# shellcheck source=utils.sh
. "$(dirname "${BASH_SOURCE[0]}")/utils.sh"

python=${python:-python3}  # the interpreter command (local/asr.sh exports its own)
myst=
librispeech=
whisper_hyp=
data_dir=data
max_duration=30
min_words=3
max_wer=0.5
keep_long_test=false
subset_hours=1,5,10
seed=0

help_message() {
    cat <<HELP
Usage: $0 --myst DIR [options]
  --myst DIR              MyST root (required)
  --librispeech DIR       LibriSpeech root, adult speech (default: '${librispeech}')
  --whisper_hyp FILE      utt_id<TAB>hypothesis file for the Whisper WER filter (default: '${whisper_hyp}')
  --data_dir DIR          output data dirs (default: ${data_dir})
  --max_duration SEC      drop longer utterances (default: ${max_duration})
  --min_words N           drop MyST utterances with fewer words (default: ${min_words})
  --max_wer X             drop MyST utterances with a higher Whisper WER (default: ${max_wer})
  --keep_long_test BOOL   keep long MyST test utterances (default: ${keep_long_test})
  --subset_hours LIST     nested train subsets, e.g. 1,5,10 (default: '${subset_hours}')
  --seed N                seed of the subset shuffle (default: ${seed})
  --python CMD            python command (default: '${python}')
HELP
}

parse_options "$@"
[ ${#positional[@]} -eq 0 ] || { help_message >&2; log "ERROR: unexpected arguments: ${positional[*]}"; exit 2; }
[ -n "${myst}" ] || { help_message >&2; log "ERROR: --myst <root> is required"; exit 2; }

args=(--myst "${myst}" --out "${data_dir}" --max_duration "${max_duration}" --min_words "${min_words}"
      --max_wer "${max_wer}" --subset_hours "${subset_hours}" --seed "${seed}")
[ -n "${librispeech}" ] && args+=(--librispeech "${librispeech}")
[ -n "${whisper_hyp}" ] && args+=(--whisper_hyp "${whisper_hyp}")
case "${keep_long_test}" in
    true) args+=(--keep_long_test) ;;
    false) ;;
    *) log "ERROR: --keep_long_test must be true or false, got ${keep_long_test}"; exit 2 ;;
esac

log "Preparing data in ${data_dir}: ${python} -m espnet_delta.bin.prepare_data ${args[*]}"
# shellcheck disable=SC2086  # ${python} may be a command with arguments
${python} -m espnet_delta.bin.prepare_data "${args[@]}"
log "Data preparation done: ${data_dir}"
