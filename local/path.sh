# Sourced by the stage engine: finds the checkout, builds the venv when it is missing,
# and puts its python first on PATH. Sets: repo_root, python, python_run.
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "${repo_root}/.venv/.installed" ]; then
    echo "$(date '+%Y-%m-%dT%H:%M:%S') (path.sh) No environment yet: running 'make install' in ${repo_root} (~5 min, ~7.6 GB)" >&2
    make -C "${repo_root}" install >&2
fi
export PATH="${repo_root}/.venv/bin:${PATH}"
export PYTHONUNBUFFERED=1
# Every python command of the stages goes through the plugin's launcher, as a stock ESPnet
# recipe would with --python: the plugin is registered whenever ESPnet's ASR task is
# imported, and g2p_en's NLTK download attempt at import is skipped (see espnet_delta/launch.py).
# Use it unquoted: ${python} -m module args...
python="${repo_root}/.venv/bin/python -m espnet_delta.launch"
# Under the engine's print-only mode (local/asr.sh --print_only true exports print_only=true) a
# ${python} command only prints its command line (print_cmd of local/utils.sh); what must run
# even then (the job planner, which then only lists jobs) uses ${python_run}.
python_run=${python}
[ "${print_only:-false}" != true ] || python="print_cmd python"
