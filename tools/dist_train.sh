#!/usr/bin/env bash
# Multi-GPU (or multi-process CPU) training with torchrun:
#   tools/dist_train.sh CONFIG NUM_PROCS [train.py options, e.g. --work-dir DIR --amp]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT from the environment.
set -euo pipefail
CONFIG=$1
NPROCS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --master_port="$PORT" --nproc_per_node="$NPROCS" \
    tools/train.py "$CONFIG" --launcher pytorch "$@"
