#!/usr/bin/env bash
# The embedded multilingual corpus -> Kaldi data dirs, ESPnet's local/data.sh of this recipe
# (stage 1 of local/asr.sh calls it; run it alone from the recipe dir the same way):
#   local/data.sh [--multilingual_corpus_dir downloads/mini_multilingual] [--data_dir data]
# Generates the corpus (six languages spoken by espeak-ng, deterministic; skipped when complete)
# and writes <data_dir>/{train,dev,test} (text: graphemes, text.phn: phonemes, utt2lang).
set -euo pipefail

recipe_dir=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
# shellcheck source=../path.sh
. "${recipe_dir}/path.sh"  # repo_root, python
# shellcheck source=../db.sh
. "${recipe_dir}/db.sh"
# shellcheck source=../../../../local/utils.sh
. "${repo_root}/local/utils.sh"

data_dir=data
nj=2
multilingual_corpus_dir=${MINI_MULTILINGUAL}
multilingual_corpus_scale=1.0
# The engine's generic options (local/asr.sh stage 1 passes them to every recipe): accepted, unused,
# since the corpus is generated whole, without long, short or misrecognised utterances to drop.
subset_hours=
subset_seed=0
max_duration=30
min_words=3
max_wer=0.5
keep_long_test=false

help_message() {
    cat <<HELP
Usage: $0 [options]   (generate the multilingual corpus and write its data dirs)
  --data_dir DIR                 output data dirs (default: ${data_dir})
  --nj N                         parallel espeak-ng/sox jobs (default: ${nj})
  --multilingual_corpus_dir DIR  where the corpus is generated (default: ${multilingual_corpus_dir})
  --multilingual_corpus_scale X  its size factor, 1.0: ~27 min (default: ${multilingual_corpus_scale})
Accepted from the stage engine's generic call and unused here (no filters, no subsets):
  --subset_hours LIST            (default: '${subset_hours}')
  --subset_seed N                (default: ${subset_seed})
  --max_duration SEC             (default: ${max_duration})
  --min_words N                  (default: ${min_words})
  --max_wer X                    (default: ${max_wer})
  --keep_long_test BOOL          (default: ${keep_long_test})
HELP
}

parse_options "$@"
[ ${#positional[@]} -eq 0 ] || { help_message >&2; log "ERROR: unexpected arguments: ${positional[*]}"; exit 2; }
[ -n "${multilingual_corpus_dir}" ] || { help_message >&2; log "ERROR: --multilingual_corpus_dir DIR is required (MINI_MULTILINGUAL in db.sh)"; exit 2; }

log "Generating the multilingual corpus in ${multilingual_corpus_dir} (skipped when complete) -> ${data_dir}/{train,dev,test}"
# shellcheck disable=SC2086  # ${python} may be a command with arguments
${python} -m espnet_delta.bin.make_multilingual_corpus --out "${multilingual_corpus_dir}" \
    --scale "${multilingual_corpus_scale}" --nj "${nj}" --data_dir "${data_dir}"
log "Data preparation done: ${data_dir}"
