#!/usr/bin/env bash
# Augmentation task vectors and their transfer to a second child corpus (arXiv 2501.08468; docs/recipes.md,
# "Augmentation task vectors"). Run from a recipe directory after its run.sh stages 1-5 (exp/ft_<reference>, the data
# dirs and token list; exp/ft_<reference>_adult for the SA row):
#   1 the second child corpus mini_kids -> data/<kids_prefix>{train,dev,test}; data/<train_set>_sp; shapes
#   2 theta_aug: the reference fine-tuned with augmentation (local/asr.sh stages 4-5, --exp_dir <exp>/aug)
#   3 the second corpus's baseline (local/asr.sh stages 4-5, --exp_dir <exp>/kids)
#   4 zero-shot transfer: baseline + lambda * (theta_aug - theta_orig), lambda chosen on kids dev
#   5 transfer then fine-tune: that model and (control) the baseline trained --further_epochs more on kids train
#   6 SA merge + augmentation: stage 8's merge with the augmented child model (skipped without the adult model)
#   7 <exp>/transfer_results.md (local/asr.sh's RESULTS.md appends it; the stage 2-3 runs keep the recipe's RESULTS.md
#     and write theirs to <exp>/aug/RESULTS.md and <exp>/kids/RESULTS.md)
set -euo pipefail

# shellcheck source=utils.sh
. "$(dirname "${BASH_SOURCE[0]}")/utils.sh"

stage=1
stop_stage=7
nj=2
data_dir=data
exp_dir=exp
shape_dir=dump/shapes
kids_corpus_dir=            # generate the mini_kids corpus here ('': data/<kids_prefix>{train,dev,test} must exist)
kids_corpus_scale=1.0
kids_prefix=kids_
train_set=train
valid_set=dev
test_sets="dev test"
upstreams=wavlm             # the first is the reference; only it is used
upstream_conf=conf/upstreams.yaml
finetune_config=conf/finetune.yaml
speed_perturb_factors="0.9 1.0 1.1"   # '' : no speed perturbation
specaug_config=conf/specaug.yaml      # YAML with specaug/specaug_conf laid over --finetune_config ('' : none)
kids_max_epoch=             # epochs of the second corpus's baseline ('': --finetune_config's)
transfer_scales="0.1 0.25 0.5 1.0"    # lambda grid (chosen on kids dev)
further_epochs=2            # "then fine-tune": epochs on kids train, constant learning rate
further_lr=0.001
merge_schedules="depth_power linear_exponent adult_power"
merge_lambdas="0.1 0.2 0.3"
merge_alphas="0.7 0.8 0.9"
decode_batch_size=8
ngpu=0                      # GPUs per training (local/asr.sh's --ngpu; stage 5 too)
gpu_inference=false         # decoding, the lambda grid and merging on a GPU
model_map=                  # hub name -> local file YAML for offline nodes (local/asr.sh's --model_map)
asr_opts=                   # more options of every local/asr.sh call
# Dry run (docs/dry_run.md): after run.sh --dry_run true with the same --dry_run_dir; trainings capped,
# --dry_run_utts utterances per decoded set, everything under --dry_run_dir, the dry run's model map
dry_run=false
dry_run_steps=2
dry_run_utts=4
dry_run_models=full
dry_run_dir=dry_run
dry_run_max_batch=0
dry_run_max_bins=0          # > 0: samples per batch of numel configs (theta_aug's 4,000,000 do not fit a 23 GB CPU)
dry_run_hours=seed001       # the transfer report's full-run hours (local/asr.sh's --dry_run_hours); add train_sp=H, kids_train=H

