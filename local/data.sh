#!/usr/bin/env bash
# Data preparation stage: MyST (+ LibriSpeech) -> Kaldi data dirs under --data_dir.
#
# Usage (from a recipe directory, with the venv python on PATH or ${python} set):
#   local/data.sh --myst <root> [--librispeech <root>] [--whisper_hyp <file>] \
#       [--data_dir data] [--max_duration 30] [--min_words 3] [--max_wer 0.5] \
#       [--keep_long_test true|false] [--subset_hours 1,5,10] [--seed 0]
# Writes <data_dir>/{train,dev,test,libri_*,train_*}/ and <data_dir>/prep_summary.tsv.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

python=${python:-python3}
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

usage() { sed -n '4,7p' "$0" | sed 's/^# \{0,1\}//' >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --myst|--librispeech|--whisper_hyp|--data_dir|--max_duration|--min_words|--max_wer|--keep_long_test|--subset_hours|--seed)
            [ $# -ge 2 ] || { log "Error: $1 needs a value"; usage; exit 2; }
            key=${1#--}
            printf -v "${key}" '%s' "$2"
            shift 2
            ;;
        -h|--help) usage; exit 0 ;;
        *) log "Error: unknown option $1"; usage; exit 2 ;;
    esac
done

if [ -z "${myst}" ]; then
    log "Error: --myst <root> is required"
    usage
    exit 2
fi

args=(--myst "${myst}" --out "${data_dir}" --max_duration "${max_duration}" --min_words "${min_words}"
      --max_wer "${max_wer}" --subset_hours "${subset_hours}" --seed "${seed}")
[ -n "${librispeech}" ] && args+=(--librispeech "${librispeech}")
[ -n "${whisper_hyp}" ] && args+=(--whisper_hyp "${whisper_hyp}")
case "${keep_long_test}" in
    true) args+=(--keep_long_test) ;;
    false) ;;
    *) log "Error: --keep_long_test must be true or false, got ${keep_long_test}"; exit 2 ;;
esac

log "Preparing data in ${data_dir}: ${python} -m espnet_delta.bin.prepare_data ${args[*]}"
"${python}" -m espnet_delta.bin.prepare_data "${args[@]}"
log "Data preparation done: ${data_dir}"
