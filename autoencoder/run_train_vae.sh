#!/bin/sh
# The upstream recipe: warm-start the encoder from Stable Diffusion v1-4's kl-f8 VAE, drop its
# decoder (--ignore_keys decoder.) and train the f16 decoder of config/vae.json so that a
# RESOLUTION/2 px encoder input decodes to RESOLUTION px (256 -> 512).  Needs a GPU with ~40 GB, a
# network for the hub weights (or point PRETRAINED at a local copy), VGG16 weights for LPIPS
# (LPIPS_BACKBONE: a local vgg16.pdparams; empty = download) and laion400m-format data listed in
# FILE_LIST.  From scratch instead: FROM_SCRATCH=1 (all weights random).
#
# Knobs (environment; the names every launcher uses, see the top README): NPROC (processes per node,
# e.g. 8 for 8 GPUs) OUTPUT_DIR MAX_STEPS BATCH_SIZE (per process) LEARNING_RATE SAVE_STEPS
# LOGGING_STEPS IMAGE_LOGGING_STEPS NUM_WORKERS SEED RESOLUTION, and this launcher's PRETRAINED
# FILE_LIST LPIPS_BACKBONE FROM_SCRATCH; extra arguments go to train_vae.py ("$@").
# Runs from the repo root (relative paths are taken from there).
set -e
cd "$(dirname "$0")/.."
. common/launch.sh  # resolve_amp, resolve_launch: the knobs every launcher shares

NPROC=${NPROC:-1}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/vae}
MAX_STEPS=${MAX_STEPS:-100000000000}
BATCH_SIZE=${BATCH_SIZE:-4}
LEARNING_RATE=${LEARNING_RATE:-1e-4}
SAVE_STEPS=${SAVE_STEPS:-2000}
LOGGING_STEPS=${LOGGING_STEPS:-100}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-500}
NUM_WORKERS=${NUM_WORKERS:-8}     # DataLoader workers per process (= per GPU): 2x an H100's step rate needs up to ~2.9 (bench/README.md "Readers")
SEED=${SEED:-23}
RESOLUTION=${RESOLUTION:-512}
FILE_LIST=${FILE_LIST:-autoencoder/data/filelist/train.filelist.list}
PRETRAINED=${PRETRAINED:-CompVis/stable-diffusion-v1-4}

if [ "${FROM_SCRATCH:-0}" = "1" ]; then
    set -- --from_scratch "$@"
else
    set -- --pretrained_model_name_or_path "$PRETRAINED" --ignore_keys decoder. --freeze_encoder "$@"
fi
if [ -n "${LPIPS_BACKBONE:-}" ]; then
    set -- --lpips_backbone_path "$LPIPS_BACKBONE" "$@"
fi
resolve_launch

$LAUNCH autoencoder/train_vae.py \
    --vae_config_file autoencoder/config/vae.json \
    --input_size $((RESOLUTION / 2)) $((RESOLUTION / 2)) \
    --resolution "$RESOLUTION" \
    --dataset_type text_image_pair \
    --file_list "$FILE_LIST" \
    --max_train_steps "$MAX_STEPS" \
    --learning_rate "$LEARNING_RATE" \
    --batch_size "$BATCH_SIZE" \
    --num_workers "$NUM_WORKERS" \
    --logging_steps "$LOGGING_STEPS" \
    --save_steps "$SAVE_STEPS" \
    --image_logging_steps "$IMAGE_LOGGING_STEPS" \
    --disc_start 50001 \
    --kl_weight 0.000001 \
    --disc_weight 0.5 \
    --seed "$SEED" \
    --output_dir "$OUTPUT_DIR" \
    "$@"
