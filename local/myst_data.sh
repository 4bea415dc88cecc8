# MyST (+ LibriSpeech) preparation with Whisper screening, shared by the recipes built on MyST
# (egs2/myst/asr1/local/data.sh, egs2/mini_myst/asr1/local/data.sh: ESPnet's shared-helper way,
# one copy of the logic). Sourced after path.sh and utils.sh; it declares the options below (the
# generic ones the stage engine passes to every recipe's local/data.sh, then the MyST ones),
# myst_help (their --help lines) and prepare_myst, which the recipe calls after parse_options.
# prepare_myst writes <data_dir>/{train,dev,test,libri_*,train_<h>h}/ and <data_dir>/prep_summary.tsv.
# Whisper screening: with --whisper_model M and a --whisper_hyp file that does not exist yet, MyST is
# first prepared without the WER filter (pass 1: train, dev, test with every other filter), those
# sets are transcribed with M into --whisper_hyp (resumable; --whisper_nj shards as jobs of
# --whisper_cmd, logs in ${exp_dir:-exp}/logs/whisper.*.log), then the preparation runs again with
# the WER filter. An existing --whisper_hyp file is used as it is. Under the engine's print-only mode
# (print_only=true: ${python} and run_parallel print their command lines) it prints the steps, runs none.

# Generic options (local/asr.sh stage 1 passes them to every recipe)
data_dir=data
nj=2
subset_hours=1,5,10
subset_seed=0
max_duration=30
min_words=3
max_wer=0.5
keep_long_test=false
# MyST, LibriSpeech, Whisper screening
myst=
librispeech=
whisper_hyp=
whisper_model=
whisper_device=cpu
whisper_nj=1
whisper_cmd=local
whisper_opts=

myst_help() {
    cat <<HELP
  --data_dir DIR          output data dirs (default: ${data_dir})
  --nj N                  jobs of corpus generation, where a recipe generates its corpus (default: ${nj})
  --subset_hours LIST     nested train subsets train_<h>h, e.g. 1,5,10; '' none (default: '${subset_hours}')
  --subset_seed N         seed of the subset shuffle (default: ${subset_seed})
  --max_duration SEC      drop longer utterances (default: ${max_duration})
  --min_words N           drop MyST utterances with fewer words (default: ${min_words})
  --max_wer X             drop MyST utterances with a higher Whisper WER (default: ${max_wer})
  --keep_long_test BOOL   keep long MyST test utterances (default: ${keep_long_test})
  --myst DIR              MyST root holding data/{train,development,test}/ (default: '${myst}')
  --librispeech DIR       LibriSpeech root, adult speech -> libri_{train,dev,test} (default: '${librispeech}')
  --whisper_hyp FILE      utt_id<TAB>hypothesis file for the Whisper WER filter (default: '${whisper_hyp}')
  --whisper_model M       Whisper (hub name or file) that writes a missing hyp file; '' none (default: '${whisper_model}')
  --whisper_device DEV    cpu | cuda (default: ${whisper_device})
  --whisper_nj N          transcription shards, run as parallel jobs (default: ${whisper_nj})
  --whisper_cmd SPEC      job back-end of the shards, as cmd.sh's (default: '${whisper_cmd}')
  --whisper_opts STR      more transcribe_whisper options, e.g. '--batch_size 32' (default: '${whisper_opts}')
HELP
}

# prepare_myst: MyST (+ LibriSpeech) -> Kaldi dirs under ${data_dir}, screening first when asked.
prepare_myst() {
    [ -n "${myst}" ] || { help_message >&2; log "ERROR: --myst <root> is required (MYST in db.sh)"; exit 2; }
    local args=(--myst "${myst}" --out "${data_dir}" --max_duration "${max_duration}" --min_words "${min_words}"
                --max_wer "${max_wer}" --subset_hours "${subset_hours}" --seed "${subset_seed}")
    case "${keep_long_test}" in
        true) args+=(--keep_long_test) ;;
        false) ;;
        *) log "ERROR: --keep_long_test must be true or false, got ${keep_long_test}"; exit 2 ;;
    esac
    if [ -n "${whisper_model}" ] && [ ! -f "${whisper_hyp}" ]; then
        [ -n "${whisper_hyp}" ] || { log "ERROR: --whisper_model needs --whisper_hyp FILE (where the transcripts go)"; exit 2; }
        log "Whisper screening: ${whisper_hyp} does not exist; pass 1: MyST without the WER filter (no subsets, no LibriSpeech)"
        # shellcheck disable=SC2086  # ${python} may be a command with arguments
        ${python} -m espnet_delta.bin.prepare_data "${args[@]}" --subset_hours ""
        local scps=() dset
        for dset in train dev test; do  # the MyST sets the protocol screens (MYST_SPLITS); print-only: all three
            if [ -f "${data_dir}/${dset}/wav.scp" ] || [ "${print_only:-false}" = true ]; then
                scps+=(--wav_scp "${data_dir}/${dset}/wav.scp")
            fi
        done
        log "Transcribing ${scps[*]} with Whisper ${whisper_model} on ${whisper_device} (${whisper_nj} shard(s), '${whisper_cmd}') -> ${whisper_hyp}"
        # shellcheck disable=SC2046,SC2086  # word lists; run_parallel appends the shard number after --shard
        run_parallel --cmd "${whisper_cmd}" --name whisper "${whisper_nj}" ${python} -m espnet_delta.bin.transcribe_whisper \
            --model "${whisper_model}" "${scps[@]}" --out "${whisper_hyp}" --device "${whisper_device}" \
            --nj "${whisper_nj}" ${whisper_opts} --shard -- $(seq 1 "${whisper_nj}")
        [ "${print_only:-false}" = true ] || [ -f "${whisper_hyp}" ] ||  # print-only: the shards only printed their lines
            { log "ERROR: the transcription shards finished but ${whisper_hyp} was not written"; exit 1; }
        log "Whisper screening: pass 2: preparation with the WER filter (--max_wer ${max_wer})"
    fi
    [ -n "${librispeech}" ] && args+=(--librispeech "${librispeech}")
    [ -n "${whisper_hyp}" ] && args+=(--whisper_hyp "${whisper_hyp}")
    log "Preparing data in ${data_dir}: ${python} -m espnet_delta.bin.prepare_data ${args[*]}"
    # shellcheck disable=SC2086  # ${python} may be a command with arguments
    ${python} -m espnet_delta.bin.prepare_data "${args[@]}"
    log "Data preparation done: ${data_dir}"
}
