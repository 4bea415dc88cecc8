#!/usr/bin/env bash
# The shared stage engine of every espnet_delta recipe (see ../README.md, "Stages").
# A recipe's run.sh sets corpus options and calls this script; any option can be
# overridden on the command line: ./run.sh --stage 3 --stop_stage 4 --nj 4
set -euo pipefail

help_message() {
    cat <<HELP
Usage: $0 [options]
  --stage N --stop_stage M   run stages N..M (default 1..8)
  --myst DIR                 MyST root (data/{train,development,test}/...)
  --librispeech DIR          LibriSpeech root (adult speech), optional
  --mini_corpus_dir DIR      generate the synthetic mini corpus here in stage 1 and use it
  --tiny_upstream_dir DIR    write tiny random upstream checkpoints here in stage 1
  --whisper_hyp FILE         utt_id<TAB>hypothesis file for the MyST WER filter
  --subset_hours LIST        nested train subsets, e.g. 1,5,10
  --data_dir DIR --exp_dir DIR   outputs (default data, exp)
  --nj N  --ngpu N  --train_set NAME
HELP
}

# shellcheck source=utils.sh
. "$(dirname "${BASH_SOURCE[0]}")/utils.sh"

stage=1
stop_stage=8
myst=
librispeech=
mini_corpus_dir=
mini_corpus_scale=1.0
tiny_upstream_dir=
tiny_upstream_opts="--feature_extractor single --conv_channels 512"
whisper_hyp=
subset_hours=1,5,10
keep_long_test=false
data_dir=data
exp_dir=exp
nj=2
ngpu=0
train_set=train
valid_set=dev
test_sets="dev test"
upstreams="wavlm hubert wav2vec2"   # entries of --upstream_conf to fine-tune; the first is the fusion reference
upstream_conf=conf/upstreams.yaml   # name -> {upstream, path_or_url}
finetune_config=conf/finetune.yaml  # ESPnet config of CTC fine-tuning
adult_train_set=                    # e.g. libri_train: also fine-tune the reference on adult speech (stage 3) for merging (stage 7)
adult_valid_set=libri_dev
merge_lambdas="0.1 0.2 0.3"         # selective attention merge grid (stage 7)
merge_alphas="0.7 0.8 0.9"
fusion_config=conf/fusion.yaml       # ESPnet config of fusion training on cached features
fusion_systems=conf/fusion_systems.yaml
feats_dir=dump/feats
extract_fp16=false
token_type=char
decode_batch_size=8

parse_options "$@"

decode_device=cpu
[ "${ngpu}" -gt 0 ] && decode_device=cuda
mkdir -p "${exp_dir}/logs"
run_log=${exp_dir}/logs/asr.$(date '+%Y%m%dT%H%M%S').log
# every stage's output also goes to exp/logs/
exec > >(tee -a "${run_log}") 2>&1

# shellcheck source=path.sh
. "$(dirname "${BASH_SOURCE[0]}")/path.sh"
export python

if [ -n "${mini_corpus_dir}" ]; then
    myst=${mini_corpus_dir}/myst
    librispeech=${mini_corpus_dir}/librispeech
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    log "Stage 1: data preparation -> ${data_dir}"
    if [ -n "${mini_corpus_dir}" ]; then
        log "Generating the synthetic mini corpus in ${mini_corpus_dir} (skipped when complete)"
        ${python} -m espnet_delta.bin.make_mini_corpus --out "${mini_corpus_dir}" --scale "${mini_corpus_scale}" --nj "${nj}"
    fi
    if [ -n "${tiny_upstream_dir}" ]; then
        log "Writing tiny random upstreams to ${tiny_upstream_dir} (skipped when present)"
        # shellcheck disable=SC2086
        ${python} -m espnet_delta.bin.make_tiny_upstreams --out_dir "${tiny_upstream_dir}" ${tiny_upstream_opts}
    fi
    [ -n "${myst}" ] || { log "ERROR: --myst <root> (or --mini_corpus_dir) is required for stage 1"; exit 2; }
    data_args=(--myst "${myst}" --data_dir "${data_dir}" --subset_hours "${subset_hours}" --keep_long_test "${keep_long_test}")
    [ -n "${librispeech}" ] && data_args+=(--librispeech "${librispeech}")
    [ -n "${whisper_hyp}" ] && data_args+=(--whisper_hyp "${whisper_hyp}")
    "${repo_root}/local/data.sh" "${data_args[@]}"
