#!/usr/bin/env bash
# Multi-GPU (or multi-process CPU) training with torchrun:
#   tools/dist_train.sh CONFIG NUM_PROCS [train.py options, e.g. --work-dir DIR --amp]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT from the environment.
set -euo pipefail
exec "$(dirname "$0")/dist_run.sh" "$2" tools/train.py "$1" "${@:3}"
