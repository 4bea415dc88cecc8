# Shared shell helpers for the stage engine and stage scripts.

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# parse_options "$@": every --name value (or --name=value) pair sets the already-declared
# shell variable ${name} (dashes in name read as underscores); --help/-h calls the caller's
# help_message and exits; an unknown option or a missing value is an error. Other
# arguments are left in the array `positional`.
parse_options() {
    positional=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
            --help|-h) help_message; exit 0 ;;
            --*)
                local name=${1#--}
                name=${name//-/_}
                if ! declare -p "${name}" >/dev/null 2>&1; then
                    help_message >&2
                    log "ERROR: unknown option $1 (see the list above)" >&2
                    exit 2
                fi
                [ $# -ge 2 ] || { log "ERROR: $1 needs a value" >&2; exit 2; }
                printf -v "${name}" '%s' "$2"
                shift 2
                ;;
            *) positional+=("$1"); shift ;;
        esac
    done
}

# Print-only mode (local/asr.sh --print_only true exports print_only=true): run_parallel and
# run_job print the command lines they would run, one per line after ${print_only_prefix}, shell-quoted
# (one line per group of items); the engine sets python="print_cmd python", so a direct
# ${python} -m module ... call prints its line too.
print_only_prefix="[print_only]"

# print_cmd <command...>: print a command line after the print-only prefix, shell-quoted.
print_cmd() {
    [ "${1:-}" = print_cmd ] && shift  # a command given as ${python} under print-only
    local line
    printf -v line ' %q' "$@"
    echo "${print_only_prefix}${line}"
}

# print_groups <nj> <command...> -- <item...>: print_cmd of each round-robin group, as run_parallel runs them.
print_groups() {
    local nj=$1 cmd=() group=() g i
    shift
    while [ "$1" != "--" ]; do cmd+=("$1"); shift; done
    shift
    local items=("$@") n=$#
    [ "${nj}" -lt "${n}" ] || nj=${n}
    for ((g = 0; g < nj; g++)); do
        group=()
        for ((i = g; i < n; i += nj)); do group+=("${items[i]}"); done
        print_cmd "${cmd[@]}" "${group[@]}"
    done
}

# run_parallel [--cmd SPEC] [--name NAME] [--task_per_item] <nj> <command...> -- <item...>:
# splits the items round-robin into <nj> groups and runs "<command...> <group items...>" once
# per group on the job back-end SPEC (cmd.sh: ${train_cmd}, ${cuda_cmd}, ${decode_cmd}; default
# ${job_cmd:-local}): "local [--gpu N]" runs background processes here with OMP_NUM_THREADS=1
# (small models run as fast on one thread as on two, so <nj> processes give ~<nj>x throughput),
# at most one per free GPU set when --gpu N; "slurm --config conf/slurm.conf [--gpu N] ..." runs
# one Slurm array job, a task per group (--task_per_item: a task per item, <nj> at once). Each
# group logs to ${exp_dir:-exp}/logs/<NAME>.<k>.log (NAME: the command's module by default);
# fails, naming each failed group's task id and log, if any group fails. See espnet_delta/jobs/.
run_parallel() {
    local spec=${job_cmd:-local} name= per_item=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --cmd) spec=$2; shift 2 ;;
            --name) name=$2; shift 2 ;;
            --task_per_item) per_item=(--task_per_item); shift ;;
            *) break ;;
        esac
    done
    local nj=$1
    shift
    local cmd=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do cmd+=("$1"); shift; done
    [ $# -gt 0 ] || { log "ERROR: run_parallel: no '--' before the items" >&2; return 2; }
    shift
    if [ -z "${name}" ]; then
        local i
        name=${cmd[0]##*/}
        for ((i = 0; i + 1 < ${#cmd[@]}; i++)); do [ "${cmd[i]}" = -m ] && name=${cmd[i + 1]##*.}; done
    fi
    if [ "${print_only:-false}" = true ]; then
        print_groups "${nj}" "${cmd[@]}" -- "$@"
        return 0
    fi
    local items=() item
    for item in "$@"; do items+=("--item=${item}"); done
    # shellcheck disable=SC2086  # spec and python are word lists
    ${python:-python3} -m espnet_delta.jobs ${spec} --nj "${nj}" --name "${name}" --log_dir "${exp_dir:-exp}/logs" \
        "${per_item[@]}" "${items[@]}" -- "${cmd[@]}"
}

# run_job [--cmd SPEC] [--name NAME] <command...>: runs the command once, as one job of the
# back-end SPEC (a stage that is a single process, e.g. merging or analysis, on a GPU node);
# its output goes to ${exp_dir:-exp}/logs/<NAME>.1.log.
run_job() {
    local spec=${job_cmd:-local} name=job
    while [ $# -gt 0 ]; do
        case "$1" in
            --cmd) spec=$2; shift 2 ;;
            --name) name=$2; shift 2 ;;
            *) break ;;
        esac
    done
    if [ "${print_only:-false}" = true ]; then
        print_cmd "$@"
        return 0
    fi
    # shellcheck disable=SC2086  # spec and python are word lists
    ${python:-python3} -m espnet_delta.jobs ${spec} --nj 1 --name "${name}" --log_dir "${exp_dir:-exp}/logs" --single -- "$@"
}

# count_gpus: the GPUs jobs on this machine may use (CUDA_VISIBLE_DEVICES, else nvidia-smi -L).
count_gpus() {
    if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
        local ids=${CUDA_VISIBLE_DEVICES//-1/}
        ids=${ids//,/ }
        set -- ${ids}
        echo $#
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true
    else
        echo 0
    fi
}
