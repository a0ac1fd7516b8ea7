#!/usr/bin/env bash
# Multi-GPU evaluation with torchrun:
#   tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py options, e.g. --show-dir DIR]
set -euo pipefail
exec "$(dirname "$0")/dist_run.sh" "$3" tools/test.py "$1" "$2" "${@:4}"
