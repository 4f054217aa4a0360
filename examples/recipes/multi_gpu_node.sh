#!/usr/bin/env bash
# One node, several GPUs: `matsciml train` with DDP, Lightning starting one process per GPU.
#
#   bash examples/recipes/multi_gpu_node.sh                 # 4 GPUs, the defaults below
#   GPUS=8 DATASET=data/oc20.lmdb bash examples/recipes/multi_gpu_node.sh
#
# Run it once, on the node: Lightning starts the other GPUS-1 processes itself
# (each re-runs this same command line), and rank 0 writes the run directory
# runs/$RUN_NAME that they all share. The name is fixed here, before the
# launch, so every process agrees on it.
#
# Global batch = data.batch_size x GPUS x accumulate_grad_batches (one node);
# see examples/recipes/README.md.
set -euo pipefail

GPUS=${GPUS:-4}                         # trainer.devices: processes (and GPUs) on this node
MODEL=${MODEL:-gala}                    # any installed model; DGL-based ones (egnn, megnet) need DGL's CUDA build
TASK=${TASK:-s2ef}
DATASET=${DATASET:-data/train.lmdb}     # a registered dataset name or dataset files
BATCH_SIZE=${BATCH_SIZE:-8}             # structures per batch, per GPU
WORKERS=${WORKERS:-4}                   # data.num_workers: loader processes per GPU process (cores / GPUS - 1 is a fair start)
RUN_NAME=${RUN_NAME:-$MODEL-$TASK-$(date +%Y%m%d-%H%M%S)}

args=(
  --model "$MODEL" --task "$TASK" --dataset "$DATASET"
  trainer.accelerator=gpu
  trainer.devices="$GPUS"
  trainer.strategy=ddp
  data.batch_size="$BATCH_SIZE"
  data.num_workers="$WORKERS"
  run.name="$RUN_NAME"
  # Knobs: uncomment to use.
  # trainer.precision=bf16-mixed          # bf16 autocast (Ampere, Hopper and newer); 16-mixed on older GPUs
  # trainer.accumulate_grad_batches=2     # sum gradients of 2 batches per optimiser step: doubles the global batch
  # trainer.max_epochs=100
)

matsciml train "${args[@]}" "$@"