help_message() {
    cat <<HELP
Usage: $0 [options]   (run from a recipe directory after run.sh; --name value)
  --stage N --stop_stage M      stages N..M of 1..7 (default: ${stage}..${stop_stage})
  --nj N                        parallel jobs (default: ${nj})
  --data_dir DIR --exp_dir DIR --shape_dir DIR   (default: ${data_dir} ${exp_dir} ${shape_dir})
  --kids_corpus_dir DIR         generate the second child corpus here (default: '${kids_corpus_dir}')
  --kids_corpus_scale X         its size factor (default: ${kids_corpus_scale})
  --kids_prefix P               its data dirs: <data_dir>/<P>{train,dev,test} (default: ${kids_prefix})
  --train_set --valid_set --test_sets   the first corpus's sets (default: ${train_set} ${valid_set} '${test_sets}')
  --upstreams "A ..."           the first is the reference (default: '${upstreams}')
  --upstream_conf FILE --finetune_config FILE   as in local/asr.sh (default: ${upstream_conf} ${finetune_config})
  --speed_perturb_factors "F.." speed perturbation of the train set; '' for none (default: '${speed_perturb_factors}')
  --specaug_config FILE         SpecAugment laid over the fine-tuning config; '' for none (default: '${specaug_config}')
  --kids_max_epoch N            epochs of the second corpus's baseline; '' = the config's (default: '${kids_max_epoch}')
  --transfer_scales "X.."       lambda grid, chosen on kids dev (default: '${transfer_scales}')
  --further_epochs N --further_lr X   "then fine-tune" (default: ${further_epochs} ${further_lr})
  --merge_schedules --merge_lambdas --merge_alphas   SA grid of the SA merge + augmentation row, as local/asr.sh's
                                (default: '${merge_schedules}' '${merge_lambdas}' '${merge_alphas}')
  --decode_batch_size N         (default: ${decode_batch_size})
  --ngpu N                      GPUs per training, 0 = CPU (default: ${ngpu})
  --gpu_inference BOOL          decoding, lambda grid and merging on a GPU (default: ${gpu_inference})
  --model_map FILE              hub name -> local file, as local/asr.sh's (default: '${model_map}')
  --asr_opts "OPTS"             more options of every local/asr.sh call (default: '${asr_opts}')
  --dry_run BOOL                capped trainings, few utterances, all under --dry_run_dir, after
                                run.sh --dry_run true with the same --dry_run_dir (default: ${dry_run})
  --dry_run_steps N --dry_run_utts N --dry_run_models full|narrow --dry_run_dir DIR   as local/asr.sh's
                                (default: ${dry_run_steps} ${dry_run_utts} ${dry_run_models} ${dry_run_dir})
  --dry_run_max_batch N --dry_run_max_bins N   batch caps of every training (stage 5's too), as local/asr.sh's
                                (default: ${dry_run_max_batch} ${dry_run_max_bins})
  --dry_run_hours LIST          full-run hours of <exp_dir>/dry_run/transfer_report.md (default: '${dry_run_hours}')
HELP
}

parse_options "$@"
[ ${#positional[@]} -eq 0 ] || { help_message >&2; log "ERROR: unexpected arguments: ${positional[*]}"; exit 2; }
[ -n "${speed_perturb_factors}${specaug_config}" ] || { log "ERROR: no augmentation: set --speed_perturb_factors and/or --specaug_config"; exit 2; }
dry=() cap=()
case "${dry_run}" in
    true)  # the paths of run.sh --dry_run true: under --dry_run_dir, made absolute so local/asr.sh keeps them
        mkdir -p "${dry_run_dir}"
        dry_run_dir=$(cd "${dry_run_dir}" && pwd)
        for opt in data_dir exp_dir shape_dir kids_corpus_dir; do
            [ -z "${!opt}" ] || [[ "${!opt}" == /* ]] || printf -v "${opt}" '%s' "${dry_run_dir}/${!opt}"
        done
        model_map=${model_map:-${dry_run_dir}/models/${dry_run_models}/model_map.yaml}
        # the planner's caps: every local/asr.sh call's trainings and stage 5's
        cap=(--dry_run_steps "${dry_run_steps}" --dry_run_max_batch "${dry_run_max_batch}" --dry_run_max_bins "${dry_run_max_bins}")
        dry=(--dry_run true --dry_run_utts "${dry_run_utts}" --dry_run_models "${dry_run_models}"
             --dry_run_dir "${dry_run_dir}" "${cap[@]}") ;;
    false) ;;
    *) log "ERROR: --dry_run must be true or false, got '${dry_run}'"; exit 2 ;;
esac

mkdir -p "${exp_dir}/logs"
exec > >(tee -a "${exp_dir}/logs/transfer.$(date '+%Y%m%dT%H%M%S').log") 2>&1

# shellcheck source=path.sh
. "$(dirname "${BASH_SOURCE[0]}")/path.sh"
if [ -f cmd.sh ]; then
    # shellcheck source=/dev/null
    . ./cmd.sh
else
    train_cmd=local; decode_cmd=local
fi

if [ -n "${model_map}" ]; then  # every loader of every job reads it (espnet_delta/ssl/hub.py)
    if [ ! -f "${model_map}" ] && [ "${dry_run}" = true ]; then
        log "Dry run: writing ${dry_run_models} paper-topology checkpoints and their map -> ${model_map}"
        ${python} -m espnet_delta.bin.make_paper_checkpoints --out_dir "${model_map%/*}" --width "${dry_run_models}"
    fi
    [ -f "${model_map}" ] || { log "ERROR: --model_map ${model_map}: no such file"; exit 2; }
    ESPNET_DELTA_MODEL_MAP=$(cd "$(dirname "${model_map}")" && pwd)/$(basename "${model_map}")
    export ESPNET_DELTA_MODEL_MAP
fi
if [ "${dry_run}" = true ]; then  # this script's own stages' usage (its local/asr.sh runs keep their own logs)
    mkdir -p "${exp_dir}/dry_run"
    ESPNET_DELTA_USAGE_LOG=$(cd "${exp_dir}/dry_run" && pwd)/transfer_usage.jsonl
    export ESPNET_DELTA_USAGE_LOG
fi
device=cpu
[ "${gpu_inference}" != true ] || { device=cuda; decode_cmd=${cuda_cmd:-${decode_cmd}}; }
train_job_cmd=${train_cmd}
[ "${ngpu}" -gt 0 ] && train_job_cmd="${cuda_cmd:-${train_cmd}} --gpu ${ngpu}"
read -r -a more_asr_opts <<< "${asr_opts}"
ref=${upstreams%% *}
planner="${python_run} -m espnet_delta.recipe.plan"
# job dirs, checkpoint names and result fragments of the job planner (ft_ckpt, transfer_md ...)
names_sh=$(${planner} names --exp_dir "${exp_dir}" --upstreams "${ref}" --upstream_conf "${upstream_conf}")
eval "${names_sh}"
aug_exp=${exp_dir}/aug
kids_exp=${exp_dir}/kids
kids_train=${kids_prefix}train kids_dev=${kids_prefix}dev kids_test=${kids_prefix}test
aug_train=${train_set}
[ -z "${speed_perturb_factors}" ] || aug_train=${train_set}_sp
token_list=${data_dir}/token_list/char/tokens.txt
aug_note=
[ -z "${speed_perturb_factors}" ] || aug_note="speed perturbation ${speed_perturb_factors}"
[ -z "${specaug_config}" ] || aug_note="${aug_note:+${aug_note}, }SpecAugment (${specaug_config})"
asr=("${repo_root}/local/asr.sh" --data_dir "${data_dir}" --shape_dir "${shape_dir}" --upstreams "${ref}"
     --upstream_conf "${upstream_conf}" --nj "${nj}" --decode_batch_size "${decode_batch_size}"
     --ngpu "${ngpu}" --gpu_inference "${gpu_inference}" --model_map "${model_map}" "${dry[@]}" "${more_asr_opts[@]}")

# a local/asr.sh run on another exp dir writes its own RESULTS.md: keep_results_md (local/utils.sh)
# keeps the recipe's (the dry run's) as it was and puts that one into <exp dir>/RESULTS.md
recipe_md=RESULTS.md
[ "${dry_run}" != true ] || recipe_md=${dry_run_dir}/RESULTS.md

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    export ESPNET_DELTA_STAGE="transfer 1"  # the dry run's usage label
    log "Stage 1: second child corpus -> ${data_dir}/${kids_prefix}*; speed perturbation -> ${data_dir}/${aug_train}; shapes"
    if [ -n "${kids_corpus_dir}" ]; then
        ${python} -m espnet_delta.bin.make_mini_kids --out "${kids_corpus_dir}" --scale "${kids_corpus_scale}" \
            --nj "${nj}" --data_dir "${data_dir}" --prefix "${kids_prefix}"
    fi
    sets="${kids_train} ${kids_dev} ${kids_test}"
    if [ -n "${speed_perturb_factors}" ]; then
        # shellcheck disable=SC2086
        ${python} -m espnet_delta.bin.speed_perturb --src "${data_dir}/${train_set}" --out "${data_dir}/${aug_train}" \
            --factors ${speed_perturb_factors}
        sets="${sets} ${aug_train}"
    fi
    if [ "${dry_run}" = true ]; then  # as run.sh --dry_run true's stage 1: few utterances per decoded set
        ${python} -m espnet_delta.recipe.dry_run --data_dir "${data_dir}" --max_utts "${dry_run_utts}" --sets "${kids_dev}" "${kids_test}"
    fi
    # shellcheck disable=SC2086
    ${python} -m espnet_delta.recipe.make_shapes --data_dir "${data_dir}" --sets ${sets} --out_dir "${shape_dir}"
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    export ESPNET_DELTA_STAGE="transfer 2"  # the dry run's usage label
    log "Stage 2: theta_aug: ft_${ref} on ${aug_train} (${aug_note}) -> ${aug_exp}/ft_${ref}"
    config=${finetune_config}
    if [ -n "${specaug_config}" ]; then
        config=${aug_exp}/conf/finetune_aug.yaml
        ${python} -m espnet_delta.recipe.render_config --base "${finetune_config}" --out "${config}" \
            --set-from "${specaug_config}:specaug=specaug" --set-from "${specaug_config}:specaug_conf=specaug_conf"
    fi
    # shellcheck disable=SC2086
    keep_results_md "${recipe_md}" "${aug_exp}" "${asr[@]}" --stage 4 --stop_stage 5 --exp_dir "${aug_exp}" --finetune_config "${config}" \
        --train_set "${aug_train}" --valid_set "${valid_set}" --test_sets "${test_sets}"
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    export ESPNET_DELTA_STAGE="transfer 3"  # the dry run's usage label
    log "Stage 3: the second corpus's baseline: ft_${ref} on ${kids_train} -> ${kids_exp}/ft_${ref}"
    config=${finetune_config}
    if [ -n "${kids_max_epoch}" ]; then
        config=${kids_exp}/conf/finetune_kids.yaml
        ${python} -m espnet_delta.recipe.render_config --base "${finetune_config}" --out "${config}" --set "max_epoch=${kids_max_epoch}"
    fi
    keep_results_md "${recipe_md}" "${kids_exp}" "${asr[@]}" --stage 4 --stop_stage 5 --exp_dir "${kids_exp}" --finetune_config "${config}" \
        --train_set "${kids_train}" --valid_set "${kids_dev}" --test_sets "${kids_dev} ${kids_test}"
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    export ESPNET_DELTA_STAGE="transfer 4"  # the dry run's usage label
    log "Stage 4: zero-shot transfer ${kids_exp}/ft_${ref} + lambda * (${aug_exp}/ft_${ref} - ${exp_dir}/ft_${ref}), lambda in ${transfer_scales}"
    # shellcheck disable=SC2086
    run_job --cmd "${decode_cmd}" --name transfer ${python} -m espnet_delta.recipe.transfer_stage grid \
        --target "${kids_exp}/ft_${ref}" --aug "${aug_exp}/ft_${ref}" --orig "${exp_dir}/ft_${ref}" \
        --scales ${transfer_scales} --data_dir "${data_dir}" --valid_set "${kids_dev}" --test_sets "${kids_test}" \
        --exp_dir "${kids_exp}" --batch_size "${decode_batch_size}" --device "${device}"
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    export ESPNET_DELTA_STAGE="transfer 5"  # the dry run's usage label
    lam=$(sed -n 's/^# best: lambda=//p' "${kids_exp}/transfer_grid.tsv")
    [ -n "${lam}" ] || { log "ERROR: no chosen lambda in ${kids_exp}/transfer_grid.tsv (run stage 4)"; exit 1; }
    log "Stage 5: ${further_epochs} more epochs on ${kids_train} (lr ${further_lr}) of transfer_s${lam} and (control) ft_${ref}"
    # the job planner's transfer family renders both (a trained job's config is kept)
    out=$(${planner} transfer "${cap[@]}" --exp_dir "${kids_exp}" --upstreams "${ref}" --upstream_conf "${upstream_conf}" \
        --finetune_config "${finetune_config}" --data_dir "${data_dir}" --shape_dir "${shape_dir}" --token_list "${token_list}" \
        --train_set "${kids_train}" --valid_set "${kids_dev}" --transfer_scale "${lam}" \
        --further_epochs "${further_epochs}" --further_lr "${further_lr}")
    mapfile -t jobs <<< "${out}"
    run_parallel --cmd "${train_job_cmd}" --name train --task_per_item "${nj}" ${python} -m espnet_delta.recipe.train_jobs \
        --ngpu "${ngpu}" -- "${jobs[@]}"
    run_parallel --cmd "${decode_cmd}" --name decode "${nj}" ${python} -m espnet_delta.bin.decode \
        --model_name "${ft_ckpt}" --test "${kids_dev}=${data_dir}/${kids_dev}/wav.scp" \
        --test "${kids_test}=${data_dir}/${kids_test}/wav.scp" --input_type sound --batch_size "${decode_batch_size}" \
        --ref_dir "${data_dir}" --device "${device}" -- "${jobs[@]}"
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
    export ESPNET_DELTA_STAGE="transfer 6"  # the dry run's usage label
    adult=${ref_adult_dir}
    if [ ! -f "${adult}/${ft_ckpt}" ]; then
        log "Stage 6: skipped: SA merge + augmentation needs ${adult} (run.sh with --adult_train_set)"
    else
        log "Stage 6: SA merge of ${aug_exp}/ft_${ref} (augmented child) with ${adult}, grid on ${valid_set} -> ${aug_exp}/merge_sa_*"
        [ -n "${reference_ckpt}" ] || { log "ERROR: SA merge needs the pre-trained checkpoint of ${ref} as path_or_url in ${upstream_conf}"; exit 2; }
        # shellcheck disable=SC2086
        run_job --cmd "${decode_cmd}" --name merge ${python} -m espnet_delta.recipe.merge_stage --child "${aug_exp}/ft_${ref}" \
            --adult "${adult}" --base "${reference_ckpt}" --data_dir "${data_dir}" --valid_set "${valid_set}" --test_sets ${test_sets} \
            --methods sa --schedules ${merge_schedules} --lambdas ${merge_lambdas} --alphas ${merge_alphas} \
            --exp_dir "${aug_exp}" --batch_size "${decode_batch_size}" --device "${device}"
    fi
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
    export ESPNET_DELTA_STAGE="transfer 7"  # the dry run's usage label
    log "Stage 7: ${transfer_md}"
    kids_corpus="the second child corpus"  # its headings: the recipe's corpus (egs2/<corpus>/asr1), the generated or prepared one
    [ -z "${kids_corpus_dir}" ] || kids_corpus=mini_kids
    # shellcheck disable=SC2086
    ${python} -m espnet_delta.recipe.transfer_stage results --exp_dir "${exp_dir}" --reference "${ref}" \
        --corpus "$(basename "$(dirname "$(pwd)")")" --kids_corpus "${kids_corpus}" \
        --train_set "${train_set}" --kids_train_set "${kids_train}" --sets ${valid_set} ${test_sets##* } \
        --kids_sets "${kids_dev}" "${kids_test}" --aug_note "${aug_note}" \
        --further_note "${further_epochs} epochs, constant learning rate ${further_lr}" \
        --out "${transfer_md}"
fi

if [ "${dry_run}" = true ]; then  # one report over the theta_aug and baseline runs and this script's stages
    # shellcheck disable=SC2086  # SET=H items
    ${python} -m espnet_delta.bin.dry_run_report --usage "${aug_exp}/dry_run/usage.jsonl" "${kids_exp}/dry_run/usage.jsonl" \
        "${ESPNET_DELTA_USAGE_LOG}" --exp_dir "${exp_dir}" --data_dir "${data_dir}" \
        --out "${exp_dir}/dry_run/transfer_report.md" --hours ${dry_run_hours} > /dev/null
    log "Dry run: usage per stage and the full run's arithmetic -> ${exp_dir}/dry_run/transfer_report.md"
fi
log "Successfully finished transfer stages ${stage}..${stop_stage}"
