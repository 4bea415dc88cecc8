# The environment of this recipe's scripts (ESPnet's path.sh convention; local/data.sh
# sources it). The logic lives once, in the checkout's local/path.sh: it finds the checkout,
# builds its venv when missing and puts it first on PATH; sets repo_root and python.
# shellcheck source=../../../local/path.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../../local/path.sh"
