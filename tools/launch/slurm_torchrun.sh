#!/usr/bin/env bash
# Multi-node training under SLURM: one torchrun per node (srun), c10d rendezvous on the first node.
#   sbatch --nodes 4 --gpus-per-node 8 tools/launch/slurm_torchrun.sh configs/pretrain_surgical.yaml \
#     --set data.manifest='corpora/surglavi/*.jsonl'
#SBATCH --job-name=videolang
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --time=72:00:00
set -euo pipefail
CONFIG=${1:?usage: slurm_torchrun.sh CONFIG [--set key=value ...]}
shift
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
GPUS=${GPUS_PER_NODE:-$(nvidia-smi -L | wc -l)}
# --resume auto (the default) makes a requeued job continue from its newest complete checkpoint.
srun --kill-on-bad-exit=1 torchrun \
  --nnodes "$SLURM_NNODES" --nproc_per_node "$GPUS" \
  --rdzv_backend c10d --rdzv_endpoint "$HEAD:29500" --rdzv_id "$SLURM_JOB_ID" \
  -m videolang train "$CONFIG" "$@"
