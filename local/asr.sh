#!/usr/bin/env bash
# The shared stage engine of every espnet_delta recipe (see docs/recipes.md).
# A recipe's run.sh sets corpus options and calls this script; any option can be
# overridden on the command line: ./run.sh --stage 4 --stop_stage 5 --nj 4
# (./run.sh --print_only true prints every command line the stages would run, and runs none). The stage
# bodies ask the job planner (espnet_delta.recipe.plan) for their jobs; local/engine.sh hands them to the back-end.
set -euo pipefail

# shellcheck source=utils.sh
. "$(dirname "${BASH_SOURCE[0]}")/utils.sh"

# Options: every variable assigned here is an option (--name value); all are listed in help_message.
# General
stage=1                 # first stage to run
stop_stage=10           # last stage to run
nj=2                    # trainings at once (and the CPU jobs of stages 1 and 3)
ngpu=0                  # GPUs per training (0: CPU; > 1: DDP, one process per GPU)
num_nodes=1             # nodes per training (> 1: DDP across nodes; slurm back-end only)
inference_nj=           # extraction / decoding jobs ('': --nj, or one per visible GPU with --gpu_inference true)
gpu_inference=false     # true: extraction, decoding, merging and analysis on GPUs (one GPU per job)
cmd_backend=            # where jobs run: local | slurm ('': cmd.sh's default); cmd.sh sets train_cmd, cuda_cmd, decode_cmd
data_dir=data           # Kaldi-style data dirs (stage 1)
exp_dir=exp             # trained models, decodings, logs
print_only=false        # true: print each command line the stages would run ([print_only] prefix) and run none
model_map=              # YAML hub name -> local file, read by every loader ($ESPNET_DELTA_MODEL_MAP; offline clusters)
seeds=0                 # training seeds, comma-separated (0,1,2): stages 4.. once per seed, seed k != 0 in <exp_dir>/seed<k>
seed=0                  # ESPnet's seed: of this run's trainings (0: the configs as they are); --seeds sets it per seed
# Dry run (docs/dry_run.md): every stage at a token size, all output under --dry_run_dir, usage measured
dry_run=false           # true: trainings capped at --dry_run_steps, --dry_run_utts per decoded set, generated corpus + models
dry_run_steps=2         # optimizer steps per training (max_epoch 1, num_iters_per_epoch = steps x accum_grad)
dry_run_utts=4          # utterances kept per decoded set (valid, test and adult valid sets; stage 1)
dry_run_models=full     # full: the paper topologies; narrow: same depth and layer indices, small width (tests)
dry_run_dir=dry_run     # everything the dry run writes: data/ dump/ exp/ corpus/ models/<width>/ RESULTS.md
dry_run_scale=0.05      # size factor of the dry run's mini corpus (without --myst)
dry_run_max_tokens=0    # > 0: at most this many tokens per utterance from the Whisper screening and beam search (0: as configured)
dry_run_max_batch=0     # > 0: at most this many utterances per batch of a batch_size config (a CPU that cannot hold Whisper-small's 16 x 30 s)
dry_run_max_bins=0      # > 0: at most this many input samples per batch of a numel/length config (WavLM Large's 4,000,000 with augmentation)
dry_run_hours=seed001   # the report's full-run hours per set: SET=H items, seed001 (MyST, seed 001), none
# Corpora and data preparation (stage 1)
myst=                   # MyST root: data/{train,development,test}/<student>/<session>/
librispeech=            # LibriSpeech root (adult speech), optional
mini_corpus_dir=        # generate the synthetic mini corpus here and use it as --myst/--librispeech
mini_corpus_scale=1.0   # size factor of the mini corpus (1.0: ~30 min)
multilingual_corpus_dir=     # generate the embedded multilingual corpus here and prepare data/{train,dev,test} from it
multilingual_corpus_scale=1.0   # its size factor (1.0: ~27 min, 6 languages)
tiny_upstream_dir=      # write tiny random upstream checkpoints here
tiny_upstream_opts="--feature_extractor single --conv_channels 512"  # options of make_tiny_upstreams
whisper_hyp=            # utt_id<TAB>hypothesis file: enables the Whisper WER filter
whisper_model=          # Whisper that writes a missing --whisper_hyp first (hub name, e.g. large-v2, or checkpoint file; '' none)
whisper_opts=           # more options of espnet_delta.bin.transcribe_whisper, e.g. "--batch_size 32 --download_root DIR"
max_duration=30         # drop utterances longer than this (seconds)
min_words=3             # drop MyST utterances with fewer words after cleaning
max_wer=0.5             # drop MyST utterances whose Whisper WER exceeds this
keep_long_test=false    # true: do not apply --max_duration to the MyST test set
subset_hours=1,5,10     # nested train subsets train_<h>h ('' for none)
subset_seed=0           # seed of the subset shuffle
# Data sets
train_set=train
valid_set=dev
test_sets="dev test"
speed_perturb_factors=  # e.g. "0.9 1.0 1.1" (ESPnet's option): stage 2 writes <train_set>_sp, the child fine-tunings' (ft_<upstream>) training set
fusion_speed_perturb=false  # true: the fusion heads (stage 7) train on the cached features of <train_set>_sp too (stage 6 extracts it)
adult_train_set=        # e.g. libri_train: also fine-tune the reference on adult speech (stage 4) for merging (stage 8)
adult_valid_set=libri_dev
adult_upstreams=        # e.g. "hubert wav2vec2": also fine-tune these on --adult_train_set into ft_<name>_adult (stage 4)
# SSL pre-training (stage 3)
pretrained_upstream_dir=     # pre-train the --tiny_upstream_dir checkpoints into this dir ('' skips stage 3)
pretrain_sets=train          # data sets whose audio is used, untranscribed
pretrain_archs="wavlm hubert wav2vec2"   # architectures to pre-train
pretrain_opts=               # more options of pretrain_upstreams, e.g. "--epochs 6 3 --num_clusters 64"
pretrain_nj=                 # stage 3's processes, one architecture each (default: --nj)
# Tokens and shapes (stage 2)
token_type=char         # only char is implemented
phone_text=             # '<utt> <phones...>' table of the corpus: <set>/text.phn + a phone token list
                        # ('': the mini corpus's phones.txt with --mini_corpus_dir, else no phone targets)
