#!/bin/sh
# SiT with the plain training loop (SiT-XL/2; Linear path, velocity prediction by default):
# 1_run_train_dit_notrainer.sh with the SiT config, its own output folder and the transport flags.
# Every knob of 1_run_train_dit_notrainer.sh applies (NPROC, NNODES, MASTER, BATCH_SIZE, MAX_STEPS, ...), plus
# PATH_TYPE (Linear | GVP | VP), PREDICTION (velocity | score | noise), LOSS_WEIGHT (None | velocity | likelihood).
# Extra flags pass through ("$@"), e.g. --train_eps 1e-3 --sampling_method heun.
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
export CONFIG_FILE="${CONFIG_FILE:-class_conditional/config/SiT_XL_patch2.json}"
export OUTPUT_DIR="${OUTPUT_DIR:-outputs/SiT_XL_patch2_notrainer}"
exec sh "$HERE/1_run_train_dit_notrainer.sh" \
    --path_type "${PATH_TYPE:-Linear}" \
    --prediction "${PREDICTION:-velocity}" \
    --loss_weight "${LOSS_WEIGHT:-None}" \
    "$@"
