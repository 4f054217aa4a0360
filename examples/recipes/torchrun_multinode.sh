#!/usr/bin/env bash
# Several nodes without SLURM's help: one `torchrun` per node starts one
# process per GPU, and the nodes meet at a rendezvous on the head node.
#
# Run the same command on every node (ssh, pdsh, your scheduler), with the
# same HEAD and RUN_NAME everywhere:
#
#   HEAD=node001 RUN_NAME=egnn-oc20-try3 bash examples/recipes/torchrun_multinode.sh
#
# HEAD is a host name or address of one of the nodes that the others can
# reach on port $PORT. RUN_NAME has no default built from the clock, because
# each node computes it on its own and all must agree on the run directory
# runs/$RUN_NAME (rank 0 writes it; on a shared file system the others see it).
#
# torchrun starts `python -m matsciml train ...` (core/matsciml/__main__.py),
# so the Python that runs torchrun must be the environment matsciml is in.
# Lightning reads the ranks torchrun sets; trainer.num_nodes and
# trainer.devices must equal --nnodes and --nproc-per-node.
#
# Global batch = data.batch_size x GPUS_PER_NODE x NODES x accumulate_grad_batches;
# see examples/recipes/README.md.
set -euo pipefail

NODES=${NODES:-2}                       # --nnodes = trainer.num_nodes
GPUS_PER_NODE=${GPUS_PER_NODE:-4}       # --nproc-per-node = trainer.devices
HEAD=${HEAD:?set HEAD to the host name or address of the node that hosts the rendezvous}
PORT=${PORT:-29500}
RUN_NAME=${RUN_NAME:?set RUN_NAME, the same on every node (e.g. a job id)}
MODEL=${MODEL:-gala}                    # any installed model; DGL-based ones (egnn, megnet) need DGL's CUDA build
TASK=${TASK:-s2ef}
DATASET=${DATASET:-data/train.lmdb}
BATCH_SIZE=${BATCH_SIZE:-8}             # structures per batch, per GPU
WORKERS=${WORKERS:-4}                   # data.num_workers: loader processes per GPU process

args=(
  --model "$MODEL" --task "$TASK" --dataset "$DATASET"
  trainer.accelerator=gpu
  trainer.num_nodes="$NODES"
  trainer.devices="$GPUS_PER_NODE"
  trainer.strategy=ddp
  data.batch_size="$BATCH_SIZE"
  data.num_workers="$WORKERS"
  run.name="$RUN_NAME"
  # Knobs: uncomment to use.
  # trainer.precision=bf16-mixed          # bf16 autocast (Ampere, Hopper and newer); 16-mixed on older GPUs
  # trainer.accumulate_grad_batches=2     # sum gradients of 2 batches per optimiser step: doubles the global batch
  # trainer.max_epochs=100
)

torchrun --nnodes="$NODES" --nproc-per-node="$GPUS_PER_NODE" \
  --rdzv-backend=c10d --rdzv-endpoint="$HEAD:$PORT" --rdzv-id="$RUN_NAME" \
  -m matsciml train "${args[@]}" "$@"
