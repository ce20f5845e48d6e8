#!/bin/bash
# EmoNet shared multi-corpus model (recipes/emonet/ddp.yaml) with DDP over SLURM nodes: one task per GPU.
#
#   sbatch recipes/emonet/slurm_ddp.sh                              # 2 nodes x 4 GPUs, as set below
#   sbatch --nodes=1 recipes/emonet/slurm_ddp.sh                    # 1 node x 4 GPUs
#   sbatch recipes/emonet/slurm_ddp.sh --trainer.max_steps 3000     # extra arguments go to `sermodels train`
#
# Submit from the repository root (with .venv set up there). Lightning recognises the SLURM job (SLURM_NTASKS
# and friends) and takes rank, local rank, world size and the rendezvous address (first host of
# SLURM_NODELIST, a port derived from SLURM_JOB_ID) from it; `srun` starts every rank, Lightning starts none
# itself. It checks that --trainer.devices equals --ntasks-per-node and --trainer.num_nodes equals --nodes, so both
# come from SLURM's variables below. (A job named "bash" or "interactive" is treated as an interactive session
# and SLURM detection is switched off: keep a job name.)
# Global batch = data.batch_size (64 per rank in the recipe) x nodes x GPUs per node: see ddp.yaml.
#
#SBATCH --job-name=emonet-ddp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=5
#SBATCH --mem-per-cpu=4G
#SBATCH --time=12:00:00
#SBATCH --output=emonet-ddp-%j.out

set -euo pipefail

cd "${SLURM_SUBMIT_DIR}"
# The corpora (EMODB/, RAVDESS/, EMOVO/, URDU/) on a file system every node sees; the recipe's roots are replaced
# by this folder (SERDataModule reads $SERMODELS_DATA when roots is null).
export SERMODELS_DATA="${SERMODELS_DATA:-$(realpath -m ../shared/data)}"
if [[ ! -d "${SERMODELS_DATA}/EMODB" ]]; then
    echo "slurm_ddp.sh: no EMODB/ under SERMODELS_DATA=${SERMODELS_DATA}; export SERMODELS_DATA=<folder of the corpora>" >&2
    exit 2
fi
# Since SLURM 22.05 srun does not inherit --cpus-per-task from sbatch.
export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK}"
# One intra-op thread per rank; the data-loading workers get the task's other CPUs.
export OMP_NUM_THREADS=1
workers=$((SLURM_CPUS_PER_TASK - 1))

srun .venv/bin/sermodels train --config recipes/emonet/ddp.yaml \
    --trainer.num_nodes "${SLURM_NNODES}" \
    --trainer.devices "${SLURM_NTASKS_PER_NODE}" \
    --data.roots null \
    --data.num_workers "${workers}" \
    --export "runs/emonet_wrn.multi4_ddp.${SLURM_JOB_ID}" \
    "$@"
