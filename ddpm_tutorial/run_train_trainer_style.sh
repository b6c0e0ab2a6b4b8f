#!/bin/sh
# The tutorial's compact style (Unet + GaussianDiffusion + Trainer) on the bundled faces.
# Writes OUTPUT_DIR/sample-N.png and model-N.pdparams every SAVE_STEPS steps (the tutorial's
# results_folder layout), at the end model-last.pdparams plus the DDPMPipeline folder
# OUTPUT_DIR/pipeline, and scores that pipeline with the face judge.
# Knobs (environment; the names every launcher uses, see the top README): NPROC OUTPUT_DIR MAX_STEPS
# BATCH_SIZE LEARNING_RATE SAVE_STEPS LOGGING_STEPS NUM_WORKERS SEED RESOLUTION NUM_INFERENCE_STEPS,
# and this launcher's FOLDER OBJECTIVE MIN_SNR_GAMMA NUM_EVAL_IMAGES; extra arguments go to
# train_trainer_style.py ("$@"). Runs from the repo root (relative paths are taken from there).
set -e
cd "$(dirname "$0")/.."
. common/launch.sh  # resolve_amp, resolve_launch: the knobs every launcher shares
python -m common.demo_data > /dev/null

NPROC=${NPROC:-1}
FOLDER=${FOLDER:-data/demo/faces}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/ddpm_trainer}
RESOLUTION=${RESOLUTION:-32}
MAX_STEPS=${MAX_STEPS:-1200}
BATCH_SIZE=${BATCH_SIZE:-8}
LEARNING_RATE=${LEARNING_RATE:-1e-3}
SAVE_STEPS=${SAVE_STEPS:-400}
LOGGING_STEPS=${LOGGING_STEPS:-10}
NUM_WORKERS=${NUM_WORKERS:-0}
SEED=${SEED:-0}
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-50}
OBJECTIVE=${OBJECTIVE:-pred_x0}
# x0 loss weight min(SNR, MIN_SNR_GAMMA) (lucidrains' min_snr_loss_weight): with 0.1 the weight is flat
# except at the noisiest levels, and 1200 CPU steps sample face-like images; the reference's plain
# SNR weight (what --objective pred_x0 alone gives: the eps loss in disguise) samples textures there
MIN_SNR_GAMMA=${MIN_SNR_GAMMA:-0.1}
NUM_EVAL_IMAGES=${NUM_EVAL_IMAGES:-64}

resolve_launch

$LAUNCH ddpm_tutorial/train_trainer_style.py \
  --folder "$FOLDER" \
  --results_folder "$OUTPUT_DIR" \
  --image_size "$RESOLUTION" \
  --dim 16 \
  --dim_mults 1 2 4 \
  --attention_levels \
  --objective "$OBJECTIVE" \
  --min_snr_loss_weight \
  --min_snr_gamma "$MIN_SNR_GAMMA" \
  --sampling_timesteps "$NUM_INFERENCE_STEPS" \
  --train_batch_size "$BATCH_SIZE" \
  --train_lr "$LEARNING_RATE" \
  --train_num_steps "$MAX_STEPS" \
  --ema_decay 0.995 \
  --save_and_sample_every "$SAVE_STEPS" \
  --logging_steps "$LOGGING_STEPS" \
  --num_workers "$NUM_WORKERS" \
  --seed "$SEED" \
  "$@"
# score the exported DDPMPipeline (EMA weights): face rate of 64 samples (real faces: 0.84)
python -m common.demo_eval --ddpm_pipeline "$OUTPUT_DIR/pipeline" --num_inference_steps "$NUM_INFERENCE_STEPS" --num_images "$NUM_EVAL_IMAGES"
