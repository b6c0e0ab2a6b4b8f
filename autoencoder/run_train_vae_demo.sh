#!/bin/sh
# Demo: train the tiny f4 AutoencoderKL of config/vae_demo.json (32x32 px -> 4x8x8 latents) from
# scratch on the bundled data (random crops of the 18 photos + the 1797 handwritten digits, see
# data/filelist/demo_mix.filelist) on CPU in about 5 minutes.  The final VAE goes to
# outputs/vae_demo/final, where the latent examples (stable_diffusion, class_conditional,
# ldm_uvit) pick it up through common.vae.load_vae("auto") (so keep the default OUTPUT_DIR for that).
#
# --perceptual_weight 0: LPIPS needs ImageNet VGG16 weights (a download) and a VGG16 pass per
# step would cost more than the tiny VAE itself; --disc_start beyond the last step: a GAN needs
# tens of thousands of steps to help and at this scale it only lowers PSNR.  Both are on in
# run_train_vae.sh (the real recipe).
#
# --calibrate_scaling_factor: the saved VAE's scaling_factor is set to 1 / std of its latents, so
# that the latent examples diffuse unit-variance latents (what SD's 0.18215 does for its VAE).
#
# Knobs (environment; the names every launcher uses, see the top README): NPROC OUTPUT_DIR MAX_STEPS
# BATCH_SIZE LEARNING_RATE SAVE_STEPS LOGGING_STEPS IMAGE_LOGGING_STEPS NUM_WORKERS SEED; extra
# arguments go to train_vae.py ("$@"). Runs from the repo root (relative paths are taken from there).
set -e
cd "$(dirname "$0")/.."
. common/launch.sh  # resolve_amp, resolve_launch: the knobs every launcher shares
python -m common.demo_data > /dev/null

NPROC=${NPROC:-1}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/vae_demo}
MAX_STEPS=${MAX_STEPS:-500}
BATCH_SIZE=${BATCH_SIZE:-8}
LEARNING_RATE=${LEARNING_RATE:-1e-3}
SAVE_STEPS=${SAVE_STEPS:-250}
LOGGING_STEPS=${LOGGING_STEPS:-50}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-250}
NUM_WORKERS=${NUM_WORKERS:-1}
SEED=${SEED:-23}

resolve_launch

$LAUNCH autoencoder/train_vae.py \
    --from_scratch \
    --vae_config_file autoencoder/config/vae_demo.json \
    --dataset_type text_image_pair \
    --file_list autoencoder/data/filelist/demo_train.filelist.list \
    --resolution 32 \
    --min_crop_scale 0.35 \
    --batch_size "$BATCH_SIZE" \
    --num_workers "$NUM_WORKERS" \
    --learning_rate "$LEARNING_RATE" \
    --max_train_steps "$MAX_STEPS" \
    --logging_steps "$LOGGING_STEPS" \
    --image_logging_steps "$IMAGE_LOGGING_STEPS" \
    --save_steps "$SAVE_STEPS" \
    --save_total_limit 2 \
    --kl_weight 1e-6 \
    --perceptual_weight 0 \
    --disc_start 1000000000 \
    --calibrate_scaling_factor 25 \
    --seed "$SEED" \
    --output_dir "$OUTPUT_DIR" \
    "$@"
