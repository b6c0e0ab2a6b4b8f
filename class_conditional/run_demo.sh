#!/bin/sh
# The CPU demo (<= 10 min on 2 cores): encode the bundled handwritten digits (10 classes, 32x32)
# with the demo VAE (the autoencoder demo's trained VAE when present, else a random one: see the
# log), train a small DiT with the plain loop, export it to a DiTPipeline, write a sample grid
# of all 10 classes to $OUT/dit_digits_grid.png and score 80 samples with common.demo_eval.
# The demo config sets "downscale_freq_shift": 1 (the timestep embedding ppdiffusers'
# Transformer2DModel hard-codes) so that the DiTPipeline export is exact; the paper configs use
# the official DiT embedding (shift 0).
# Defaults for a 2-core CPU: two processes (NPROC=2; 246 vs 161 images/s for one process), a
# 1.4M-parameter DiT (hidden 128, depth 4, patch 2 on 4x8x8 latents), global batch 64, learning
# rate 2e-3 (the tiny DiT tolerates it; 5e-4 left the loss twice as high after 1000 steps),
# 1800 steps, and no flip augmentation (RANDOM_FLIP=False): a mirrored 7 is not a 7, and with
# flips only the symmetric digits 0, 1 and 8 came out readable after 1800 steps.
# Knobs (environment); extra flags pass through to the training script ("$@").
set -e
cd "$(dirname "$0")/.."
python -m common.demo_data > /dev/null  # builds data/demo/ once

OUT=${OUT:-outputs/class_conditional_demo}
FEATURES=${FEATURES:-$OUT/features}
CONFIG_FILE=${CONFIG_FILE:-class_conditional/config/DiT_demo.json}
VAE_NAME_OR_PATH=${VAE_NAME_OR_PATH:-auto}
MAX_STEPS=${MAX_STEPS:-1800}
GLOBAL_BATCH_SIZE=${GLOBAL_BATCH_SIZE:-64}
LEARNING_RATE=${LEARNING_RATE:-2e-3}
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-25}
NPROC=${NPROC:-2}
RANDOM_FLIP=${RANDOM_FLIP:-False}
NUM_IMAGES_PER_CLASS=${NUM_IMAGES_PER_CLASS:-4}

# 1. features (image + flip latents); re-encoded only when the VAE changed (e.g. the VAE demo finished)
python class_conditional/extract_features.py --data_path data/demo/digits --feature_path "$FEATURES" \
  --image_size 32 --vae_name_or_path "$VAE_NAME_OR_PATH" --batch_size 64

# 2. train (plain loop; EMA weights end up in $OUT/dit/final)
LAUNCH="python"
if [ "$NPROC" -gt 1 ]; then
  LAUNCH="python -m paddle.distributed.launch --nproc_per_node $NPROC --log_dir $OUT/launch_logs"
fi
$LAUNCH class_conditional/train_image_generation_notrainer.py \
  --config_file "$CONFIG_FILE" \
  --feature_path "$FEATURES" \
  --results_dir "$OUT/dit" \
  --global_batch_size "$GLOBAL_BATCH_SIZE" \
  --learning_rate "$LEARNING_RATE" \
  --random_flip "$RANDOM_FLIP" \
  --max_steps "$MAX_STEPS" \
  --num_workers 0 \
  --log_every 50 \
  --ckpt_every 600 \
  --save_total_limit 2 \
  --num_inference_steps "$NUM_INFERENCE_STEPS" \
  --vae_name_or_path "$VAE_NAME_OR_PATH" \
  "$@"

# 3. export to a DiTPipeline and sample every class with DDIM
python class_conditional/tools/convert_dit_to_ppdiffusers.py --model_path "$OUT/dit/final" --output_dir "$OUT/dit_pipeline" \
  --vae_name_or_path "$VAE_NAME_OR_PATH" --id2label_file class_conditional/tools/digits_id2label.json
python class_conditional/infer_demo_dit.py --pipeline "$OUT/dit_pipeline" --class_labels 0 1 2 3 4 5 6 7 8 9 \
  --num_images_per_class "$NUM_IMAGES_PER_CLASS" --num_inference_steps "$NUM_INFERENCE_STEPS" --output "$OUT/dit_digits_grid.png"
echo "sample grid: $OUT/dit_digits_grid.png"
# 4. score: a digit classifier trained on the real digits reads 8 samples of every class
python -m common.demo_eval --dit_pipeline "$OUT/dit_pipeline" --num_inference_steps "$NUM_INFERENCE_STEPS"
