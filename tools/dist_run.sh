#!/usr/bin/env bash
# Runs a tool in NUM_PROCS processes with torchrun (GPUs, or gloo on CPU machines):
#   tools/dist_run.sh NUM_PROCS TOOL [tool arguments]
# Python: $PYTHON, else the active environment's, else the project's .venv.
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT from the environment.
set -euo pipefail
NPROCS=$1
TOOL=$2
shift 2
cd "$(dirname "$0")/.."
source tools/python_env.sh
exec "$(project_python)" -m torch.distributed.run --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" --nproc_per_node="$NPROCS" "$TOOL" "$@" --launcher pytorch
