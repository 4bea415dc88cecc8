#!/usr/bin/env bash
# Tables 1-5 of arXiv 2601.20142 ("Mind the Shift") from a recipe directory: runs the recipe's
# run.sh once per training-data size (its own fine-tuning, features and fusion heads) and once
# on deltas of adult-speech models (Table 4), then writes the tables as "## Table N" sections
# of --out and --results_md, with the paper's published numbers beside them (--compare_paper).
# Run from a recipe dir, e.g. egs2/mini_myst/asr1/paper_tables.sh.
#   ../../../local/paper_tables.sh --tables "1 3" --sizes "full 10 5 1" --systems_dir conf/tuning/paper
# Stages: 1 data (run.sh stages 1-3, shared by all sizes, with the train_<h> subsets)
#         2 the main run of each size: run.sh stages 4-9 (full: exp/, dump/feats; subset h:
#           --train_set train_<h> --exp_dir exp/sizes/<h> --feats_dir dump/feats_<h>)
#         3 Table 4's adult-delta run (full size): stages 4-7 and 9 with --adult_upstreams,
#           --finetuned_ckpts and --feats_dir dump/feats_adult
#         4 the tables
# A run whose score dirs (and gate files) all exist is skipped; run.sh skips finished trainings,
# decodings and feature shards inside a run. A subset run's RESULTS.md is kept as
# exp/sizes/<h>/RESULTS.md; the recipe's RESULTS.md is left as it was.
set -euo pipefail

# shellcheck source=utils.sh
. "$(dirname "${BASH_SOURCE[0]}")/utils.sh"

stage=1                 # first stage (above)
stop_stage=4            # last stage
tables="1 2 3 4 5"      # tables of arXiv 2601.20142
sizes="full 10 5 1"     # 'full' = --train_set train; a number = the train_<h> subset of that many hours
run=./run.sh            # the recipe's run.sh
run_opts=               # more options of every run.sh call, e.g. "--nj 4"
systems_dir=conf/paper  # table<N>_systems.yaml and table4_adult_systems.yaml
subset_finetune_config= # fine-tuning config of the subset sizes ('' = the recipe's)
adult_train_set=libri_train          # Table 4: the adult set the delta models are fine-tuned on
adult_upstreams="hubert wav2vec2"    # Table 4: the delta models fine-tuned on it
test_set=test           # the set the tables show
gate_sets="dev test"    # Table 5: sets of the gate weights
child_label=MyST        # Table 4: names of the child and adult sets
adult_label=LibriSpeech
compare_paper=auto      # the paper's numbers: cells (value + difference per cell), once (the table once, not comparable), none; auto: cells when every size is one of the paper's
out=exp/paper_tables.md # lasting copy of the table sections
results_md=RESULTS.md   # the table sections are also replaced in this file ('' : not)
model_map=              # hub name -> local file YAML, passed to every run.sh (offline nodes; dry runs)
# Dry run (docs/dry_run.md): every run.sh call gets run.sh's --dry_run options (trainings capped,
# few utterances decoded, generated corpus and paper-topology models, all under --dry_run_dir);
# this script's own files go there too, and a subset of H hours becomes H x --dry_run_size_scale
# hours of the generated corpus (its whole train set is minutes), so every size still runs.
dry_run=false
dry_run_steps=2
dry_run_utts=4
dry_run_models=full
dry_run_dir=dry_run
dry_run_size_scale=0.001  # 10 h -> 36 s, 5 h -> 18 s, 1 h -> 3.6 s
dry_run_scale=0.05        # size factor of the generated corpus (run.sh's --dry_run_scale): its train set must hold the largest subset

