#!/bin/bash
# Batch prediction over a large folder with SLURM: one task per GPU, on several nodes, beside slurm_ddp.sh (training).
#
#   sbatch recipes/emonet/slurm_predict.sh /shared/audio/ /shared/predictions.csv                 # 2 nodes x 4 GPUs
#   sbatch --nodes=1 recipes/emonet/slurm_predict.sh /shared/audio/ /shared/predictions.parquet   # 1 node x 4 GPUs
#   sbatch recipes/emonet/slurm_predict.sh IN/ OUT.csv --model emonet_wrn.multi4 --head urdu      # extra arguments
#
# `sermodels predict --devices N --num-nodes M` runs Lightning's multi-device predict loop
# (sermodels/pipelines/predict_runner.py): the files are cut into fixed groups, each rank predicts its groups and
# writes one shard per group into OUT.partial/, and rank 0 merges them into OUT once all ranks are done. Resubmitting
# the same command after a crash or a time-out resumes: groups with a shard are not predicted again. Lightning takes
# rank, world size and the rendezvous address from the SLURM job (see slurm_ddp.sh); `srun` starts every rank.
# The input folder and OUT must be on a file system every node sees.
#
#SBATCH --job-name=sermodels-predict
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=8
#SBATCH --mem-per-cpu=4G
#SBATCH --time=04:00:00
#SBATCH --output=sermodels-predict-%j.out

set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: sbatch recipes/emonet/slurm_predict.sh INPUT_FOLDER OUT.csv|.json|.parquet [predict options]" >&2
    exit 2
fi
inputs="$1"
out="$2"
shift 2

cd "${SLURM_SUBMIT_DIR}"
export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK}"
export OMP_NUM_THREADS=1

srun .venv/bin/sermodels predict "${inputs}" --out "${out}" \
    --accelerator gpu \
    --devices "${SLURM_NTASKS_PER_NODE}" \
    --num-nodes "${SLURM_NNODES}" \
    --no-progress \
    "$@"
