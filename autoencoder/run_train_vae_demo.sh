#!/bin/sh
# Demo: train the tiny f4 AutoencoderKL of config/vae_demo.json (32x32 px -> 4x8x8 latents) from
# scratch on the bundled data (random crops of the 18 photos + the 1797 handwritten digits, see
# data/filelist/demo_mix.filelist) on CPU in about 10 minutes.  The final VAE goes to
# outputs/vae_demo/final, where the latent examples (stable_diffusion, class_conditional,
# ldm_uvit) pick it up through common.vae.load_vae("auto").
#
# --perceptual_weight 0: LPIPS needs ImageNet VGG16 weights (a download) and a VGG16 pass per
# step would cost more than the tiny VAE itself; --disc_start beyond the last step: a GAN needs
# tens of thousands of steps to help and at this scale it only lowers PSNR.  Both are on in
# run_train_vae.sh (the real recipe).
#
# --calibrate_scaling_factor: the saved VAE's scaling_factor is set to 1 / std of its latents, so
# that the latent examples diffuse unit-variance latents (what SD's 0.18215 does for its VAE).
#
# Knobs (environment): OUTPUT_DIR MAX_TRAIN_STEPS BATCH_SIZE LEARNING_RATE SAVE_STEPS NUM_WORKERS;
# extra arguments are passed to train_vae.py, e.g. `sh run_train_vae_demo.sh --logging_steps 10`.
set -e
cd "$(dirname "$0")/.."
python -m common.demo_data > /dev/null
python -u autoencoder/train_vae.py \
    --from_scratch \
    --vae_config_file autoencoder/config/vae_demo.json \
    --dataset_type text_image_pair \
    --file_list autoencoder/data/filelist/demo_train.filelist.list \
    --resolution 32 \
    --min_crop_scale 0.35 \
    --batch_size "${BATCH_SIZE:-8}" \
    --num_workers "${NUM_WORKERS:-1}" \
    --learning_rate "${LEARNING_RATE:-1e-3}" \
    --max_train_steps "${MAX_TRAIN_STEPS:-500}" \
    --logging_steps 50 \
    --image_logging_steps 250 \
    --save_steps "${SAVE_STEPS:-250}" \
    --save_total_limit 2 \
    --kl_weight 1e-6 \
    --perceptual_weight 0 \
    --disc_start 1000000000 \
    --calibrate_scaling_factor 25 \
    --seed 23 \
    --output_dir "${OUTPUT_DIR:-outputs/vae_demo}" \
    "$@"
