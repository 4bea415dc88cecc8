# Helpers of the stage engine's bodies (local/asr.sh, sourced after its options): ask the job
# planner (espnet_delta.recipe.plan) for jobs, hand them to the back-end (run_parallel, run_job
# of local/utils.sh). They read the engine's variables.

# plan <what> [planner options]: the planner with the engine's options (plan_opts); it renders
# the train.yaml of jobs not trained yet, except under --print_only (then it only lists), after
# checking that every data file they read exists (--check_inputs: else one line naming the stage to rerun).
plan() {
    local what=$1
    shift
    local write=true cap=()
    [ "${print_only}" = true ] && write=false
    [ "${dry_run:-false}" != true ] || cap=(--dry_run_steps "${dry_run_steps}" --dry_run_max_batch "${dry_run_max_batch:-0}" --dry_run_max_bins "${dry_run_max_bins:-0}")  # every rendered training capped
    ${planner} "${what}" --write "${write}" --check_inputs true "${cap[@]}" "${plan_opts[@]}" "$@"
}

# plan_jobs <what> [options]: the array `jobs` := the planner's job dirs (a planner error stops the stage).
plan_jobs() {
    local out
    out=$(plan "$@")
    jobs=()
    [ -z "${out}" ] || mapfile -t jobs <<< "${out}"
}

# list_jobs <family>: the array `jobs` := the family's job dirs, nothing written (decoding stages).
list_jobs() {
    plan_jobs "$1" --write false
}