help_message() {
    cat <<HELP
Usage: $0 [options]   (recipe values shown as defaults)
  --stage N --stop_stage M    1 data, 2 main run per size, 3 Table 4 adult-delta run, 4 tables (default: ${stage}..${stop_stage})
  --tables "N ..."            tables of arXiv 2601.20142 (default: '${tables}')
  --sizes "full H ..."        data sizes: full and train_<H> subsets in hours (default: '${sizes}')
  --run CMD                   the recipe's run.sh (default: ${run})
  --run_opts "OPTS"           more options of every run.sh call (default: '${run_opts}')
  --systems_dir DIR           table<N>_systems.yaml files (default: ${systems_dir})
  --subset_finetune_config F  fine-tuning config of the subset sizes, '' = the recipe's (default: '${subset_finetune_config}')
  --adult_train_set NAME      Table 4: adult fine-tuning set (default: ${adult_train_set})
  --adult_upstreams "A B"     Table 4: models fine-tuned on it (default: '${adult_upstreams}')
  --test_set NAME             the set the tables show (default: ${test_set})
  --gate_sets "A B"           Table 5 gate sets (default: '${gate_sets}')
  --child_label / --adult_label  Table 4 labels (default: ${child_label} / ${adult_label})
  --compare_paper MODE        auto|cells|once|none: the paper's numbers per cell or once below (default: ${compare_paper})
  --out FILE                  table sections, kept across recipe runs (default: ${out})
  --results_md FILE           also replace the sections here; '' = not (default: ${results_md})
  --model_map FILE            hub name -> local file, passed to every run.sh (default: '${model_map}')
  --dry_run BOOL              run.sh --dry_run true for every run, all output under --dry_run_dir (default: ${dry_run})
  --dry_run_steps N --dry_run_utts N --dry_run_models full|narrow --dry_run_dir DIR   as run.sh's
                              (default: ${dry_run_steps} ${dry_run_utts} ${dry_run_models} ${dry_run_dir})
  --dry_run_size_scale X      dry run: a subset of H hours uses H x X hours (default: ${dry_run_size_scale})
  --dry_run_scale X           dry run: size factor of the generated corpus, as run.sh's (default: ${dry_run_scale})
HELP
}