fi

token_list=${data_dir}/token_list/${token_type}/tokens.txt
shape_dir=dump/shapes
sets_with_audio=$(echo "${train_set} ${valid_set} ${test_sets}" | tr ' ' '\n' | sort -u | tr '\n' ' ')
adult_sets=
[ -n "${adult_train_set}" ] && adult_sets="${adult_train_set} ${adult_valid_set}"
reference=${upstreams%% *}

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    log "Stage 2: ${token_type} token list -> ${token_list}; speech shape files -> ${shape_dir}"
    [ "${token_type}" = char ] || { log "ERROR: only --token_type char is implemented"; exit 2; }
    ${python} -m espnet_delta.recipe.make_tokens --text "${data_dir}/${train_set}/text" --out "${token_list}"
    # shellcheck disable=SC2086
    ${python} -m espnet_delta.recipe.make_shapes --data_dir "${data_dir}" --sets ${sets_with_audio} ${adult_sets} --out_dir "${shape_dir}"
fi

# render_espnet_config <base.yaml> <out.yaml> <train set> <valid set> [--set k=v ...]
render_espnet_config() {
    local base=$1 out=$2 tr=$3 va=$4
    shift 4
    ${python} -m espnet_delta.recipe.render_config --base "${base}" --out "${out}" \
        --set "token_type=${token_type}" --set "token_list=${token_list}" --set use_preprocessor=true \
        --set "train_data_path_and_name_and_type=[[${data_dir}/${tr}/wav.scp, speech, sound], [${data_dir}/${tr}/text, text, text]]" \
        --set "valid_data_path_and_name_and_type=[[${data_dir}/${va}/wav.scp, speech, sound], [${data_dir}/${va}/text, text, text]]" \
        --set "train_shape_file=[${shape_dir}/${tr}/speech_shape]" \
        --set "valid_shape_file=[${shape_dir}/${va}/speech_shape]" "$@"
}

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    log "Stage 3: CTC fine-tuning of ${upstreams} on ${train_set} -> ${exp_dir}/ft_<name>"
    jobs=()
    for name in ${upstreams}; do
        job=${exp_dir}/ft_${name}
        render_espnet_config "${finetune_config}" "${job}/train.yaml" "${train_set}" "${valid_set}" \
            --set-from "${upstream_conf}:${name}=frontend_conf.frontend_conf"
        jobs+=("${job}")
    done
    if [ -n "${adult_train_set}" ]; then
        job=${exp_dir}/ft_${reference}_adult
        render_espnet_config "${finetune_config}" "${job}/train.yaml" "${adult_train_set}" "${adult_valid_set}" \
            --set-from "${upstream_conf}:${reference}=frontend_conf.frontend_conf"
        jobs+=("${job}")
    fi
    run_parallel "${nj}" ${python} -m espnet_delta.recipe.train_jobs --ngpu "${ngpu}" -- "${jobs[@]}"
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    log "Stage 4: greedy CTC decoding + scoring of the fine-tuned models on ${test_sets}"
    tests=()
    for t in ${test_sets}; do tests+=(--test "${t}=${data_dir}/${t}/wav.scp"); done
    jobs=()
    for name in ${upstreams}; do jobs+=("${exp_dir}/ft_${name}"); done
    ${python} -m espnet_delta.bin.decode "${jobs[@]}" --model_name valid.wer_ctc.best.pth "${tests[@]}" \
        --input_type sound --batch_size "${decode_batch_size}" --ref_dir "${data_dir}" --device "${decode_device}"
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    log "Stage 5: extracting E_ft of the reference and E_pt, E_ft of the other models -> ${feats_dir}"
    others=${upstreams#* }
    extract_conf=${feats_dir}/extract.yaml
    # shellcheck disable=SC2086
    ${python} -m espnet_delta.recipe.make_extract_config --upstream_conf "${upstream_conf}" \
        --reference "${reference}" --others ${others} \
        --finetuned "${exp_dir}/ft_{name}/valid.wer_ctc.best.pth" --out "${extract_conf}"
    fp16_flag=()
    [ "${extract_fp16}" = true ] && fp16_flag=(--fp16)
    dirs=()
    for dset in ${sets_with_audio}; do dirs+=(--data_dir "${data_dir}/${dset}" --out_dir "${feats_dir}/${dset}"); done
    # shellcheck disable=SC2046
    run_parallel "${nj}" ${python} -m espnet_delta.bin.extract_features --config "${extract_conf}" \
        "${dirs[@]}" --nj "${nj}" "${fp16_flag[@]}" --shard -- $(seq 1 "${nj}")
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
    if [ -z "${adult_train_set}" ]; then
        log "Stage 7: skipped: merging needs an adult model (--adult_train_set libri_train, with --librispeech)"
    else
    log "Stage 7: merging ft_${reference} (child) with ft_${reference}_adult: SA grid on ${valid_set}, baselines"
    base=$(${python} -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))[sys.argv[2]].get('path_or_url') or '')" \
        "${upstream_conf}" "${reference}")
    [ -n "${base}" ] || { log "ERROR: stage 7 needs the pre-trained checkpoint of ${reference} as path_or_url in ${upstream_conf}"; exit 2; }
    # shellcheck disable=SC2086
    ${python} -m espnet_delta.recipe.merge_stage --child "${exp_dir}/ft_${reference}" --adult "${exp_dir}/ft_${reference}_adult" \
        --base "${base}" --data_dir "${data_dir}" --dev_set "${valid_set}" --test_sets ${test_sets} \
        --lambdas ${merge_lambdas} --alphas ${merge_alphas} --exp_dir "${exp_dir}" --batch_size "${decode_batch_size}" --device "${decode_device}"
    fi
