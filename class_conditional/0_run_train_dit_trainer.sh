#!/bin/sh
# DiT with the paddlenlp Trainer (upstream recipe: DiT-XL/2 on fast-DiT ImageNet-256 features,
# batch 32 per process, lr 1e-4 constant, EMA).  2_run_train_sit_trainer.sh runs this file with
# the SiT config and transport flags.
# Single node:  sh class_conditional/0_run_train_dit_trainer.sh               (NPROC processes, from any folder)
# Multi-node:   NNODES=2 MASTER=10.0.0.1:8080 sh class_conditional/0_run_train_dit_trainer.sh   on every node
# Relative paths are taken from the repo root.  Extra flags pass through ("$@"), e.g. --resume_from_checkpoint latest.
# On GPUs as upstream: USE_AMP=1 (AMP_DTYPE=bf16, or fp16) RECOMPUTE=True ENABLE_XFORMERS=True.
set -e
cd "$(dirname "$0")/.."
. common/launch.sh  # resolve_amp, resolve_launch: the knobs every launcher shares

NPROC=${NPROC:-8}                  # processes per node
NNODES=${NNODES:-1}
MASTER=${MASTER:-}                 # ip:port of node 0, needed when NNODES > 1
CONFIG_FILE=${CONFIG_FILE:-class_conditional/config/DiT_XL_patch2.json}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/DiT_XL_patch2_trainer}
FEATURE_PATH=${FEATURE_PATH:-data/fastdit_imagenet256}
BATCH_SIZE=${BATCH_SIZE:-32}       # per process
LEARNING_RATE=${LEARNING_RATE:-1e-4}
WARMUP_STEPS=${WARMUP_STEPS:-0}
MAX_STEPS=${MAX_STEPS:-7000000}
LOGGING_STEPS=${LOGGING_STEPS:-50}
SAVE_STEPS=${SAVE_STEPS:-5000}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-0}   # > 0: a class grid every N steps (needs VAE)
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-25}  # of the grid
GUIDANCE_SCALE=${GUIDANCE_SCALE:-4.0}           # of the grid
NUM_WORKERS=${NUM_WORKERS:-8}      # DataLoader workers per process (= per GPU): 2x an H100 needs ~0.2 (XL/2), ~3.1 (S/2) (bench/README.md "Readers")
SEED=${SEED:-0}
VAE=${VAE:-auto}                   # decodes the grids; upstream: stabilityai/sd-vae-ft-mse
USE_AMP=${USE_AMP:-0}              # 1: mixed precision (GPU) in AMP_DTYPE
AMP_DTYPE=${AMP_DTYPE:-bf16}       # bf16 or fp16
FP16_OPT_LEVEL=${FP16_OPT_LEVEL:-O1}
RECOMPUTE=${RECOMPUTE:-False}
ENABLE_XFORMERS=${ENABLE_XFORMERS:-False}

resolve_amp
resolve_launch
$LAUNCH class_conditional/train_image_generation_trainer.py \
    --do_train \
    --config_file "$CONFIG_FILE" \
    --feature_path "$FEATURE_PATH" \
    --output_dir "$OUTPUT_DIR" \
    --per_device_train_batch_size "$BATCH_SIZE" \
    --gradient_accumulation_steps 1 \
    --learning_rate "$LEARNING_RATE" \
    --weight_decay 0.0 \
    --lr_scheduler_type constant \
    --warmup_steps "$WARMUP_STEPS" \
    --max_steps "$MAX_STEPS" \
    --max_grad_norm -1 \
    --use_ema True \
    --logging_dir "$OUTPUT_DIR/tb_log" \
    --logging_steps "$LOGGING_STEPS" \
    --save_steps "$SAVE_STEPS" \
    --save_total_limit 50 \
    --image_logging_steps "$IMAGE_LOGGING_STEPS" \
    --num_inference_steps "$NUM_INFERENCE_STEPS" \
    --cfg_scale "$GUIDANCE_SCALE" \
    --vae_name_or_path "$VAE" \
    --dataloader_num_workers "$NUM_WORKERS" \
    --seed "$SEED" \
    --bf16 "$BF16" \
    --fp16 "$FP16" \
    --fp16_opt_level "$FP16_OPT_LEVEL" \
    --recompute "$RECOMPUTE" \
    --enable_xformers_memory_efficient_attention "$ENABLE_XFORMERS" \
    --disable_tqdm True \
    "$@"
