#!/bin/sh
# The README's main job: train a pixel-space DDPM on the bundled faces (32x32) with
# train_unconditional.py, then sample an 8x8 grid from the saved DDPMPipeline and score it.
#
# The defaults are sized for a 2-core CPU (about 9 minutes on idle cores; measured face rate 0.61 of
# 64 samples, real faces 0.84): two processes (NPROC=2; for this small UNet two single-threaded
# processes train about 2x faster than one process with two threads), batch 8 per process, 2000
# steps, and these choices, each measured with the face judge (ddpm_tutorial/README.md has the table):
#  * GRAYSCALE=1: the faces are grayscale, so the UNet has one channel in and out (--grayscale);
#    with three channels the same budget goes into keeping R = G = B (0.20 -> 0.39 at 2000 1-process steps)
#  * a 4-level UNet (16/32/64/128 channels, one ResNet layer per level, attention only in the
#    middle block, 2.49M parameters): the 4x4 level gives every pixel the whole face as context
#    (0.39 -> 0.63 against 16/32/64)
#  * the x0 objective (--prediction_type sample): it learns the face layout first; epsilon and v
#    samples stay noisy or lose the layout at this budget (0.17 and 0.28 against 0.39)
#  * SAMPLER=ddpm with 100 steps: ancestral DDPM on a respaced grid (what diffusers'
#    train_unconditional samples with) beats deterministic DDIM for this under-trained model
#    (0.61 against 0.55 for DDIM 50 steps on the same pipeline)
# On a GPU use the tutorial's settings instead, e.g. BLOCK_OUT_CHANNELS="128 128 256 256 512 512"
# ATTENTION_LEVELS=4 PREDICTION_TYPE=epsilon GRAYSCALE=0 BATCH_SIZE=16 MAX_STEPS=50000.
# Knobs (environment; the names every launcher uses, see the top README): NPROC (>1 runs under
# paddle.distributed.launch) OUTPUT_DIR MAX_STEPS BATCH_SIZE (per process) LEARNING_RATE WARMUP_STEPS
# SAVE_STEPS LOGGING_STEPS IMAGE_LOGGING_STEPS NUM_WORKERS SEED RESOLUTION USE_AMP (0/1) AMP_DTYPE
# NUM_INFERENCE_STEPS, and this launcher's TRAIN_DATA_DIR BLOCK_OUT_CHANNELS ATTENTION_LEVELS
# PREDICTION_TYPE GRAYSCALE (0/1) SAMPLER (ddpm/ddim) GRID_SIZE (the grid and the judge use GRID_SIZE^2
# samples); other flags pass through "$@" to train_unconditional.py.
set -e
cd "$(dirname "$0")/.."
. common/launch.sh  # resolve_amp, resolve_launch: the knobs every launcher shares
python -m common.demo_data > /dev/null  # builds data/demo/ once (real faces from scikit-image)

TRAIN_DATA_DIR=${TRAIN_DATA_DIR:-data/demo/faces}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/ddpm_faces}
RESOLUTION=${RESOLUTION:-32}
BATCH_SIZE=${BATCH_SIZE:-8}
MAX_STEPS=${MAX_STEPS:-2000}
LEARNING_RATE=${LEARNING_RATE:-1e-3}
WARMUP_STEPS=${WARMUP_STEPS:-50}
SAVE_STEPS=${SAVE_STEPS:-500}
LOGGING_STEPS=${LOGGING_STEPS:-50}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-1000}   # sample grid every N steps in $OUTPUT_DIR/samples
NUM_WORKERS=${NUM_WORKERS:-0}
SEED=${SEED:-0}
USE_AMP=${USE_AMP:-0}              # 1: mixed precision (GPU) in AMP_DTYPE
AMP_DTYPE=${AMP_DTYPE:-bf16}       # bf16 or fp16
BLOCK_OUT_CHANNELS=${BLOCK_OUT_CHANNELS:-16 32 64 128}
ATTENTION_LEVELS=${ATTENTION_LEVELS:-}
PREDICTION_TYPE=${PREDICTION_TYPE:-sample}
GRAYSCALE=${GRAYSCALE:-1}          # 1: one-channel UNet on the luma (the bundled faces are grayscale); 0: RGB
SAMPLER=${SAMPLER:-ddpm}           # ddpm (ancestral) or ddim: the grids', sample.py's and the judge's sampler
GRID_SIZE=${GRID_SIZE:-8}
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-100}
NPROC=${NPROC:-2}

resolve_amp
resolve_launch
case "$GRAYSCALE" in
  1) GRAYSCALE_FLAG=--grayscale ;;
  0) GRAYSCALE_FLAG= ;;
  *) echo "GRAYSCALE must be 0 or 1, got '$GRAYSCALE'" >&2; exit 2 ;;
esac

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
  $GRAYSCALE_FLAG \
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
  --ddpm_sampler "$SAMPLER" \
  "$@"

# sample GRID_SIZE x GRID_SIZE faces from the saved pipeline (as `python ddpm_tutorial/sample.py --pipeline_dir "$OUTPUT_DIR"
# --scheduler "$SAMPLER" --num_inference_steps "$NUM_INFERENCE_STEPS"` draws them), save them as grid.png and score them: the
# fraction in which a face detector trained elsewhere finds a face (real faces: 0.84)
python -m common.demo_eval --ddpm_pipeline "$OUTPUT_DIR" --scheduler "$SAMPLER" --num_inference_steps "$NUM_INFERENCE_STEPS" \
  --num_images $((GRID_SIZE * GRID_SIZE)) --save_grid "$OUTPUT_DIR/grid.png"