shape_dir=dump/shapes   # speech_shape files per set
# SSL models and CTC fine-tuning (stages 4-5)
upstreams="wavlm hubert wav2vec2"   # entries of --upstream_conf to fine-tune; the first is the fusion reference
upstream_conf=conf/upstreams.yaml   # name -> {upstream, path_or_url}
finetune_config=conf/finetune.yaml  # ESPnet config of CTC fine-tuning ('' skips the ft_<name> models)
probe_config=           # ESPnet config of a frozen-upstream CTC probe (frontend: ssl_interface), trained in stage 4
                        # on the reference's pre-trained and random (--tiny_upstream_dir) checkpoints ('' skips)
interface_config=conf/interface.yaml  # ESPnet config of the layer-interface systems (frozen upstream -> interface -> downstream -> CTC)
interface_systems=      # YAML of layer-interface systems trained in stage 4 and scored in stage 5 ('' skips)
interface_units="char phn"  # char: WER/CER; phn: PER (needs phone targets, --phone_text)
sshr_config=conf/sshr.yaml  # ESPnet config of the SSHR systems (frontend: sshr, encoder: sshr)
sshr_systems=           # YAML of SSHR systems fine-tuning the reference, trained in stage 4, scored per language in stage 5 ('' skips)
sshr_units="char phn"   # char: CER per language; phn: PER per language (needs phone targets)
langid_probe=false      # true: stage 5 also probes every layer of the frozen reference for the language (needs utt2lang)
results_baseline=       # system RESULTS.md tests the others against (default: ft_<reference>)
# Feature extraction (stage 6)
feats_dir=dump/feats    # cached E_ft / E_delta matrices per set
finetuned_ckpts=        # e.g. "hubert=exp/ft_hubert_adult/valid.wer_ctc.best.pth": extract these models from
                        # these fine-tuned ESPnet model files instead of ft_<name>/valid.wer_ctc.best.pth
feats_num_shards=       # feature-cache shards, one extraction task each, --inference_nj at once ('': --inference_nj)
feats_fp16=false        # true: STORE the features in float16 (computed in float32, rounded once)
extract_autocast=none   # COMPUTE precision of the upstream forwards: none (float32) | bf16 | fp16 (GPU)
# Fusion training (stage 7)
fusion_config=conf/fusion.yaml           # ESPnet config of fusion training on cached features
fusion_systems=conf/fusion_systems.yaml  # the fusion systems to train
# Model merging (stage 8)
merge_finetune_config=    # e.g. conf/finetune_merge.yaml: stage 8 merges ft_<ref>_merge (child) and ft_<ref>_adult fine-tuned
                          # with it, a regime with small task vectors; '' merges ft_<ref> and ft_<ref>_adult (--finetune_config)
merge_schedules="depth_power linear_exponent adult_power"  # SA schedule readings searched on --valid_set: formulas
                              # (each over lambdas x alphas) and/or schedule YAML files (layer groups, explicit c_i)
merge_lambdas="0.1 0.2 0.3"   # selective attention merge grid, searched on --valid_set
merge_alphas="0.7 0.8 0.9"
merge_lerp_coefs="0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9"  # baseline grids, as large as SA's lambda x alpha grid
merge_ta_scales="0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1.0"
merge_ties_topks="10 20 50"   # crossed with merge_ties_scales
merge_ties_scales="0.5 1.0 1.5"
# Whisper fine-tuning through ESPnet (opt-in; stages 1, 4, 5, 8)
whisper_config=         # ESPnet config of Whisper fine-tuning (encoder/decoder whisper_file): ft_whisper on --train_set
                        # (+ ft_whisper_adult on --adult_train_set, merged in stage 8); '' skips the Whisper path
whisper_asr_model=      # hub name or checkpoint file fine-tuned by --whisper_config ('' = --tiny_whisper, else the config's)
tiny_whisper=           # with --whisper_config: write a tiny random Whisper checkpoint here in stage 1 ('' none)
whisper_decode_config=conf/whisper/decode.yaml  # beam-search options (ESPnet Speech2Text) of stages 5 and 8
# Decoding (stages 5, 8, 9)
decode_batch_size=8     # utterances per greedy-CTC batch (fine-tuned models use frontend s3prl_exact: batched = alone)
# Analysis (stage 10)
analysis_max_utts=64        # dev utterances sampled for layer-wise CCA/PWCCA
analysis_max_frames=20000   # frames pooled over them

