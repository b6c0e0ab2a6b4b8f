#!/bin/sh
# The README's main job: train a pixel-space DDPM on the bundled faces (32x32) with
# train_unconditional.py, then sample an 8x8 grid from the saved DDPMPipeline.
# Knobs (environment): NPROC>1 runs under paddle.distributed.launch; other flags pass through "$@".
set -e
cd "$(dirname "$0")/.."
python -m common.demo_data > /dev/null  # builds data/demo/ once (real faces from scikit-image)

TRAIN_DATA_DIR=${TRAIN_DATA_DIR:-data/demo/faces}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/ddpm_faces}
RESOLUTION=${RESOLUTION:-32}
BATCH_SIZE=${BATCH_SIZE:-32}
MAX_TRAIN_STEPS=${MAX_TRAIN_STEPS:-400}
LEARNING_RATE=${LEARNING_RATE:-5e-4}
GRID_SIZE=${GRID_SIZE:-8}
NPROC=${NPROC:-1}

LAUNCH="python"
if [ "$NPROC" -gt 1 ]; then
  LAUNCH="python -m paddle.distributed.launch --nproc_per_node $NPROC --log_dir $OUTPUT_DIR/launch_logs"
fi

$LAUNCH ddpm_tutorial/train_unconditional.py \
  --train_data_dir "$TRAIN_DATA_DIR" \
  --output_dir "$OUTPUT_DIR" \
  --resolution "$RESOLUTION" \
  --center_crop \
  --random_flip \
  --train_batch_size "$BATCH_SIZE" \
  --max_train_steps "$MAX_TRAIN_STEPS" \
  --learning_rate "$LEARNING_RATE" \
  --lr_scheduler cosine \
  --lr_warmup_steps 50 \
  --use_ema \
  --logging_steps 25 \
  --checkpointing_steps 200 \
  --save_images_steps 200 \
  "$@"

python ddpm_tutorial/sample.py --pipeline_dir "$OUTPUT_DIR" --grid_size "$GRID_SIZE" --output "$OUTPUT_DIR/grid.png"
