#!/usr/bin/env bash
# The synthetic mini corpus -> Kaldi data dirs, ESPnet's local/data.sh of this recipe (stage 1 of
# local/asr.sh calls it; run it alone from the recipe dir the same way):
#   local/data.sh [--mini_corpus_dir downloads/mini_myst] [--mini_corpus_scale 1.0] [--data_dir data]
# Generates the corpus (espeak-ng + sox, deterministic; skipped when complete): a MyST-like part in
# <mini_corpus_dir>/myst, a LibriSpeech-like adult part in <mini_corpus_dir>/librispeech and the
# phone table <mini_corpus_dir>/phones.txt; then prepares it exactly as MyST is prepared
# (local/myst_data.sh of the checkout, shared with egs2/myst/asr1/local/data.sh).
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
mini_corpus_dir=${MINI_MYST}
mini_corpus_scale=1.0

help_message() {
    cat <<HELP
Usage: $0 [options]   (generate the mini corpus, then prepare it as MyST; --myst/--librispeech are set from it)
  --mini_corpus_dir DIR   where the corpus is generated (default: ${mini_corpus_dir})
  --mini_corpus_scale X   its size factor, 1.0: ~30 min (default: ${mini_corpus_scale})
HELP
    myst_help
}

parse_options "$@"
[ ${#positional[@]} -eq 0 ] || { help_message >&2; log "ERROR: unexpected arguments: ${positional[*]}"; exit 2; }
[ -n "${mini_corpus_dir}" ] || { help_message >&2; log "ERROR: --mini_corpus_dir DIR is required (MINI_MYST in db.sh)"; exit 2; }

log "Generating the synthetic mini corpus in ${mini_corpus_dir} (skipped when complete)"
# shellcheck disable=SC2086  # ${python} may be a command with arguments
${python} -m espnet_delta.bin.make_mini_corpus --out "${mini_corpus_dir}" --scale "${mini_corpus_scale}" --nj "${nj}"
myst=${mini_corpus_dir}/myst
librispeech=${mini_corpus_dir}/librispeech
prepare_myst
