# Sourced by the shell tools: the Python to run. $PYTHON wins; an active virtualenv or conda
# environment keeps its own `python`; otherwise the project's .venv (what `make setup` creates),
# so the tools work right after `make demo` without `source .venv/bin/activate`.
project_python() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [[ -n "${PYTHON:-}" ]]; then
        echo "$PYTHON"
    elif [[ -z "${VIRTUAL_ENV:-}" && -z "${CONDA_PREFIX:-}" && -x "$root/.venv/bin/python" ]]; then
        echo "$root/.venv/bin/python"
    else
        echo python
    fi
}