help_message() {
    cat <<HELP
Usage: $0 [options]   (--name value or --name=value; recipe values shown as defaults)

General
  --stage N --stop_stage M  run stages N..M (default: ${stage}..${stop_stage})
  --nj N                    trainings at once, and CPU jobs of stages 1 and 3 (default: ${nj})
  --ngpu N                  GPUs per training, 0 = CPU, > 1 = DDP (default: ${ngpu})
  --num_nodes M             nodes per training, DDP across them, slurm only (default: ${num_nodes})
  --inference_nj N          extraction/decoding jobs; '' = --nj, or one per visible GPU for GPU inference (default: '${inference_nj}')
  --gpu_inference BOOL      extraction, decoding, merging, analysis on GPUs, one per job (default: ${gpu_inference})
  --cmd_backend NAME        local | slurm: where jobs run, see cmd.sh (default: '${cmd_backend}')
  --data_dir DIR            data dirs (default: ${data_dir})
  --exp_dir DIR             models, decodings, logs (default: ${exp_dir})
  --print_only BOOL         print the command lines of the stages ([print_only] prefix), run nothing (default: ${print_only})
  --model_map FILE          YAML of hub name -> local file (wavlm_large: /models/WavLM-Large.pt), read by every loader (default: '${model_map}')
                            (stage 0, ./run.sh --stage 0 --stop_stage 0, instead downloads the hub models into the caches)
  --seeds LIST              training seeds, e.g. 0,1,2: stages 4-10 once per seed (default: ${seeds})
                            (seed 0 in --exp_dir, seed k in <exp_dir>/seed<k> with features in <feats_dir>/seed<k>;
                            stages 1-3 shared; RESULTS.md adds mean/std over the seeds and pooled p-values)
  --seed N                  ESPnet's seed: of this run's trainings; != 0: its RESULTS.md goes into --exp_dir (default: ${seed})

Dry run (docs/dry_run.md: every stage at a token size, nothing written outside --dry_run_dir)
  --dry_run BOOL            trainings capped, few utterances decoded, generated corpus and models (default: ${dry_run})
  --dry_run_steps N         optimizer steps per training (default: ${dry_run_steps})
  --dry_run_utts N          utterances kept per decoded set (default: ${dry_run_utts})
  --dry_run_models W        full (paper topologies) | narrow (small width, tests) (default: ${dry_run_models})
  --dry_run_dir DIR         where everything goes; report: DIR/exp/dry_run/report.md (default: ${dry_run_dir})
  --dry_run_scale X         size factor of the generated mini corpus (default: ${dry_run_scale})
  --dry_run_max_tokens N    > 0: tokens per utterance of the Whisper screening and beam search; 0: as configured (default: ${dry_run_max_tokens})
  --dry_run_max_batch N     > 0: utterances per batch at most (batch_size configs); the report scales the rate (default: ${dry_run_max_batch})
  --dry_run_max_bins N      > 0: input samples per batch at most (numel/length configs); the report scales the rate (default: ${dry_run_max_bins})
  --dry_run_hours LIST      the report's full-run hours: "train=133 dev=21", seed001 or none (default: ${dry_run_hours})

Corpora and data preparation (stage 1)
  --myst DIR                MyST root (default: '${myst}')
  --librispeech DIR         LibriSpeech root, adult speech, optional (default: '${librispeech}')
  --mini_corpus_dir DIR     generate the synthetic mini corpus here and use it (default: '${mini_corpus_dir}')
  --mini_corpus_scale X     mini corpus size factor (default: ${mini_corpus_scale})
  --multilingual_corpus_dir DIR  generate the multilingual corpus here and prepare data from it (default: '${multilingual_corpus_dir}')
  --multilingual_corpus_scale X  its size factor (default: ${multilingual_corpus_scale})
  --tiny_upstream_dir DIR   write tiny random upstream checkpoints here (default: '${tiny_upstream_dir}')
  --tiny_upstream_opts STR  options of make_tiny_upstreams (default: '${tiny_upstream_opts}')
  --whisper_hyp FILE        utt_id<TAB>hypothesis file for the Whisper WER filter (default: '${whisper_hyp}')
  --whisper_model M         Whisper (hub name or file) writing a missing --whisper_hyp (default: '${whisper_model}')
                            (transcribes train/dev/test on the inference jobs, then filters; '' never transcribes)
  --whisper_opts STR        more options of transcribe_whisper (default: '${whisper_opts}')
  --max_duration SEC        drop longer utterances (default: ${max_duration})
  --min_words N             drop MyST utterances with fewer words (default: ${min_words})
  --max_wer X               drop MyST utterances with a higher Whisper WER (default: ${max_wer})
  --keep_long_test BOOL     keep long MyST test utterances (default: ${keep_long_test})
  --subset_hours LIST       nested train subsets, e.g. 1,5,10 (default: '${subset_hours}')
  --subset_seed N           seed of the subset shuffle (default: ${subset_seed})

Data sets
  --train_set NAME          (default: ${train_set})
  --valid_set NAME          model selection and the merge grid (default: ${valid_set})
  --test_sets "A B"         decoded and scored sets (default: '${test_sets}')
  --speed_perturb_factors "F.."   stage 2: <train_set>_sp, the training set of ft_<upstream> (default: '${speed_perturb_factors}')
  --fusion_speed_perturb BOOL     stage 7's fusion heads train on <train_set>_sp (default: '${fusion_speed_perturb}');
                            stage 6 caches it too; needs --speed_perturb_factors
  --adult_train_set NAME    fine-tune the reference on it too, for merging (default: '${adult_train_set}')
  --adult_valid_set NAME    (default: ${adult_valid_set})
  --adult_upstreams "A B"   also fine-tune these on --adult_train_set into ft_<name>_adult (default: '${adult_upstreams}')

Tokens and shapes (stage 2)
  --token_type TYPE         char only (default: ${token_type})
  --shape_dir DIR           speech_shape files (default: ${shape_dir})
  --phone_text FILE         '<utt> <phones>' table: <set>/text.phn + phone tokens (default: '${phone_text}')
                            ('': the mini corpus's phones.txt with --mini_corpus_dir, else no phone targets)

SSL pre-training (stage 3)
  --pretrained_upstream_dir DIR  pre-train the tiny upstreams into DIR; '' skips (default: '${pretrained_upstream_dir}')
  --pretrain_sets "A B"     untranscribed audio for pre-training (default: '${pretrain_sets}')
  --pretrain_archs "A B"    architectures to pre-train (default: '${pretrain_archs}')
  --pretrain_opts STR       options of pretrain_upstreams (default: '${pretrain_opts}')
  --pretrain_nj N           stage 3's processes, one architecture each; '' = --nj (default: '${pretrain_nj}');
                            more than the cores (3 architectures on 2) keeps every core busy to the end

SSL models and CTC fine-tuning (stages 4-5)
  --upstreams "A B C"       models to fine-tune; the first is the fusion reference (default: '${upstreams}')
  --upstream_conf FILE      name -> {upstream, path_or_url} (default: ${upstream_conf})
  --finetune_config FILE    ESPnet config of CTC fine-tuning; '' skips ft_<name> (default: '${finetune_config}')
  --probe_config FILE       frozen-upstream probe on the pre-trained vs random reference; '' skips (default: '${probe_config}')
  --interface_config FILE   ESPnet config of the layer-interface systems (default: ${interface_config})
  --interface_systems FILE  layer-interface systems, trained in stage 4, scored in stage 5; '' skips (default: '${interface_systems}')
                            (last, weighted_sum, hconv, concat, pca, cls_pooling, delta fusion + hconv; chars and phones)
  --interface_units "A B"   char (WER/CER) and/or phn (PER) (default: '${interface_units}')
  --sshr_config FILE        ESPnet config of the SSHR systems (default: ${sshr_config})
  --sshr_systems FILE       SSHR systems trained in stage 4, scored per language in stage 5; '' skips (default: '${sshr_systems}')
                            (language frame, layer drop/replace, Cross-CTC)
  --sshr_units "A B"        char (CER) and/or phn (PER) (default: '${sshr_units}')
  --langid_probe BOOL       stage 5: language-ID probe per layer of the frozen reference (default: ${langid_probe})
  --results_baseline NAME   RESULTS.md p-values against this system; '' = ft_<reference> (default: '${results_baseline}')

Feature extraction (stage 6)
  --feats_dir DIR           cached features (default: ${feats_dir})
  --finetuned_ckpts "N=P"   fine-tuned ESPnet model file per model instead of ft_<name>/valid.wer_ctc.best.pth (default: '${finetuned_ckpts}')
                            e.g. hubert=exp/ft_hubert_adult/valid.wer_ctc.best.pth; other checkpoints need another --feats_dir
  --feats_num_shards N      feature-cache shards, one task each; '' = --inference_nj (default: '${feats_num_shards}')
  --feats_fp16 BOOL         store the features in float16, 2 bytes per value (default: ${feats_fp16})
  --extract_autocast TYPE   upstream forwards under autocast: none|bf16|fp16 (default: ${extract_autocast})

Fusion training (stage 7)
  --fusion_config FILE      ESPnet config of fusion training (default: ${fusion_config})
  --fusion_systems FILE     systems to train (default: ${fusion_systems})

Model merging (stage 8, needs --adult_train_set)
  --merge_finetune_config FILE  stage 4 fine-tunes the merged pair with it (default: '${merge_finetune_config}'):
                            ft_<ref>_merge (child, decoded in stage 5) and ft_<ref>_adult; '' merges ft_<ref> and ft_<ref>_adult
  --merge_schedules "A B"   SA schedule readings searched on dev (default: '${merge_schedules}'):
                            formulas (each over lambda x alpha; adult_power: lambda^(alpha^i) is the adult's weight)
                            and/or schedule YAML files (one grid point each)
  --merge_lambdas "X Y"     selective attention merge lambda grid (default: '${merge_lambdas}')
  --merge_alphas "X Y"      selective attention merge alpha grid (default: '${merge_alphas}')
  --merge_lerp_coefs "X Y"  lerp grid, weight of the child model (default: '${merge_lerp_coefs}')
  --merge_ta_scales "X Y"   task-arithmetic grid, scale of both task vectors (default: '${merge_ta_scales}')
  --merge_ties_topks "X Y"  TIES grid: percent of each task vector kept (default: '${merge_ties_topks}')
  --merge_ties_scales "X Y" TIES grid: scale of the merged task vector (default: '${merge_ties_scales}')

Whisper through ESPnet (opt-in: stage 1 tiny checkpoint, 4 fine-tuning, 5 beam search, 8 merging)
  --whisper_config FILE     ESPnet config of Whisper fine-tuning -> ft_whisper (+ ft_whisper_adult); '' skips (default: '${whisper_config}')
  --whisper_asr_model M     hub name or checkpoint fine-tuned; '' = --tiny_whisper, else the config's (default: '${whisper_asr_model}')
  --tiny_whisper FILE       write a tiny random Whisper checkpoint here in stage 1 (default: '${tiny_whisper}')
  --whisper_decode_config FILE  beam-search options of the Whisper models (default: ${whisper_decode_config})

Decoding (stages 5, 8, 9)
  --decode_batch_size N     utterances per greedy-CTC batch (default: ${decode_batch_size})

Analysis (stage 10)
  --analysis_max_utts N     dev utterances sampled for layer-wise CCA/PWCCA (default: ${analysis_max_utts})
  --analysis_max_frames N   frames pooled over them (default: ${analysis_max_frames})

Stages: 0 model fetch (--stage 0 --stop_stage 0; not run by default), 1 data preparation, 2 token lists (characters; phones when the corpus has them) + shapes,
3 SSL pre-training of the tiny upstreams, 4 CTC fine-tuning (+ probe, layer-interface systems),
5 decoding + scoring of the fine-tuned models (+ probe, layer-interface systems), 6 feature extraction,
7 fusion training, 8 model merging, 9 decoding + scoring of the fusion systems, RESULTS.md,
10 analysis (CCA/PWCCA per layer, MoE gates, WER chart; figures linked from RESULTS.md)
HELP
}

parse_options "$@"
run_command="$0 $*"   # the script's own arguments (parse_options shifts only its copy)
engine_args=("$@")    # --seeds runs the engine again with them, per seed (run_seeds, local/engine.sh)
[ ${#positional[@]} -eq 0 ] || { help_message >&2; log "ERROR: unexpected arguments: ${positional[*]}"; exit 2; }

case "${print_only}" in true|false) ;; *) log "ERROR: --print_only must be true or false, got '${print_only}'"; exit 2 ;; esac
export print_only  # local/path.sh, local/utils.sh and local/data.sh read it
results_md=RESULTS.md
seed_base=("${exp_dir}" "${feats_dir}")  # --seeds: <exp_dir>/seed<k>, <feats_dir>/seed<k>, as given (before --dry_run_dir)
[ "${seed}" = 0 ] || results_md=${exp_dir}/RESULTS.md  # one seed's run: the recipe's RESULTS.md sums the seeds
case "${dry_run}" in
    true)  # every path the run writes goes under --dry_run_dir; the corpus is generated there unless --myst is given
        for opt in data_dir exp_dir shape_dir feats_dir whisper_hyp mini_corpus_dir multilingual_corpus_dir \
                   tiny_upstream_dir pretrained_upstream_dir tiny_whisper results_md; do
            [ -z "${!opt}" ] || [[ "${!opt}" == /* ]] || printf -v "${opt}" '%s' "${dry_run_dir}/${!opt}"
        done
        dry_run_corpus=
        if [ -z "${myst}${mini_corpus_dir}${multilingual_corpus_dir}" ]; then  # dry_run_setup generates it
            dry_run_corpus=${dry_run_dir}/corpus
            myst=${dry_run_corpus}/myst; librispeech=${librispeech:-${dry_run_corpus}/librispeech}
            phone_text=${phone_text:-${dry_run_corpus}/phones.txt}
        fi
        mini_corpus_scale=${dry_run_scale}
        max_wer=1000000  # the screening runs on random weights: its WER filter would drop every utterance
        case "${dry_run_models}" in full|narrow) ;; *) log "ERROR: --dry_run_models must be full or narrow"; exit 2 ;; esac ;;
    false) ;;
    *) log "ERROR: --dry_run must be true or false, got '${dry_run}'"; exit 2 ;;
esac
if [ -n "${model_map}" ]; then  # every loader of every job reads the map (espnet_delta/ssl/hub.py)
    [ -f "${model_map}" ] || { log "ERROR: --model_map ${model_map}: no such file"; exit 2; }
    ESPNET_DELTA_MODEL_MAP=$(cd "$(dirname "${model_map}")" && pwd)/$(basename "${model_map}")
    export ESPNET_DELTA_MODEL_MAP
fi
if [ "${print_only}" != true ]; then
    mkdir -p "${exp_dir}/logs"
    run_log=${exp_dir}/logs/asr.$(date '+%Y%m%dT%H%M%S').log
    run_lock "${exp_dir}" "${run_log}" "${run_command}"  # one run per exp_dir: a second one stops here (exit 2)
    # every stage's output also goes to exp/logs/ (tee ignores Ctrl-C: it logs the engine's last line, then ends with it)
    exec > >(trap '' INT TERM; exec tee -a "${run_log}") 2>&1
fi
trap_interrupts  # Ctrl-C / SIGTERM: stop the stage's jobs, one line naming the stage, exit 130 / 143 (local/utils.sh)
if [ -n "${whisper_hyp}" ] && [ -z "${whisper_model}" ] && [ ! -f "${whisper_hyp}" ]; then  # nothing writes it
    log "--whisper_model '': no Whisper screening and no ${whisper_hyp}: the Whisper WER filter is off"
    whisper_hyp=
fi

# shellcheck source=path.sh
. "$(dirname "${BASH_SOURCE[0]}")/path.sh"  # repo_root, python (print_cmd under --print_only), python_run
export python
planner="${python_run} -m espnet_delta.recipe.plan"  # the job planner (runs under --print_only too, writing nothing)
# shellcheck source=engine.sh
. "$(dirname "${BASH_SOURCE[0]}")/engine.sh"  # plan, train_jobs, decode_group, merge_models, write_results, fetch_models, check_models
export ESPNET_DELTA_STAGE=setup  # the usage log's stage of the processes before stage 0/1 (each stage exports its number)
[ "${dry_run}" != true ] || dry_run_setup  # the usage log, the paper-topology models and their --model_map

# Job back-end (ESPnet's cmd.sh convention): train_cmd, cuda_cmd, decode_cmd
if [ -f cmd.sh ]; then
    # shellcheck source=/dev/null
    . ./cmd.sh
else
    train_cmd=local; cuda_cmd="local --gpu 1"; decode_cmd=local
fi
# trainings: --ngpu GPUs each (DDP when > 1), on --num_nodes nodes under srun (slurm)
train_job_cmd=${train_cmd}
[ "${ngpu}" -gt 0 ] && train_job_cmd="${cuda_cmd} --gpu ${ngpu}"
train_prefix=()
if [ "${num_nodes}" -gt 1 ]; then
    case "${train_job_cmd}" in slurm*) ;; *) log "ERROR: --num_nodes ${num_nodes} needs the slurm back-end (cmd.sh)"; exit 2 ;; esac
    train_job_cmd="${train_job_cmd} --num_nodes ${num_nodes}"
    train_prefix=(srun --ntasks-per-node=1)
fi
# extraction, decoding, merging, analysis: one GPU per job with --gpu_inference true
decode_device=cpu
inference_cmd=${decode_cmd}
if [ "${gpu_inference}" = true ]; then
    decode_device=cuda
    inference_cmd=${cuda_cmd}
fi
if [ -z "${inference_nj}" ]; then
    inference_nj=${nj}
    if [ "${gpu_inference}" = true ] && [[ "${inference_cmd}" == local* ]]; then
        inference_nj=$(count_gpus)  # one job per GPU
        [ "${inference_nj}" -gt 0 ] || { log "ERROR: --gpu_inference true but no GPU is visible (CUDA_VISIBLE_DEVICES / nvidia-smi)"; exit 2; }
    fi
fi
feats_num_shards=${feats_num_shards:-${inference_nj}}
log "Jobs (cmd.sh): trainings ${nj} at once on '${train_job_cmd}'; inference ${inference_nj} jobs on '${inference_cmd}' (${decode_device})"

if [ -n "${mini_corpus_dir}" ]; then
    myst=${mini_corpus_dir}/myst
    librispeech=${mini_corpus_dir}/librispeech
    phone_text=${phone_text:-${mini_corpus_dir}/phones.txt}
fi
if [ -n "${multilingual_corpus_dir}" ]; then
    phone_text=${phone_text:-${multilingual_corpus_dir}/phones.txt}
fi

token_list=${data_dir}/token_list/${token_type}/tokens.txt
phone_token_list=${data_dir}/token_list/phn/tokens.txt
sets_with_audio=$(echo "${train_set} ${valid_set} ${test_sets}" | tr ' ' '\n' | sort -u | tr '\n' ' ')
finetune_train_set=${train_set}
[ -z "${speed_perturb_factors}" ] || finetune_train_set=${train_set}_sp
fusion_train_set=${train_set}
feats_sets=${sets_with_audio}  # the sets stage 6 caches
if [ "${fusion_speed_perturb}" = true ]; then
    [ -n "${speed_perturb_factors}" ] || { log "ERROR: --fusion_speed_perturb true trains the fusion heads on <train_set>_sp: set --speed_perturb_factors" >&2; exit 2; }
    fusion_train_set=${finetune_train_set}
    feats_sets="${sets_with_audio} ${fusion_train_set}"
fi
adult_sets=
[ -n "${adult_train_set}" ] && adult_sets="${adult_train_set} ${adult_valid_set}"
reference=${upstreams%% *}

# the job planner's view of the options (espnet_delta.recipe.plan; local/engine.sh's plan)
plan_opts=(--exp_dir "${exp_dir}" --data_dir "${data_dir}" --shape_dir "${shape_dir}" --feats_dir "${feats_dir}"
    --token_type "${token_type}" --token_list "${token_list}" --phone_token_list "${phone_token_list}"
    --train_set "${train_set}" --finetune_train_set "${finetune_train_set}" --fusion_train_set "${fusion_train_set}" --valid_set "${valid_set}" --adult_train_set "${adult_train_set}"
    --adult_valid_set "${adult_valid_set}" --upstreams "${upstreams}" --adult_upstreams "${adult_upstreams}"
    --upstream_conf "${upstream_conf}" --tiny_upstream_dir "${tiny_upstream_dir}" --finetune_config "${finetune_config}"
    --merge_finetune_config "${merge_finetune_config}"
    --probe_config "${probe_config}" --interface_config "${interface_config}" --interface_systems "${interface_systems}"
    --interface_units "${interface_units}" --sshr_config "${sshr_config}" --sshr_systems "${sshr_systems}"
    --sshr_units "${sshr_units}" --whisper_config "${whisper_config}" --whisper_model "${whisper_asr_model:-${tiny_whisper}}"
    --fusion_config "${fusion_config}" --fusion_systems "${fusion_systems}")
seed_check  # --seeds / --seed: the array seed_list; --seed N != 0 goes to the planner (ESPnet's seed: N)
# job dirs, checkpoint names, result fragments (ref_ft_dir, ft_ckpt, ft_ckpt_pattern, sshr_md ...): the planner's
names_sh=$(plan names)
eval "${names_sh}"

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
    export ESPNET_DELTA_STAGE=0  # the usage log's stage (docs/dry_run.md)
    log "Stage 0: fetching the hub models the options need into the caches the stages read (a login node with internet)"
    fetch_models --stages 0  # S3PRL upstreams, Whisper screening and fine-tuning models; each loaded once, path and size printed
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    export ESPNET_DELTA_STAGE=1  # the usage log's stage (docs/dry_run.md)
    log "Stage 1: data preparation (the recipe's local/data.sh) -> ${data_dir}"
    check_models 1
    [ -x local/data.sh ] || { log "ERROR: no executable local/data.sh in $(pwd): run the engine from a recipe (egs2/<corpus>/asr1)"; exit 2; }
    # the generic options every recipe's local/data.sh takes, then the corpus and screening options that are set
    data_opts=(--data_dir "${data_dir}" --nj "${nj}" --subset_hours "${subset_hours}" --subset_seed "${subset_seed}"
               --max_duration "${max_duration}" --min_words "${min_words}" --max_wer "${max_wer}" --keep_long_test "${keep_long_test}")
    for opt in myst librispeech whisper_hyp whisper_model whisper_opts; do [ -z "${!opt}" ] || data_opts+=("--${opt}" "${!opt}"); done
    [ -z "${mini_corpus_dir}" ] || data_opts+=(--mini_corpus_dir "${mini_corpus_dir}" --mini_corpus_scale "${mini_corpus_scale}")
    [ -z "${multilingual_corpus_dir}" ] || data_opts+=(--multilingual_corpus_dir "${multilingual_corpus_dir}"
        --multilingual_corpus_scale "${multilingual_corpus_scale}")
    # Whisper screening of a missing --whisper_hyp: train/dev/test transcribed in shards on the inference back-end
    [ -z "${whisper_model}" ] || data_opts+=(--whisper_device "${decode_device}" --whisper_nj "${inference_nj}" --whisper_cmd "${inference_cmd}")
    exp_dir=${exp_dir} ./local/data.sh "${data_opts[@]}"
    [ "${dry_run}" != true ] || dry_run_trim  # the first --dry_run_utts utterances of each decoded set
    if [ -n "${tiny_upstream_dir}" ]; then
        log "Writing tiny random upstreams to ${tiny_upstream_dir} (skipped when present)"
        # shellcheck disable=SC2086
        ${python} -m espnet_delta.bin.make_tiny_upstreams --out_dir "${tiny_upstream_dir}" ${tiny_upstream_opts}
    fi
    if [ -n "${whisper_config}" ] && [ -n "${tiny_whisper}" ]; then
        log "Writing a tiny random Whisper to ${tiny_whisper} (skipped when present)"
        ${python} -m espnet_delta.bin.make_tiny_whisper --out "${tiny_whisper}"
    fi
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    export ESPNET_DELTA_STAGE=2  # the usage log's stage (docs/dry_run.md)
    log "Stage 2: ${token_type} token list -> ${token_list}; speech shape files -> ${shape_dir}"
    [ "${token_type}" = char ] || { log "ERROR: only --token_type char is implemented"; exit 2; }
    ${python} -m espnet_delta.recipe.make_tokens --text "${data_dir}/${train_set}/text" --out "${token_list}"
    sp_set=
    if [ -n "${speed_perturb_factors}" ]; then
        log "Stage 2: speed perturbation ${speed_perturb_factors} of ${train_set} -> ${data_dir}/${finetune_train_set} (ft_<upstream> train on it)"
        # shellcheck disable=SC2086
        ${python} -m espnet_delta.bin.speed_perturb --src "${data_dir}/${train_set}" --out "${data_dir}/${finetune_train_set}" \
            --factors ${speed_perturb_factors}
        sp_set=${finetune_train_set}
    fi
    # shellcheck disable=SC2086
    ${python} -m espnet_delta.recipe.make_shapes --data_dir "${data_dir}" --sets ${sets_with_audio} ${adult_sets} ${sp_set} --out_dir "${shape_dir}"
    if [ -n "${phone_text}" ]; then
        log "Stage 2: phone targets from ${phone_text} -> ${data_dir}/<set>/text.phn; phone token list -> ${phone_token_list}"
        # shellcheck disable=SC2086
        ${python} -m espnet_delta.recipe.make_phone_text --phones "${phone_text}" --data_dir "${data_dir}" \
            --sets ${sets_with_audio} ${adult_sets} --train_set "${train_set}" --token_list "${phone_token_list}"
    fi
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    export ESPNET_DELTA_STAGE=3  # the usage log's stage (docs/dry_run.md)
    if [ -z "${pretrained_upstream_dir}" ]; then
        log "Stage 3: skipped (no --pretrained_upstream_dir): the upstreams of ${upstream_conf} are used as they are"
    else
        [ -n "${tiny_upstream_dir}" ] || { log "ERROR: stage 3 pre-trains the checkpoints of --tiny_upstream_dir; set it"; exit 2; }
        log "Stage 3: self-supervised pre-training ${tiny_upstream_dir} -> ${pretrained_upstream_dir} (skipped when present)"
        scps=()
        for s in ${pretrain_sets}; do scps+=("${data_dir}/${s}/wav.scp"); done
        # one architecture per process, one thread each; run_parallel appends the items, so --archs comes last
        # shellcheck disable=SC2086
        run_parallel --cmd "${train_cmd}" --name pretrain "${pretrain_nj:-${nj}}" ${python} -m espnet_delta.bin.pretrain_upstreams --in_dir "${tiny_upstream_dir}" \
            --out_dir "${pretrained_upstream_dir}" --work_dir "${exp_dir}/pretrain" --wav_scp "${scps[@]}" \
            ${pretrain_opts} --archs -- ${pretrain_archs}
    fi
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    export ESPNET_DELTA_STAGE=4  # the usage log's stage (docs/dry_run.md)
    log "Stage 4: training the jobs of the enabled families (CTC fine-tuning, adult models, probe, Whisper, SSHR, layer interfaces) -> ${exp_dir}"
    check_models 4
    # wave 2: systems reading wave 1's fine-tuned models (delta-fusion interfaces), rendered once those exist
    for wave in 1 2; do
        plan_jobs train --wave "${wave}"
        [ ${#jobs[@]} -eq 0 ] || log "Stage 4: wave ${wave}: ${#jobs[@]} trainings: ${jobs[*]##*/}"
        train_jobs "${jobs[@]}"
    done
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    export ESPNET_DELTA_STAGE=5  # the usage log's stage (docs/dry_run.md)
    log "Stage 5: decoding + scoring the stage-4 models on ${test_sets} (one command per checkpoint, unit and decoder); RESULTS.md"
    check_models 5
    decode_planned
    if [ -n "${sshr_systems}" ]; then
        log "Stage 5: error rates of the SSHR systems per language -> ${sshr_md}"
        list_jobs sshr
        # shellcheck disable=SC2086
        ${python} -m espnet_delta.recipe.sshr_results --jobs "${jobs[@]}" --data_dir "${data_dir}" --test_sets ${test_sets} --out "${sshr_md}"
    fi
    if [ -n "${interface_systems}" ]; then
        log "Stage 5: the layer-interface table -> ${interface_md}"
        list_jobs interface
        # shellcheck disable=SC2086
        ${python} -m espnet_delta.recipe.interface_results --jobs "${jobs[@]}" --test_sets ${test_sets} --out "${interface_md}"
    fi
    if [ "${langid_probe}" = true ]; then
        log "Stage 5: language-ID probe per layer of the frozen ${reference} -> ${langid_probe_md%.md}.{csv,png,md}"
        ${python} -m espnet_delta.bin.langid_probe --upstream_conf "${upstream_conf}" --model "${reference}" \
            --train_dir "${data_dir}/${train_set}" --test_dir "${data_dir}/${valid_set}" --out_dir "${analysis_dir}"
    fi
    write_results
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
    export ESPNET_DELTA_STAGE=6  # the usage log's stage (docs/dry_run.md)
    log "Stage 6: extracting E_ft of the reference and E_delta, E_ft of the other models -> ${feats_dir} (${feats_num_shards} shards)"
    check_models 6
    extract_conf=${feats_dir}/extract.yaml
    ft_map=()
    # shellcheck disable=SC2206  # NAME=PATH words
    [ -z "${finetuned_ckpts}" ] || ft_map=(--finetuned_map ${finetuned_ckpts})
    # shellcheck disable=SC2086
    ${python} -m espnet_delta.recipe.make_extract_config --upstream_conf "${upstream_conf}" --reference "${reference}" \
        --others ${upstreams#* } --finetuned "${ft_ckpt_pattern}" "${ft_map[@]}" --out "${extract_conf}"
    dirs=()
    for dset in ${feats_sets}; do dirs+=(--data_dir "${data_dir}/${dset}" --out_dir "${feats_dir}/${dset}"); done
    # one task per shard, at most --inference_nj at once; run_parallel appends the shard number after --shard
    # shellcheck disable=SC2046
    run_parallel --cmd "${inference_cmd} --max_jobs_run ${inference_nj}" --name extract "${feats_num_shards}" \
        ${python} -m espnet_delta.bin.extract_features --config "${extract_conf}" "${dirs[@]}" --num_shards "${feats_num_shards}" \
        --device "${decode_device}" --feats_fp16 "${feats_fp16}" --autocast "${extract_autocast}" --shard -- $(seq 1 "${feats_num_shards}")
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
    export ESPNET_DELTA_STAGE=7  # the usage log's stage (docs/dry_run.md)
    log "Stage 7: training the fusion systems of ${fusion_systems} on cached features -> ${exp_dir}/fusion_<system>"
    # the cache is checked before any training reads it (shard sizes and records, merged tables; no model loads)
    for dset in ${feats_sets}; do
        ${python} -m espnet_delta.bin.extract_features --config "${feats_dir}/extract.yaml" --data_dir "${data_dir}/${dset}" \
            --out_dir "${feats_dir}/${dset}" --num_shards "${feats_num_shards}" --feats_fp16 "${feats_fp16}" --autocast "${extract_autocast}" --merge_only true --progress false ||
            { log "ERROR: stage 7: the feature cache ${feats_dir}/${dset} is incomplete or damaged (above): run --stage 6 again"; exit 1; }
    done
    plan_jobs fusion
    train_jobs "${jobs[@]}"
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
    export ESPNET_DELTA_STAGE=8  # the usage log's stage (docs/dry_run.md)
    if [ -z "${adult_train_set}" ]; then
        log "Stage 8: skipped: merging needs an adult model (--adult_train_set libri_train, with --librispeech)"
    else
        log "Stage 8: merging ${merge_child_dir} (child) with ${ref_adult_dir}: SA and baseline grids on ${valid_set}"
        check_models 8
        [ -n "${reference_ckpt}" ] || { log "ERROR: stage 8 needs the pre-trained checkpoint of ${reference} as path_or_url in ${upstream_conf}"; exit 2; }
        merge_models merge "${merge_child_dir}" "${ref_adult_dir}" "${reference_ckpt}" --batch_size "${decode_batch_size}"
        if [ -n "${whisper_config}" ]; then
            log "Stage 8: merging ${whisper_dir} (child) with ${whisper_adult_dir}: SA (encoder and decoder self/cross-attention Q/K/V) and baseline grids on ${valid_set}"
            # the exact starting point of both fine-tunings (Whisper + the seeded new token embedding and CTC head)
            ${python} -m espnet_delta.bin.init_state --config "${whisper_dir}/config.yaml" --out "${whisper_dir}/init.pth"
            merge_models merge_whisper "${whisper_dir}" "${whisper_adult_dir}" "${whisper_dir}/init.pth" --name whisper \
                --model_name "${whisper_ckpt}" --decode_config "${whisper_decode_config}"
        fi
    fi
fi

if [ ${stage} -le 9 ] && [ ${stop_stage} -ge 9 ]; then
    export ESPNET_DELTA_STAGE=9  # the usage log's stage (docs/dry_run.md)
    log "Stage 9: decoding + scoring the fusion systems of ${fusion_systems} on ${test_sets}; RESULTS.md"
    decode_planned --families fusion
    log "Stage 9: per-utterance mean gate weights of the MoE systems -> ${exp_dir}/fusion_<system>/decode/<set>/gate_means.tsv"
    list_jobs fusion
    tests=()
    for t in ${test_sets}; do tests+=(--test "${t}=${feats_dir}/${t}/feats.scp"); done
    run_parallel --cmd "${inference_cmd}" --name gate_means "${inference_nj}" ${python} -m espnet_delta.bin.gate_means \
        --model_name "${fusion_ckpt}" "${tests[@]}" --batch_size "${decode_batch_size}" --device "${decode_device}" -- "${jobs[@]}"
    write_results
fi

if [ ${stage} -le 10 ] && [ ${stop_stage} -ge 10 ]; then
    export ESPNET_DELTA_STAGE=10  # the usage log's stage (docs/dry_run.md)
    log "Stage 10: analysis: layer-wise CCA/PWCCA of ${upstreams}, MoE gate histograms, WER chart -> ${analysis_dir}"
    check_models 10
    # shellcheck disable=SC2086
    run_job --cmd "${inference_cmd}" --name analysis ${python} -m espnet_delta.bin.analyze --out_dir "${analysis_dir}" \
        --upstream_conf "${upstream_conf}" --models ${upstreams} --finetuned "${ft_ckpt_pattern}" \
        --wav_scp "${data_dir}/${valid_set}/wav.scp" --max_utts "${analysis_max_utts}" --max_frames "${analysis_max_frames}" \
        --exp_dir "${exp_dir}" --model_name "${fusion_ckpt}" --feats_dir "${feats_dir}" --gate_sets ${test_sets} \
        --wer_sets ${test_sets} --batch_size "${decode_batch_size}" --device "${decode_device}"
    write_results
fi

[ ${#seed_list[@]} -eq 1 ] || run_seeds  # stages max(4, --stage)..--stop_stage per other seed, then RESULTS.md over the seeds
[ "${dry_run}" != true ] || dry_run_report  # per-stage usage and the full run's device-hour arithmetic
log "Successfully finished stages ${stage}..${stop_stage}"
