#!/usr/bin/env bash
# MyST (+ LibriSpeech) -> Kaldi data dirs, ESPnet's local/data.sh of this recipe (stage 1 of
# local/asr.sh calls it; run it alone from the recipe dir the same way):
#   local/data.sh [--myst <root>] [--librispeech <root>] [--whisper_hyp <file>] [--data_dir data]
# Corpus paths default to db.sh's MYST and LIBRISPEECH. Protocol filters: > --max_duration s,
# < --min_words words, Whisper WER > --max_wer (screening with --whisper_model writes a missing
# --whisper_hyp first); nested train_<h>h subsets. The logic is local/myst_data.sh of the checkout.
set -euo pipefail

recipe_dir=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
# shellcheck source=../path.sh
. "${recipe_dir}/path.sh"  # repo_root, python
# shellcheck source=../db.sh
. "${recipe_dir}/db.sh"
# shellcheck source=../../../../local/utils.sh
. "${repo_root}/local/utils.sh"
# shellcheck source=../../../../local/myst_data.sh
. "${repo_root}/local/myst_data.sh"  # options, myst_help, prepare_myst
myst=${MYST}
librispeech=${LIBRISPEECH}

help_message() {
    echo "Usage: $0 [options]   (MyST + LibriSpeech -> Kaldi data dirs; corpus paths from db.sh)"
    myst_help
}

parse_options "$@"
[ ${#positional[@]} -eq 0 ] || { help_message >&2; log "ERROR: unexpected arguments: ${positional[*]}"; exit 2; }
prepare_myst
