#!/bin/sh
# DiT with the plain training loop (facebookresearch/DiT train.py / fast-DiT style; upstream recipe:
# DiT-XL/2, global batch 256 = 32 per process x 8, lr 1e-4 constant, EMA).  3_run_train_sit_notrainer.sh
# runs this file with the SiT config and transport flags.
# Single node:  sh class_conditional/1_run_train_dit_notrainer.sh             (NPROC processes, from any folder)
# Multi-node:   NNODES=2 MASTER=10.0.0.1:8080 sh class_conditional/1_run_train_dit_notrainer.sh   on every node
# Relative paths are taken from the repo root.  Extra flags pass through ("$@"), e.g. --resume_from_checkpoint latest.
set -e
cd "$(dirname "$0")/.."
. common/launch.sh  # resolve_amp, resolve_launch: the knobs every launcher shares

NPROC=${NPROC:-8}                  # processes per node
NNODES=${NNODES:-1}
MASTER=${MASTER:-}                 # ip:port of node 0, needed when NNODES > 1
CONFIG_FILE=${CONFIG_FILE:-class_conditional/config/DiT_XL_patch2.json}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/DiT_XL_patch2_notrainer}
FEATURE_PATH=${FEATURE_PATH:-data/fastdit_imagenet256}
BATCH_SIZE=${BATCH_SIZE:-32}       # per process: --global_batch_size = BATCH_SIZE x NPROC x NNODES
LEARNING_RATE=${LEARNING_RATE:-1e-4}
MAX_STEPS=${MAX_STEPS:-7000000}
LOGGING_STEPS=${LOGGING_STEPS:-50}
SAVE_STEPS=${SAVE_STEPS:-5000}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-0}   # > 0: a class grid every N steps (needs VAE)
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-25}  # of the grid
GUIDANCE_SCALE=${GUIDANCE_SCALE:-4.0}           # of the grid
NUM_WORKERS=${NUM_WORKERS:-8}      # DataLoader workers per process (= per GPU): 2x an H100 needs ~0.2 (XL/2), ~3.1 (S/2) (bench/README.md "Readers")
SEED=${SEED:-0}
VAE=${VAE:-auto}                   # decodes the grids; upstream: stabilityai/sd-vae-ft-mse
RECOMPUTE=${RECOMPUTE:-False}
ENABLE_XFORMERS=${ENABLE_XFORMERS:-False}

resolve_launch
$LAUNCH class_conditional/train_image_generation_notrainer.py \
    --config_file "$CONFIG_FILE" \
    --feature_path "$FEATURE_PATH" \
    --results_dir "$OUTPUT_DIR" \
    --global_batch_size "$((BATCH_SIZE * NPROC * NNODES))" \
    --learning_rate "$LEARNING_RATE" \
    --max_steps "$MAX_STEPS" \
    --log_every "$LOGGING_STEPS" \
    --ckpt_every "$SAVE_STEPS" \
    --image_logging_steps "$IMAGE_LOGGING_STEPS" \
    --num_inference_steps "$NUM_INFERENCE_STEPS" \
    --cfg_scale "$GUIDANCE_SCALE" \
    --vae_name_or_path "$VAE" \
    --num_workers "$NUM_WORKERS" \
    --global_seed "$SEED" \
    --recompute "$RECOMPUTE" \
    --enable_xformers_memory_efficient_attention "$ENABLE_XFORMERS" \
    "$@"