parse_options "$@"
[ ${#positional[@]} -eq 0 ] || { help_message >&2; log "ERROR: unexpected arguments: ${positional[*]}"; exit 2; }
# R: where this script finds what run.sh writes ('' or the dry run's dir); run.sh itself gets the
# unprefixed paths (--exp_dir exp/sizes/<h>) and puts them under --dry_run_dir on its own.
R=
dry=()
case "${dry_run}" in
    true)
        R=${dry_run_dir%/}/
        [[ "${out}" == /* ]] || out=${R}${out}
        [ -z "${results_md}" ] || [[ "${results_md}" == /* ]] || results_md=${R}${results_md}
        dry=(--dry_run true --dry_run_steps "${dry_run_steps}" --dry_run_utts "${dry_run_utts}"
             --dry_run_models "${dry_run_models}" --dry_run_dir "${dry_run_dir}" --dry_run_scale "${dry_run_scale}") ;;
    false) ;;
    *) log "ERROR: --dry_run must be true or false, got '${dry_run}'"; exit 2 ;;
esac
mkdir -p "${R}exp/logs"
exec > >(tee -a "${R}exp/logs/paper_tables.$(date '+%Y%m%dT%H%M%S').log") 2>&1
# shellcheck source=path.sh
. "$(dirname "${BASH_SOURCE[0]}")/path.sh"
py="${repo_root}/.venv/bin/python"
has() { [[ " ${tables} " == *" $1 "* ]]; }
read -r -a run_cmd <<< "${run}"
read -r -a extra <<< "${run_opts}"
extra=("${dry[@]}" "${extra[@]}")  # --run_opts last: what the user gives there wins
[ -z "${model_map}" ] || extra+=(--model_map "${model_map}")
t0=${SECONDS}

# per size: label, exp dir, feature dir, train set
declare -A label exp feats train size_of
subset_hours=()
for h in ${sizes}; do
    if [ "${h}" = full ]; then
        label[${h}]=full; exp[${h}]=exp; feats[${h}]=dump/feats; train[${h}]=train
    else
        label[${h}]="${h} h"; exp[${h}]=exp/sizes/${h}; feats[${h}]=dump/feats_${h}
        hours=${h}
        [ "${dry_run}" != true ] || hours=$(${py} -c "import sys; print(round(float(sys.argv[1]) * float(sys.argv[2]), 6))" "${h}" "${dry_run_size_scale}")
        train[${h}]=$(${py} -c "import sys; from espnet_delta.data.subsets import subset_name; print(subset_name(float(sys.argv[1])))" "${hours}")
        subset_hours+=("${hours}")
        size_of[${hours}]=${h}
    fi
done
full=${sizes%% *}
[ "${full}" = full ] || { log "ERROR: --sizes must start with 'full' (Tables 4 and 5 use the full training set)"; exit 2; }
size_args=()
for h in ${sizes}; do size_args+=(--size "${label[${h}]}=${R}${exp[${h}]}"); done

# missing <run> <tables...> -- <size>: what those tables still need from that size's run
missing() {
    local run_tag=$1 ts=() h
    shift
    while [ "$1" != -- ]; do ts+=("$1"); shift; done
    h=$2
    [ ${#ts[@]} -gt 0 ] || return 0
    ${py} -m espnet_delta.bin.paper_tables --log_level ERROR --list_missing --tables "${ts[@]}" \
        --size "${label[${h}]}=${R}${exp[${h}]}" --test_set "${test_set}" --gate_sets ${gate_sets} \
        | awk -F'\t' -v r="${run_tag}" '$2 == r' || true
}

# in_size_dir <h> <command...>: run a subset's run.sh, keeping the recipe's RESULTS.md
in_size_dir() {
    local h=$1
    shift
    keep_results_md "${R}RESULTS.md" "${R}${exp[${h}]}" "$@"
}

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    need=false
    [ -f "${R}data/train/text" ] || need=true
    for hours in "${subset_hours[@]}"; do [ -f "${R}data/${train[${size_of[${hours}]}]}/text" ] || need=true; done
    adult=()
    if has 4; then
        adult=(--adult_train_set "${adult_train_set}")  # stage 2 then writes its shape files too
        [ -f "${R}dump/shapes/${adult_train_set}/speech_shape" ] || need=true
    fi
    if [ "${need}" = true ]; then
        hours=$(IFS=,; echo "${subset_hours[*]}")
        log "Stage 1: data, token lists, pre-training (run.sh stages 1-3) with train subsets '${hours}' (hours)"
        "${run_cmd[@]}" --stage 1 --stop_stage 3 --subset_hours "${hours}" "${adult[@]}" "${extra[@]}"
    else
        log "Stage 1: skipped: the data dirs exist"
    fi
    for hours in "${subset_hours[@]}"; do  # the subset writer skips a size the training set cannot hold
        t=${train[${size_of[${hours}]}]}
        [ -f "${R}data/${t}/text" ] || {
            log "ERROR: size ${size_of[${hours}]} h: ${R}data/${t} was not written (${hours} h is more than ${R}data/train holds; see ${R}data/prep_summary.tsv)$([ "${dry_run}" != true ] || echo ": in a dry run, give a larger --dry_run_scale or a smaller --dry_run_size_scale")"
            exit 1; }
    done
    # run.sh's stage 2 writes shapes of --train_set only; the token list stays the full set's
    sets=()
    for hours in "${subset_hours[@]}"; do
        t=${train[${size_of[${hours}]}]}
        [ -f "${R}dump/shapes/${t}/speech_shape" ] || sets+=("${t}")
    done
    if [ ${#sets[@]} -gt 0 ]; then
        log "Stage 1: speech shape files of ${sets[*]} -> ${R}dump/shapes"
        ${python} -m espnet_delta.recipe.make_shapes --data_dir "${R}data" --sets "${sets[@]}" --out_dir "${R}dump/shapes"
    fi
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    for h in ${sizes}; do
        ts=()
        for n in ${tables}; do
            # Tables 1, 2 and 3 have a column per size; 4 (its child side) and 5 use the full set
            if [ "${h}" = full ] || [ "${n}" -le 3 ]; then ts+=("${n}"); fi
        done
        todo=$(missing main "${ts[@]}" -- "${h}")
        if [ ${#ts[@]} -eq 0 ] || [ -z "${todo}" ]; then
            log "Stage 2: size ${label[${h}]}: nothing to run (Tables ${ts[*]:-none} scored in ${exp[${h}]})"
            continue
        fi
        log "Stage 2: size ${label[${h}]} (${train[${h}]}, ${exp[${h}]}): $(echo "${todo}" | wc -l) score dirs/gate files missing for Tables ${ts[*]}"
        s=${SECONDS}
        mkdir -p "${R}${exp[${h}]}"
        systems=${R}${exp[${h}]}/paper_systems.yaml
        ${py} -m espnet_delta.bin.paper_tables --log_level WARNING --tables "${ts[@]}" --systems_dir "${systems_dir}" \
            --write_systems "${systems}"
        if [ "${h}" = full ]; then
            # stage 8 (merging) is not needed here: 4-7, then 9
            "${run_cmd[@]}" --stage 4 --stop_stage 7 --fusion_systems "${systems}" "${extra[@]}"
            "${run_cmd[@]}" --stage 9 --stop_stage 9 --fusion_systems "${systems}" "${extra[@]}"
        else
            ft=()
            [ -z "${subset_finetune_config}" ] || ft=(--finetune_config "${subset_finetune_config}")
            in_size_dir "${h}" "${run_cmd[@]}" --stage 4 --stop_stage 9 --train_set "${train[${h}]}" \
                --exp_dir "${exp[${h}]}" --feats_dir "${feats[${h}]}" --fusion_systems "${systems}" \
                --adult_train_set "" --adult_upstreams "" --probe_config "" --interface_systems "" --sshr_systems "" \
                "${ft[@]}" "${extra[@]}"
        fi
        log "Stage 2: size ${label[${h}]} done in $((SECONDS - s)) s"
    done
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ] && has 4; then
    todo=$(missing adult 4 -- full)
    if [ -z "${todo}" ]; then
        log "Stage 3: Table 4's adult-delta systems are scored: nothing to run"
    else
        log "Stage 3: Table 4: fine-tuning ${adult_upstreams} on ${adult_train_set}, their deltas -> dump/feats_adult, fusion"
        s=${SECONDS}
        ckpts=()
        # the adult models' checkpoints, named by the job planner (exp/ft_{name}_adult/<checkpoint>)
        names_sh=$(${py} -m espnet_delta.recipe.plan names --exp_dir "${R}exp")
        eval "${names_sh}"
        for name in ${adult_upstreams}; do ckpts+=("${name}=${adult_ckpt_pattern//\{name\}/${name}}"); done
        opts=(--adult_train_set "${adult_train_set}" --adult_upstreams "${adult_upstreams}" --finetuned_ckpts "${ckpts[*]}"
              --feats_dir dump/feats_adult --fusion_systems "${systems_dir}/table4_adult_systems.yaml")
        "${run_cmd[@]}" --stage 4 --stop_stage 7 "${opts[@]}" "${extra[@]}"
        "${run_cmd[@]}" --stage 9 --stop_stage 9 "${opts[@]}" "${extra[@]}"
        log "Stage 3: done in $((SECONDS - s)) s"
    fi
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    log "Stage 4: Tables ${tables} -> ${out}${results_md:+ and ${results_md}}"
    dest=(--out "${out}")
    [ -z "${results_md}" ] || dest+=(--results_md "${results_md}")
    # shellcheck disable=SC2086
    ${py} -m espnet_delta.bin.paper_tables --tables ${tables} "${size_args[@]}" --test_set "${test_set}" \
        --gate_sets ${gate_sets} --child_label "${child_label}" --adult_label "${adult_label}" \
        --compare_paper "${compare_paper}" "${dest[@]}"
fi
log "Finished stages ${stage}..${stop_stage} in $((SECONDS - t0)) s"
