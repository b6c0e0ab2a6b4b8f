#!/bin/sh
# The README's main job: train a pixel-space DDPM on the bundled faces (32x32) with
# train_unconditional.py, then sample an 8x8 grid from the saved DDPMPipeline.
#
# The defaults are sized for a 2-core CPU (about 9 minutes): two processes (NPROC=2; for this small
# UNet two single-threaded processes train 1.9x faster than one process with two threads:
# 38 vs 18-21 images/s), a 0.64M-parameter UNet (16/32/64 channels, no attention), batch 8 per
# process, 1000 steps, and the x0 objective
# (--prediction_type sample). With so few steps an epsilon-predicting UNet still samples noise
# (its x0 estimate at mid noise levels is worse than the mean face), while the x0 objective
# learns the coarse layout first and samples smooth, face-like blobs. On a GPU use the
# tutorial's settings instead, e.g. BLOCK_OUT_CHANNELS="128 128 256 256 512 512"
# ATTENTION_LEVELS=4 PREDICTION_TYPE=epsilon BATCH_SIZE=16 MAX_STEPS=50000.
# Knobs (environment; the names every launcher uses, see the top README): NPROC (>1 runs under
# paddle.distributed.launch) OUTPUT_DIR MAX_STEPS BATCH_SIZE (per process) LEARNING_RATE WARMUP_STEPS
# SAVE_STEPS LOGGING_STEPS IMAGE_LOGGING_STEPS NUM_WORKERS SEED RESOLUTION USE_AMP (0/1) AMP_DTYPE
# NUM_INFERENCE_STEPS, and this launcher's TRAIN_DATA_DIR BLOCK_OUT_CHANNELS ATTENTION_LEVELS
# PREDICTION_TYPE GRID_SIZE NUM_EVAL_IMAGES; other flags pass through "$@" to train_unconditional.py.
set -e
cd "$(dirname "$0")/.."
. common/launch.sh  # resolve_amp, resolve_launch: the knobs every launcher shares
python -m common.demo_data > /dev/null  # builds data/demo/ once (real faces from scikit-image)

TRAIN_DATA_DIR=${TRAIN_DATA_DIR:-data/demo/faces}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/ddpm_faces}
RESOLUTION=${RESOLUTION:-32}
BATCH_SIZE=${BATCH_SIZE:-8}
MAX_STEPS=${MAX_STEPS:-1000}
LEARNING_RATE=${LEARNING_RATE:-1e-3}
WARMUP_STEPS=${WARMUP_STEPS:-50}
SAVE_STEPS=${SAVE_STEPS:-500}
LOGGING_STEPS=${LOGGING_STEPS:-50}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-500}   # sample grid every N steps in $OUTPUT_DIR/samples
NUM_WORKERS=${NUM_WORKERS:-0}
SEED=${SEED:-0}
USE_AMP=${USE_AMP:-0}              # 1: mixed precision (GPU) in AMP_DTYPE
AMP_DTYPE=${AMP_DTYPE:-bf16}       # bf16 or fp16
BLOCK_OUT_CHANNELS=${BLOCK_OUT_CHANNELS:-16 32 64}
ATTENTION_LEVELS=${ATTENTION_LEVELS:-}
PREDICTION_TYPE=${PREDICTION_TYPE:-sample}
GRID_SIZE=${GRID_SIZE:-8}
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-25}
NPROC=${NPROC:-2}
NUM_EVAL_IMAGES=${NUM_EVAL_IMAGES:-64}

resolve_amp
resolve_launch

$LAUNCH ddpm_tutorial/train_unconditional.py \
  --train_data_dir "$TRAIN_DATA_DIR" \
  --output_dir "$OUTPUT_DIR" \
  --resolution "$RESOLUTION" \
  --center_crop \
  --random_flip \
  --train_batch_size "$BATCH_SIZE" \
  --block_out_channels $BLOCK_OUT_CHANNELS \
  --attention_levels $ATTENTION_LEVELS \
  --layers_per_block 1 \
  --prediction_type "$PREDICTION_TYPE" \
  --max_train_steps "$MAX_STEPS" \
  --learning_rate "$LEARNING_RATE" \
  --lr_scheduler cosine \
  --lr_warmup_steps "$WARMUP_STEPS" \
  --mixed_precision "$MIXED_PRECISION" \
  --use_ema \
  --logging_steps "$LOGGING_STEPS" \
  --checkpointing_steps "$SAVE_STEPS" \
  --save_images_steps "$IMAGE_LOGGING_STEPS" \
  --dataloader_num_workers "$NUM_WORKERS" \
  --seed "$SEED" \
  --ddpm_num_inference_steps "$NUM_INFERENCE_STEPS" \
  "$@"

python ddpm_tutorial/sample.py --pipeline_dir "$OUTPUT_DIR" --grid_size "$GRID_SIZE" --num_inference_steps "$NUM_INFERENCE_STEPS" --output "$OUTPUT_DIR/grid.png"
# score: how many of 64 samples a face detector trained elsewhere finds a face in (real faces: 0.84)
python -m common.demo_eval --ddpm_pipeline "$OUTPUT_DIR" --num_inference_steps "$NUM_INFERENCE_STEPS" --num_images "$NUM_EVAL_IMAGES"
