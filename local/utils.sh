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

# run_parallel <nj> <command...> -- <item...>: splits the items round-robin into <nj>
# groups and runs "<command...> <group items...>" for each group in the background with
# OMP_NUM_THREADS=1 (small models run as fast on one thread as on two, so <nj>
# processes give ~<nj>x throughput); fails if any group fails.
run_parallel() {
    local nj=$1
    shift
    local cmd=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do cmd+=("$1"); shift; done
    shift
    local items=("$@") pids=() g i
    [ ${#items[@]} -lt "${nj}" ] && nj=${#items[@]}
    for ((g = 0; g < nj; g++)); do
        local group=()
        for ((i = g; i < ${#items[@]}; i += nj)); do group+=("${items[i]}"); done
        OMP_NUM_THREADS=1 "${cmd[@]}" "${group[@]}" &
        pids+=($!)
    done
    local failed=0
    for i in "${pids[@]}"; do wait "${i}" || failed=1; done
    return ${failed}
}
