# Sourced by the stage engine: finds the checkout, builds the venv when it is missing,
# and puts its python first on PATH. Sets: repo_root, python.
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "${repo_root}/.venv/.installed" ]; then
    echo "$(date '+%Y-%m-%dT%H:%M:%S') (path.sh) No environment yet: running 'make install' in ${repo_root} (~5 min, ~7.6 GB)" >&2
    make -C "${repo_root}" install >&2
fi
export PATH="${repo_root}/.venv/bin:${PATH}"
export PYTHONUNBUFFERED=1
# Never reach for a model hub or NLTK data from inside a recipe unless the user asks for it.
export NLTK_DATA="${NLTK_DATA:-${repo_root}/.venv/nltk_data}"
python="${repo_root}/.venv/bin/python"
