#!/usr/bin/env bash
# acf-index on Slurm: an array job of N tasks, each indexing its shard of the archive into
# one index on a shared file system.
#
#   sbatch examples/slurm/index-array.sh               # submit (edit paths and N first)
#   squeue -u "$USER" -n acf-index                     # watch the N tasks
#   tail -n 1 logs/acf-index-*.jsonl                   # each task's JSON summary line
#   acf-index info /shared/acf-index                   # what the index holds now
#
# Task I runs `--shard I/N`: the shards are disjoint by a hash of each scene's path, so the N
# tasks, started together, index every scene exactly once. Slurm's SIGTERM at the time limit
# or on `scancel` makes a task exit 130 having published nothing partial; resubmitting
# (or `sbatch --array=I`) continues. All tasks of one run must use the same N.
#SBATCH --job-name=acf-index
#SBATCH --array=0-7                 # N = 8 tasks: keep in step with SHARDS below
#SBATCH --cpus-per-task=4
#SBATCH --mem=6G
#SBATCH --time=04:00:00
#SBATCH --output=logs/acf-index-%a.jsonl
#SBATCH --signal=TERM@60            # a minute's notice before the time limit
set -euo pipefail
SHARDS=8
export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
export ACF_MODEL=${ACF_MODEL:-/opt/acf-index/models/default}
exec acf-index --log-format json index /shared/archive --out /shared/acf-index \
    --include '*.tif' --prune --shard "$SLURM_ARRAY_TASK_ID/$SHARDS"