fi

fusion_jobs=()
if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 6 ]; then
    mapfile -t fusion_jobs < <(${python} -m espnet_delta.recipe.fusion_jobs --systems "${fusion_systems}" \
        --base_config "${fusion_config}" --feats_dir "${feats_dir}" --data_dir "${data_dir}" \
        --train_set "${train_set}" --valid_set "${valid_set}" --token_type "${token_type}" \
        --token_list "${token_list}" --exp_dir "${exp_dir}")
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
    log "Stage 6: training ${#fusion_jobs[@]} fusion systems on cached features"
    run_parallel "${nj}" ${python} -m espnet_delta.recipe.train_jobs --ngpu "${ngpu}" -- "${fusion_jobs[@]}"
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
    log "Stage 8: decoding + scoring the fusion systems; RESULTS.md"
    tests=()
    for t in ${test_sets}; do tests+=(--test "${t}=${feats_dir}/${t}/feats.scp"); done
    run_parallel "${nj}" ${python} -m espnet_delta.bin.decode --model_name valid.wer_ctc.best.pth "${tests[@]}" \
        --input_type kaldi_ark --batch_size "${decode_batch_size}" --ref_dir "${data_dir}" --device "${decode_device}" -- "${fusion_jobs[@]}"
    scored=()
    for d in "${exp_dir}"/*/decode/*/score_wer; do [ -f "${d}/score.json" ] && scored+=("${d}"); done
    ${python} -m espnet_delta.bin.score --results_md RESULTS.md --scored "${scored[@]}" --baseline "ft_${reference}"
    log "Wrote RESULTS.md ($(grep -c '^|' RESULTS.md) table rows)"
fi

log "Successfully finished stages ${stage}..${stop_stage}"
