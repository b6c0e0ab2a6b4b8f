#!/bin/sh
# The CPU demo (about 10 min on 2 cores, plus 5 min for the demo VAE the first time): encode the
# bundled handwritten digits (10 classes, 32x32) with the demo VAE (trained first by
# autoencoder/run_train_vae_demo.sh when outputs/vae_demo/final is missing), train a small DiT with
# the plain loop (1_run_train_dit_notrainer.sh), export it to a DiTPipeline, write a sample grid of
# all 10 classes to $OUTPUT_DIR/dit_digits_grid.png and score 80 samples with common.demo_eval.
# The demo config sets "downscale_freq_shift": 1 (the timestep embedding ppdiffusers'
# Transformer2DModel hard-codes) so that the DiTPipeline export is exact; the paper configs use
# the official DiT embedding (shift 0).
# Defaults for a 2-core CPU: two processes (NPROC=2; 246 vs 161 images/s for one process), a
# 1.4M-parameter DiT (hidden 128, depth 4, patch 2 on 4x8x8 latents), batch 32 per process (64 in
# all), learning rate 2e-3 (the tiny DiT tolerates it; 5e-4 left the loss twice as high after 1000
# steps), 1800 steps, and no flip augmentation (RANDOM_FLIP=False): a mirrored 7 is not a 7, and
# with flips only the symmetric digits 0, 1 and 8 came out readable after 1800 steps.
# Knobs (environment) below; extra flags pass through to the training script ("$@").
set -e
cd "$(dirname "$0")/.."
ROOT=$(pwd)
python -m common.demo_data > /dev/null  # builds data/demo/ once

OUTPUT_DIR=${OUTPUT_DIR:-outputs/class_conditional_demo}
FEATURES=${FEATURES:-$OUTPUT_DIR/features}
CONFIG_FILE=${CONFIG_FILE:-class_conditional/config/DiT_demo.json}
VAE=${VAE:-auto}                   # auto = outputs/vae_demo/final (trained below when missing)
RESOLUTION=${RESOLUTION:-32}       # image side; DiT_demo.json expects 32 / 4 (the demo VAE's factor) = 8 latent pixels
MAX_STEPS=${MAX_STEPS:-1800}
BATCH_SIZE=${BATCH_SIZE:-32}       # per process
LEARNING_RATE=${LEARNING_RATE:-2e-3}
LOGGING_STEPS=${LOGGING_STEPS:-50}
SAVE_STEPS=${SAVE_STEPS:-600}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-0}   # > 0: also a class grid every N steps under $OUTPUT_DIR/dit/samples
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-25}
GUIDANCE_SCALE=${GUIDANCE_SCALE:-4.0}
NPROC=${NPROC:-2}
SEED=${SEED:-0}
RANDOM_FLIP=${RANDOM_FLIP:-False}
NUM_IMAGES_PER_CLASS=${NUM_IMAGES_PER_CLASS:-4}

# 0. the demo VAE (about 5 min, once)
[ "$VAE" != auto ] || [ -f "$ROOT/outputs/vae_demo/final/config.json" ] || sh "$ROOT/autoencoder/run_train_vae_demo.sh"

# 1. features (image + flip latents); re-encoded only when the VAE changed (e.g. the VAE demo finished)
python class_conditional/extract_features.py --data_path data/demo/digits --feature_path "$FEATURES" \
  --image_size "$RESOLUTION" --vae_name_or_path "$VAE" --batch_size 64

# 2. train (plain loop; EMA weights end up in $OUTPUT_DIR/dit/final)
NPROC="$NPROC" NNODES=1 CONFIG_FILE="$CONFIG_FILE" FEATURE_PATH="$FEATURES" OUTPUT_DIR="$OUTPUT_DIR/dit" BATCH_SIZE="$BATCH_SIZE" \
  LEARNING_RATE="$LEARNING_RATE" MAX_STEPS="$MAX_STEPS" LOGGING_STEPS="$LOGGING_STEPS" SAVE_STEPS="$SAVE_STEPS" \
  IMAGE_LOGGING_STEPS="$IMAGE_LOGGING_STEPS" NUM_INFERENCE_STEPS="$NUM_INFERENCE_STEPS" GUIDANCE_SCALE="$GUIDANCE_SCALE" \
  NUM_WORKERS=0 SEED="$SEED" VAE="$VAE" \
  sh class_conditional/1_run_train_dit_notrainer.sh --random_flip "$RANDOM_FLIP" --save_total_limit 2 "$@"

# 3. export to a DiTPipeline and sample every class with DDIM
python class_conditional/tools/convert_dit_to_ppdiffusers.py --model_path "$OUTPUT_DIR/dit/final" --output_dir "$OUTPUT_DIR/dit_pipeline" \
  --vae_name_or_path "$VAE" --id2label_file class_conditional/tools/digits_id2label.json
python class_conditional/infer_demo_dit.py --pipeline "$OUTPUT_DIR/dit_pipeline" --class_labels 0 1 2 3 4 5 6 7 8 9 \
  --num_images_per_class "$NUM_IMAGES_PER_CLASS" --num_inference_steps "$NUM_INFERENCE_STEPS" --guidance_scale "$GUIDANCE_SCALE" \
  --output "$OUTPUT_DIR/dit_digits_grid.png"
echo "sample grid: $OUTPUT_DIR/dit_digits_grid.png"
# 4. score: a digit classifier trained on the real digits reads 8 samples of every class
python -m common.demo_eval --dit_pipeline "$OUTPUT_DIR/dit_pipeline" --num_inference_steps "$NUM_INFERENCE_STEPS" --guidance_scale "$GUIDANCE_SCALE"
