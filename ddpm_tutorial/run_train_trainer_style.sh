#!/bin/sh
# The tutorial's compact style (Unet + GaussianDiffusion + Trainer) on the bundled faces.
# Writes results_folder/sample-N.png and model-N.pdparams every SAVE_EVERY steps.
set -e
cd "$(dirname "$0")/.."
python -m common.demo_data > /dev/null

FOLDER=${FOLDER:-data/demo/faces}
RESULTS_FOLDER=${RESULTS_FOLDER:-outputs/ddpm_trainer}
IMAGE_SIZE=${IMAGE_SIZE:-32}
TRAIN_NUM_STEPS=${TRAIN_NUM_STEPS:-1200}
SAVE_EVERY=${SAVE_EVERY:-400}
OBJECTIVE=${OBJECTIVE:-pred_x0}
NPROC=${NPROC:-1}

LAUNCH="python"
if [ "$NPROC" -gt 1 ]; then
  LAUNCH="python -m paddle.distributed.launch --nproc_per_node $NPROC --log_dir $RESULTS_FOLDER/launch_logs"
fi

$LAUNCH ddpm_tutorial/train_trainer_style.py \
  --folder "$FOLDER" \
  --results_folder "$RESULTS_FOLDER" \
  --image_size "$IMAGE_SIZE" \
  --dim 16 \
  --dim_mults 1 2 4 \
  --attention_levels \
  --objective "$OBJECTIVE" \
  --train_batch_size 8 \
  --train_lr 1e-3 \
  --train_num_steps "$TRAIN_NUM_STEPS" \
  --ema_decay 0.995 \
  --save_and_sample_every "$SAVE_EVERY" \
  "$@"
