#!/usr/bin/env bash
# Data preparation (stage 1 of local/asr.sh): MyST (+ LibriSpeech) -> Kaldi data dirs under
# --data_dir, as ESPnet recipes' local/data.sh. Also usable alone from a recipe directory:
#   local/data.sh --myst <root> [--librispeech <root>] [--whisper_hyp <file>] [--data_dir data]
# Writes <data_dir>/{train,dev,test,libri_*,train_*}/ and <data_dir>/prep_summary.tsv.
# Whisper screening: with --whisper_model M and a --whisper_hyp file that does not exist yet, MyST is
# first prepared without the WER filter (pass 1: train, dev, test with every other filter), those
# sets are transcribed with M into --whisper_hyp (resumable; --whisper_nj shards as jobs of
# --whisper_cmd, logs in ${exp_dir:-exp}/logs/whisper.*.log), then the preparation runs again with
# the WER filter. An existing --whisper_hyp file is used as it is.
set -euo pipefail

# shellcheck source=utils.sh
. "$(dirname "${BASH_SOURCE[0]}")/utils.sh"

python=${python:-python3}  # the interpreter command (local/asr.sh exports its own)
myst=
librispeech=
whisper_hyp=
whisper_model=
whisper_device=cpu
whisper_nj=1
whisper_cmd=local
whisper_opts=
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
  --whisper_model M       Whisper (hub name or file) that writes a missing hyp file; '' none (default: '${whisper_model}')
  --whisper_device DEV    cpu | cuda (default: ${whisper_device})
  --whisper_nj N          transcription shards, run as parallel jobs (default: ${whisper_nj})
  --whisper_cmd SPEC      job back-end of the shards, as cmd.sh's (default: '${whisper_cmd}')
  --whisper_opts STR      more transcribe_whisper options, e.g. '--batch_size 32' (default: '${whisper_opts}')
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
case "${keep_long_test}" in
    true) args+=(--keep_long_test) ;;
    false) ;;
    *) log "ERROR: --keep_long_test must be true or false, got ${keep_long_test}"; exit 2 ;;
esac

if [ -n "${whisper_model}" ] && [ ! -f "${whisper_hyp}" ]; then
    [ -n "${whisper_hyp}" ] || { log "ERROR: --whisper_model needs --whisper_hyp FILE (where the transcripts go)"; exit 2; }
    log "Whisper screening: ${whisper_hyp} does not exist; pass 1: MyST without the WER filter (no subsets, no LibriSpeech)"
    # shellcheck disable=SC2086
    ${python} -m espnet_delta.bin.prepare_data "${args[@]}" --subset_hours ""
    scps=()
    for dset in train dev test; do  # the MyST sets the protocol screens (MYST_SPLITS)
        [ -f "${data_dir}/${dset}/wav.scp" ] && scps+=(--wav_scp "${data_dir}/${dset}/wav.scp")
    done
    log "Transcribing ${scps[*]} with Whisper ${whisper_model} on ${whisper_device} (${whisper_nj} shard(s), '${whisper_cmd}') -> ${whisper_hyp}"
    # shellcheck disable=SC2046,SC2086  # word lists; run_parallel appends the shard number after --shard
    run_parallel --cmd "${whisper_cmd}" --name whisper "${whisper_nj}" ${python} -m espnet_delta.bin.transcribe_whisper \
        --model "${whisper_model}" "${scps[@]}" --out "${whisper_hyp}" --device "${whisper_device}" \
        --nj "${whisper_nj}" ${whisper_opts} --shard -- $(seq 1 "${whisper_nj}")
    [ -f "${whisper_hyp}" ] || { log "ERROR: the transcription shards finished but ${whisper_hyp} was not written"; exit 1; }
    log "Whisper screening: pass 2: preparation with the WER filter (--max_wer ${max_wer})"
fi
[ -n "${librispeech}" ] && args+=(--librispeech "${librispeech}")
[ -n "${whisper_hyp}" ] && args+=(--whisper_hyp "${whisper_hyp}")

log "Preparing data in ${data_dir}: ${python} -m espnet_delta.bin.prepare_data ${args[*]}"
# shellcheck disable=SC2086  # ${python} may be a command with arguments
${python} -m espnet_delta.bin.prepare_data "${args[@]}"
log "Data preparation done: ${data_dir}"
