#!/usr/bin/env bash
# Multi-process training with accelerate, on CPU: two processes (gloo backend) train one prompt model together.
#
#   bash examples/accelerate_cpu_demo.sh [WORK_DIR]
#
# It writes a random tiny CLIP and a generated image folder (examples/tiny_setup.py), then runs the `prompt-clip
# train` command line once with one process and once with two CPU processes started by `accelerate launch`. Each
# process loads the model, takes every other batch of each epoch (accelerate shards the batches), and the gradients
# are averaged across the processes (DistributedDataParallel) before every optimiser step; process 0 alone writes
# the checkpoints, the adapter and metrics.json. On GPUs the same command runs without ACCELERATE_USE_CPU, with
# --num_processes set to the number of GPUs (add --num_machines/--machine_rank/--main_process_ip for several
# machines).
#
# What to expect: the 2-process run takes 2 x 4 images per optimiser step, so it makes half the steps of the
# 1-process run per epoch (its loss and accuracy differ accordingly; use --batch-size 2 to keep 4 images per step).
# On CPU it is not faster: both processes share the same cores. The point is that the code path is the one of a
# multi-GPU job. Needs Pillow and open-clip-torch; about a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK_DIR="${1:-$(mktemp -d -t prompt_clip_accelerate_XXXX)}"
mkdir -p "$WORK_DIR"
python examples/tiny_setup.py --output "$WORK_DIR"

# One flag set for both runs: CoOp's recipe with 3 epochs, the image folder, no progress bars.
TRAIN_ARGS=(train --method coop --device cpu --clip "$WORK_DIR/clip" --image-folder "$WORK_DIR/images"
            --shots -1 --epochs 3 --batch-size 4 --lr 0.05 --no-progress)
# Each process runs torch with one thread: two processes on two cores, and no oversubscription.
export OMP_NUM_THREADS=1

echo "== one process"
python -m prompt_clip "${TRAIN_ARGS[@]}" --output-dir "$WORK_DIR/run-1proc"

echo "== two processes (accelerate launch, 2 CPU processes, gloo)"
# Why not `accelerate launch --cpu --num_processes 2`: in accelerate 1.x `--cpu` goes to the single-process launcher
# (several CPU processes need `--mpirun_hostfile` and an MPI installation), so it silently starts ONE process.
# `--multi_gpu` starts the processes through torch.distributed's launcher (as torchrun does); with the model on the
# CPU (`--device cpu`; ACCELERATE_USE_CPU=true says the same to accelerate itself) they form a CPU process group
# over gloo (accelerate's DistributedType.MULTI_CPU). `python -m accelerate.commands.launch` is the `accelerate
# launch` command, found without the console script; `--module` runs `python -m prompt_clip ...` in each process.
# (`torchrun --nproc_per_node 2 -m prompt_clip ...` does the same.)
ACCELERATE_USE_CPU=true python -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 \
    --mixed_precision no --dynamo_backend no --module prompt_clip "${TRAIN_ARGS[@]}" --output-dir "$WORK_DIR/run-2proc"

echo "== results"
python - "$WORK_DIR" <<'EOF'
import json
import sys
from pathlib import Path

steps = {}
for name in ("run-1proc", "run-2proc"):
    run = Path(sys.argv[1]) / name
    metrics = json.loads((run / "metrics.json").read_text())
    state = json.loads(next(run.glob("checkpoints/checkpoint-*/trainer_state.json")).read_text())
    steps[name] = state["optimizer_steps"]
    print(
        f"{name}: {steps[name]} optimiser steps, train loss {metrics['train_loss']:.4f}, test accuracy "
        f"{metrics['test_accuracy']:.2f}%, {metrics['train_images_per_s']:.1f} images/s, adapter {metrics['adapter']}"
    )
# Two processes share each epoch's batches: about half the optimiser steps. The same count means one process ran.
if steps["run-2proc"] >= steps["run-1proc"]:
    sys.exit("the accelerate run made as many steps as the single process: it did not run 2 processes")
print("ok: 2 processes trained one model together")
EOF
