# Shared shell helpers for the stage engine and stage scripts.

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# parse_options "$@": every --name value pair sets the already-declared shell variable
# ${name}; an unknown option or a missing value is an error. Remaining args are left in
# the array `positional`.
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
                    echo "ERROR: unknown option $1" >&2
                    help_message >&2
                    exit 2
                fi
                [ $# -ge 2 ] || { echo "ERROR: $1 needs a value" >&2; exit 2; }
                printf -v "${name}" '%s' "$2"
                shift 2
                ;;
            *) positional+=("$1"); shift ;;
        esac
    done
}
