# Shared shell helpers for the stage engine and stage scripts.

log() {
    local fname=${BASH_SOURCE[1]##*/}
    # the engine's "Stage N: ..." lines name the stage that an interrupt reports (on_interrupt)
    if [[ "$*" =~ ^Stage\ ([0-9]+): ]]; then current_stage=${BASH_REMATCH[1]}; fi
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# trap_interrupts: on SIGINT (Ctrl-C) or SIGTERM the engine stops the job back-end it waits for
# (run_waiting), logs one line naming the interrupted stage, and exits 130 / 143. The back-end
# (espnet_delta.jobs) stops its tasks' process groups (or cancels the Slurm array job) and waits for them.
trap_interrupts() {
    trap 'on_interrupt INT 130' INT
    trap 'on_interrupt TERM 143' TERM
}

on_interrupt() {
    trap '' INT TERM  # once: the back-end is being stopped
    if [ -n "${waiting_pid:-}" ]; then
        kill -TERM "${waiting_pid}" 2>/dev/null || true
        wait "${waiting_pid}" 2>/dev/null || true
    fi
    log "Stage ${current_stage:-?}: interrupted by SIG$1; its running jobs were stopped. Rerun the same command to resume:" \
        "finished work is kept (trainings resume from their last epoch's checkpoint.pth), unfinished work is redone" >&2
    exit "$2"
}

# keep_results_md <RESULTS.md> <dest dir> <command...>: runs the command (an engine run on another
# exp dir, which writes RESULTS.md as its last step); a RESULTS.md it wrote or changed is moved to
# <dest dir>/RESULTS.md and the recipe's own file is put back as it was. Returns the command's status.
keep_results_md() {
    local md=$1 dest=$2 keep rc=0
    shift 2
    mkdir -p "${dest}"
    keep=${dest}/.RESULTS.md.keep
    rm -f "${keep}"
    [ -f "${md}" ] && cp -p "${md}" "${keep}"
    "$@" || rc=$?
    if [ -f "${md}" ] && ! { [ -f "${keep}" ] && cmp -s "${md}" "${keep}"; }; then
        mv "${md}" "${dest}/RESULTS.md"
    fi
    if [ -f "${keep}" ]; then mv "${keep}" "${md}"; fi
    return ${rc}
}

# run_waiting <command...>: the command in the background, waited for. Bash runs a trap only after
# a foreground command returns, but interrupts a wait: so a signal sent to the engine alone reaches
# the back-end at once (on_interrupt), not when the stage's jobs have finished.
run_waiting() {
    local rc=0
    "$@" &
    waiting_pid=$!
    wait "${waiting_pid}" || rc=$?
    waiting_pid=
    # the back-end exits 130 / 143 only when interrupted; when the same Ctrl-C reached this shell
    # while it was collecting that exit, bash may skip the trap (it takes the child's handling as its own)
    case "${rc}" in
        130) on_interrupt INT 130 ;;
        143) on_interrupt TERM 143 ;;
    esac
    return "${rc}"
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

# print_groups [--shared] <nj> <command...> -- <item...>: print_cmd of each round-robin group, as
# run_parallel runs them (--shared: each of the <nj> processes gets every item and claims them one by one).
print_groups() {
    local claim=false
    [ "$1" = --shared ] && { claim=true; shift; }
    local nj=$1 cmd=() group=() g i
    shift
    while [ "$1" != "--" ]; do cmd+=("$1"); shift; done
    shift
    local items=("$@") n=$#
    [ "${nj}" -lt "${n}" ] || nj=${n}
    for ((g = 0; g < nj; g++)); do
        group=()
        if [ "${claim}" = true ]; then group=("${items[@]}"); else
            for ((i = g; i < n; i += nj)); do group+=("${items[i]}"); done
        fi
        print_cmd "${cmd[@]}" "${group[@]}"
    done
}

# run_parallel [--cmd SPEC] [--name NAME] [--task_per_item] <nj> <command...> -- <item...>:
# splits the items round-robin into <nj> groups and runs "<command...> <group items...>" once
# per group on the job back-end SPEC (cmd.sh: ${train_cmd}, ${cuda_cmd}, ${decode_cmd}; default
# ${job_cmd:-local}): "local [--gpu N]" runs background processes here with OMP_NUM_THREADS=1
# (small models run as fast on one thread as on two, so <nj> processes give ~<nj>x throughput),
# at most one per free GPU set when --gpu N; "slurm --config conf/slurm.conf [--gpu N] ..." runs
# one Slurm array job, a task per group. --task_per_item (independent jobs; the command calls
# espnet_delta.fileio.claim): Slurm runs a task per item, <nj> at once; the local back-end gives each
# of its <nj> processes every item and each takes the next unclaimed one, so none idles behind a
# longer group. Each
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
        local shared=()
        [ ${#per_item[@]} -eq 0 ] || [ "${spec%% *}" != local ] || shared=(--shared)
        print_groups "${shared[@]}" "${nj}" "${cmd[@]}" -- "$@"
        return 0
    fi
    local items=() item
    for item in "$@"; do items+=("--item=${item}"); done
    # shellcheck disable=SC2086  # spec and python are word lists
    run_waiting ${python:-python3} -m espnet_delta.jobs ${spec} --nj "${nj}" --name "${name}" --log_dir "${exp_dir:-exp}/logs" \
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
    run_waiting ${python:-python3} -m espnet_delta.jobs ${spec} --nj 1 --name "${name}" --log_dir "${exp_dir:-exp}/logs" --single -- "$@"
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

# run_lock <exp_dir> <log> <command>: one engine run per exp_dir at a time (local/asr.sh calls it
# once, not under --print_only). The lock is flock(1) on <exp_dir>/.run.lock, held by a helper
# process that inherits the lock's file and that the kernel kills when this shell ends
# (setpriv --pdeathsig; tail --pid as a second guard), so the lock ends with the run, also after
# kill -9, and the run's own jobs do not hold it. <exp_dir>/.run.owner records the holder's PID,
# command and log for a second run, which stops at once with one line naming them (exit 2). A
# run started by the holder or its jobs (ESPNET_DELTA_RUN_LOCK, exported: "<lock> <pid>" lines)
# uses the holder's lock instead of waiting for itself.
run_lock() {
    local lock owner me entry fd pid cmd ran_log
    lock=$(cd "$1" && pwd)/.run.lock
    owner=${lock%.lock}.owner
    if [ -n "${ESPNET_DELTA_RUN_LOCK:-}" ]; then
        while IFS= read -r entry; do
            pid=${entry##* }
            if [ "${entry% *}" = "${lock}" ] && kill -0 "${pid}" 2>/dev/null && [ "$(head -n 1 "${owner}" 2>/dev/null)" = "${pid}" ]; then
                log "run lock ${lock}: held by the calling run, PID ${pid}"
                return 0
            fi
        done <<< "${ESPNET_DELTA_RUN_LOCK}"
    fi
    command -v flock >/dev/null || { log "WARNING: flock (util-linux) not found: no check for another run in $1"; return 0; }
    exec {fd}>>"${lock}"
    if ! flock -n "${fd}"; then
        pid=$(head -n 1 "${owner}" 2>/dev/null || true)
        # the holder just ended (its helper is exiting) or has not written its record yet: wait briefly
        if [ -z "${pid}" ] || ! kill -0 "${pid}" 2>/dev/null; then flock -w 5 "${fd}" || true; fi
    fi
    if ! flock -n "${fd}"; then
        { read -r pid; read -r cmd; read -r ran_log; } < "${owner}" 2>/dev/null || true
        log "ERROR: another run uses $1: PID ${pid:-?} (${cmd:-command unknown}), log ${ran_log:-unknown} (lock ${lock}); wait for it or stop it, then run again" >&2
        exit 2
    fi
    me=$$
    local guard=()
    command -v setpriv >/dev/null && guard=(setpriv --pdeathsig KILL --)
    # it ignores INT/TERM, so the lock lasts while the engine stops its jobs after a Ctrl-C or kill
    (trap '' INT TERM HUP; exec "${guard[@]}" tail --pid="${me}" -f /dev/null) </dev/null >/dev/null 2>&1 &
    disown "$!"
    exec {fd}>&-  # the helper holds the lock now; the jobs started from here do not inherit it
    case "$2" in /*) ran_log=$2 ;; *) ran_log=$(pwd)/$2 ;; esac
    printf '%s\n%s\n%s\n' "${me}" "$3" "${ran_log}" > "${owner}.$$"
    mv -f "${owner}.$$" "${owner}"
    export ESPNET_DELTA_RUN_LOCK="${ESPNET_DELTA_RUN_LOCK:+${ESPNET_DELTA_RUN_LOCK}
}${lock} ${me}"
}