# train_jobs <job dir...>: ESPnet trainings, --nj at once, each on --ngpu GPUs (DDP when > 1).
train_jobs() {
    [ $# -gt 0 ] || return 0
    run_parallel --cmd "${train_job_cmd}" --name train --task_per_item "${nj}" "${train_prefix[@]}" \
        ${python} -m espnet_delta.recipe.train_jobs --ngpu "${ngpu}" --num_nodes "${num_nodes}" -- "$@"
}

# decode_group <decoder> <checkpoint> <unit> <input_type> <job dir...>: one decoding + scoring
# command over the jobs on every --test_sets set: greedy CTC (bin.decode) or beam search (bin.beam_decode).
decode_group() {
    local decoder=$1 model=$2 unit=$3 input=$4 tests=() t
    shift 4
    for t in ${test_sets}; do
        if [ "${input}" = kaldi_ark ]; then tests+=(--test "${t}=${feats_dir}/${t}/feats.scp"); else tests+=(--test "${t}=${data_dir}/${t}/wav.scp"); fi
    done
    if [ "${decoder}" = beam ]; then
        run_parallel --cmd "${inference_cmd}" --name decode "${inference_nj}" ${python} -m espnet_delta.bin.beam_decode \
            --model_name "${model}" --decode_config "${whisper_decode_config}" "${tests[@]}" \
            --ref_dir "${data_dir}" --device "${decode_device}" -- "$@"
    else
        run_parallel --cmd "${inference_cmd}" --name decode "${inference_nj}" ${python} -m espnet_delta.bin.decode \
            --model_name "${model}" --unit "${unit}" "${tests[@]}" --input_type "${input}" --batch_size "${decode_batch_size}" \
            --ref_dir "${data_dir}" --device "${decode_device}" -- "$@"
    fi
}

# decode_planned [planner options]: decode_group for every group the planner lists (default: stage 4's families).
decode_planned() {
    local out line groups=() group=()
    out=$(plan decode --write false "$@")
    [ -z "${out}" ] || mapfile -t groups <<< "${out}"
    for line in "${groups[@]}"; do
        read -r -a group <<< "${line}"
        decode_group "${group[@]}"
    done
}

# merge_models <log name> <child job> <adult job> <base checkpoint> [merge_stage options]: stage 8's
# merge grids (SA readings and baselines) chosen on --valid_set, then decoded on --test_sets.
merge_models() {
    local name=$1 child=$2 adult=$3 base=$4
    shift 4
    # shellcheck disable=SC2086  # word lists
    run_job --cmd "${inference_cmd}" --name "${name}" ${python} -m espnet_delta.recipe.merge_stage --child "${child}" \
        --adult "${adult}" --base "${base}" --data_dir "${data_dir}" --valid_set "${valid_set}" --test_sets ${test_sets} \
        --schedules ${merge_schedules} --lambdas ${merge_lambdas} --alphas ${merge_alphas} \
        --lerp_coefs ${merge_lerp_coefs} --ta_scales ${merge_ta_scales} --ties_topks ${merge_ties_topks} \
        --ties_scales ${merge_ties_scales} --exp_dir "${exp_dir}" --device "${decode_device}" "$@"
}

# write_results [score options]: RESULTS.md from every scored dir and every result fragment present
# (the fragments and their order: espnet_delta.recipe.names.FRAGMENTS); run_seeds adds --seed_runs.
write_results() {
    local out scored=() fragments=() args=()
    out=$(plan scored)
    [ -z "${out}" ] || mapfile -t scored <<< "${out}"
    out=$(plan fragments)
    [ -z "${out}" ] || mapfile -t fragments <<< "${out}"
    [ ${#scored[@]} -eq 0 ] || args+=(--scored "${scored[@]}")
    [ ${#fragments[@]} -eq 0 ] || args+=(--append_md "${fragments[@]}")
    ${python} -m espnet_delta.bin.score --results_md "${results_md:-RESULTS.md}" "${args[@]}" \
        --baseline "${results_baseline:-${ref_ft_dir##*/}}" --command "${run_command}" "$@"
    [ "${print_only}" = true ] || log "Wrote ${results_md:-RESULTS.md} ($(grep -c '^|' "${results_md:-RESULTS.md}") table rows)"
}

# fetch_models [fetch_models options]: espnet_delta.bin.fetch_models with the engine's model
# options: stage 0 downloads (--stages 0), a stage's check verifies (check_models).
fetch_models() {
    ${python} -m espnet_delta.bin.fetch_models --upstreams "${upstreams}" --adult_upstreams "${adult_upstreams}" \
        --adult_train_set "${adult_train_set}" --upstream_conf "${upstream_conf}" --finetune_config "${finetune_config}" \
        --probe_config "${probe_config}" --interface_systems "${interface_systems}" --sshr_systems "${sshr_systems}" \
        --whisper_config "${whisper_config}" --whisper_asr_model "${whisper_asr_model:-${tiny_whisper}}" \
        --screen_model "${whisper_model}" --screen_hyp "${whisper_hyp}" --screen_opts "${whisper_opts}" "$@"
}

# check_models <stage>: before any job of the stage, every hub model of stages <stage>..--stop_stage is
# mapped (--model_map) or cached, and the local files of <stage> exist; else one line per missing
# model and the run stops (exit 2), so stage 1 stops before the screening when stage 4 would fail.
check_models() {
    # shellcheck disable=SC2046  # one word per stage
    fetch_models --check true --stages $(seq "$1" "${stop_stage}") || exit 2
}

# Dry run (--dry_run true; docs/dry_run.md). dry_run_setup: the usage log every espnet_delta
# process appends to (one JSON line each, with $ESPNET_DELTA_STAGE) and, unless --model_map is
# given, the paper-topology checkpoints of --dry_run_models and their model map (written once).
dry_run_setup() {
    local usage_dir=${exp_dir}/dry_run  # (the engine exports ESPNET_DELTA_STAGE=setup before this)
    if [ "${print_only}" != true ]; then
        mkdir -p "${usage_dir}"
        ESPNET_DELTA_USAGE_LOG=$(cd "${usage_dir}" && pwd)/usage.jsonl
        export ESPNET_DELTA_USAGE_LOG
    fi
    if [ -z "${model_map}" ]; then
        model_map=${dry_run_dir}/models/${dry_run_models}/model_map.yaml
        if [ ! -f "${model_map}" ]; then
            log "Dry run: writing ${dry_run_models} paper-topology checkpoints and their map -> ${model_map}"
            ESPNET_DELTA_STAGE=0 ${python} -m espnet_delta.bin.make_paper_checkpoints --out_dir "${model_map%/*}" --width "${dry_run_models}"
        fi
        if [ "${print_only}" != true ]; then
            ESPNET_DELTA_MODEL_MAP=$(cd "${model_map%/*}" && pwd)/model_map.yaml
            export ESPNET_DELTA_MODEL_MAP
        fi
    fi
    if [ -n "${dry_run_corpus}" ]; then  # a MyST-layout + LibriSpeech-layout tree (skipped when complete)
        ESPNET_DELTA_STAGE=1 ${python} -m espnet_delta.bin.make_mini_corpus --out "${dry_run_corpus}" --scale "${dry_run_scale}" --nj "${nj}"
    fi
    if [ "${dry_run_max_tokens}" -gt 0 ]; then  # random Whisper decoders run to the maximum length: cap it
        whisper_opts="${whisper_opts} --max_tokens ${dry_run_max_tokens}"
        local capped=${dry_run_dir}/conf/$(basename "${whisper_decode_config}")
        ${python} -m espnet_delta.recipe.dry_run --decode_config "${whisper_decode_config}" --max_tokens "${dry_run_max_tokens}" --out "${capped}"
        whisper_decode_config=${capped}
    fi
    log "Dry run: trainings capped at ${dry_run_steps} optimizer steps, ${dry_run_utts} utterances per decoded set; all output in ${dry_run_dir}"
}

# dry_run_trim: stage 1 of a dry run keeps the first --dry_run_utts utterances of every decoded
# set (valid, test and adult valid sets), so decoding, scoring, merging and analysis see no more.
dry_run_trim() {
    # shellcheck disable=SC2086  # word lists
    ${python} -m espnet_delta.recipe.dry_run --data_dir "${data_dir}" --max_utts "${dry_run_utts}" \
        --sets ${valid_set} ${test_sets} ${adult_valid_set}
}

# dry_run_report: per-stage usage and the full run's device-hour arithmetic -> exp/dry_run/report.md.
dry_run_report() {
    ${python} -m espnet_delta.bin.dry_run_report --usage "${exp_dir}/dry_run/usage.jsonl" --exp_dir "${exp_dir}" \
        --data_dir "${data_dir}" --feats_dir "${feats_dir}" --out "${exp_dir}/dry_run/report.md" \
        --hours ${dry_run_hours:-none}  # word-split on purpose: SET=H items
}

# Seeds (--seeds, docs/recipes.md). seed_check: --seeds is a comma list of distinct seeds (non-negative
# integers) that holds --seed, or --seed N != 0 with --seeds 0 or N (one seed's run); the array
# seed_list := the seeds; --seed N != 0 reaches the planner, which writes ESPnet's seed: N into every config.
seed_check() {
    local k
    IFS=, read -r -a seed_list <<< "${seeds}"
    [[ "${seed}" =~ ^[0-9]+$ ]] || { log "ERROR: --seed must be a non-negative integer, got '${seed}'"; exit 2; }
    [ "${seed}" = 0 ] || [ "${seeds}" = 0 ] || [ "${seeds}" = "${seed}" ] || {
        log "ERROR: --seed ${seed} is one seed's run: give --seeds ${seed} (or leave it out), not --seeds ${seeds}"; exit 2; }
    [ "${seed}" = 0 ] || seed_list=("${seed}")
    for k in "${seed_list[@]}"; do
        [[ "${k}" =~ ^[0-9]+$ ]] || { log "ERROR: --seeds must be comma-separated non-negative integers, got '${seeds}'"; exit 2; }
    done
    [ ${#seed_list[@]} -gt 0 ] && [ "$(printf '%s\n' "${seed_list[@]}" | sort -u | wc -l)" -eq ${#seed_list[@]} ] || {
        log "ERROR: --seeds must list distinct seeds, got '${seeds}'"; exit 2; }
    [[ ",${seeds}," == *",${seed},"* ]] || [ "${seed}" != 0 ] || {
        log "ERROR: --seeds must hold 0, the run in --exp_dir itself (one run with another seed: --seed N), got '${seeds}'"; exit 2; }
    [ "${seed}" = 0 ] || plan_opts+=(--seed "${seed}")
}

# run_seeds: after this run's stages, the engine once more per other seed k of --seeds, for stages
# max(4, --stage)..--stop_stage (data, tokens and pre-training are shared) with --seed k, --exp_dir
# <exp_dir>/seed<k> and --feats_dir <feats_dir>/seed<k> (features of seed k's fine-tuned models); then
# RESULTS.md once more, with the section over the seeds (espnet_delta.scoring.seeds).
run_seeds() {
    local k from=$((stage > 4 ? stage : 4)) runs=("${seed}=${exp_dir}")
    [ "${stop_stage}" -ge "${from}" ] || return 0
    for k in "${seed_list[@]}"; do
        [ "${k}" != "${seed}" ] || continue
        log "Seed ${k}: stages ${from}..${stop_stage} -> ${seed_base[0]}/seed${k} (features ${seed_base[1]}/seed${k})"
        run_waiting bash "$0" "${engine_args[@]}" --seeds "${k}" --seed "${k}" --stage "${from}" \
            --exp_dir "${seed_base[0]}/seed${k}" --feats_dir "${seed_base[1]}/seed${k}"
        runs+=("${k}=${exp_dir}/seed${k}")
    done
    for k in 5 9 10; do  # RESULTS.md once more where a scoring stage ran
        if [ "${from}" -le "${k}" ] && [ "${stop_stage}" -ge "${k}" ]; then write_results --seed_runs "${runs[@]}"; return 0; fi
    done
}
