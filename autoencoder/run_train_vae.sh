#!/bin/sh
# The upstream recipe: warm-start the encoder from Stable Diffusion v1-4's kl-f8 VAE, drop its
# decoder (--ignore_keys decoder.) and train the f16 decoder of config/vae.json so that a 256 px
# encoder input decodes to 512 px.  Needs a GPU with ~40 GB, a network for the hub weights (or
# point PRETRAINED at a local copy), VGG16 weights for LPIPS (LPIPS_BACKBONE: a local
# vgg16.pdparams; empty = download) and laion400m-format data listed in FILE_LIST.
#
# From scratch instead: FROM_SCRATCH=1 (all weights random).  Multi-card:
#   python -u -m paddle.distributed.launch --gpus "0,1,2,3,4,5,6,7" train_vae.py ...   (see README.md)
# Knobs (environment): PRETRAINED FILE_LIST OUTPUT_DIR BATCH_SIZE NUM_WORKERS MAX_TRAIN_STEPS
# LEARNING_RATE LPIPS_BACKBONE FROM_SCRATCH; extra arguments go to train_vae.py.
set -e
cd "$(dirname "$0")"
if [ "${FROM_SCRATCH:-0}" = "1" ]; then
    set -- --from_scratch "$@"
else
    set -- --pretrained_model_name_or_path "${PRETRAINED:-CompVis/stable-diffusion-v1-4}" --ignore_keys decoder. --freeze_encoder "$@"
fi
if [ -n "${LPIPS_BACKBONE:-}" ]; then
    set -- --lpips_backbone_path "$LPIPS_BACKBONE" "$@"
fi
python -u train_vae.py \
    --vae_config_file config/vae.json \
    --input_size 256 256 \
    --resolution 512 \
    --dataset_type text_image_pair \
    --file_list "${FILE_LIST:-./data/filelist/train.filelist.list}" \
    --max_train_steps "${MAX_TRAIN_STEPS:-100000000000}" \
    --learning_rate "${LEARNING_RATE:-1e-4}" \
    --batch_size "${BATCH_SIZE:-4}" \
    --num_workers "${NUM_WORKERS:-8}" \
    --logging_steps 100 \
    --save_steps 2000 \
    --image_logging_steps 500 \
    --disc_start 50001 \
    --kl_weight 0.000001 \
    --disc_weight 0.5 \
    --output_dir "${OUTPUT_DIR:-autoencoder_outputs}" \
    "$@"
