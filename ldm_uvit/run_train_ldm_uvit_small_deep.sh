#!/bin/sh
# Upstream-sized run: U-ViT-S/2 (deep, ~58M parameters) on COCO-256 features
# (data/coco256_features: train/, empty_context.npy; see README.md), batch 32 per device.
# Single node: NPROC_PER_NODE=8 sh ldm_uvit/run_train_ldm_uvit_small_deep.sh
# Several nodes: IPS=10.0.0.1,10.0.0.2 NPROC_PER_NODE=8 sh ldm_uvit/run_train_ldm_uvit_small_deep.sh (on every node)
# Knobs below; extra arguments go to the train script (e.g. --resume_from_checkpoint latest).
# VAE only sets the latent scale factor and decodes the image logs: for real COCO features use the
# autoencoder that made them, e.g. VAE=runwayml/stable-diffusion-v1-5/vae (needs a network).
set -e
cd "$(dirname "$0")/.."

FEATURE_PATH=${FEATURE_PATH:-data/coco256_features}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/uvit_t2i_small_deep}
UNET_CONFIG=${UNET_CONFIG:-config/uvit_t2i_small_deep.json}
VAE=${VAE:-auto}
MODEL_MAX_LENGTH=${MODEL_MAX_LENGTH:-77}
NPROC_PER_NODE=${NPROC_PER_NODE:-1}
IPS=${IPS:-127.0.0.1}
PER_DEVICE_TRAIN_BATCH_SIZE=${PER_DEVICE_TRAIN_BATCH_SIZE:-32}
DATALOADER_NUM_WORKERS=${DATALOADER_NUM_WORKERS:-1}
MAX_STEPS=${MAX_STEPS:-1000000}
SAVE_STEPS=${SAVE_STEPS:-5000}
WARMUP_STEPS=${WARMUP_STEPS:-5000}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-5000}
LOGGING_STEPS=${LOGGING_STEPS:-20}
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-50}
SEED=${SEED:-1234}
USE_AMP=${USE_AMP:-False}
FP16_OPT_LEVEL=${FP16_OPT_LEVEL:-O1}
RECOMPUTE=${RECOMPUTE:-True}
XFORMERS=${XFORMERS:-True}

python -m paddle.distributed.launch --ips "${IPS}" --nproc_per_node "${NPROC_PER_NODE}" --log_dir "${OUTPUT_DIR}/launch_logs" \
    ldm_uvit/train_txt2img_uvit_coco_trainer.py \
    --do_train \
    --output_dir "${OUTPUT_DIR}" \
    --feature_path "${FEATURE_PATH}" \
    --vae_name_or_path "${VAE}" \
    --per_device_train_batch_size "${PER_DEVICE_TRAIN_BATCH_SIZE}" \
    --gradient_accumulation_steps 1 \
    --learning_rate 0.0002 \
    --weight_decay 0.03 \
    --adam_beta1 0.9 \
    --adam_beta2 0.9 \
    --max_steps "${MAX_STEPS}" \
    --lr_scheduler_type constant_with_warmup \
    --warmup_steps "${WARMUP_STEPS}" \
    --image_logging_steps "${IMAGE_LOGGING_STEPS}" \
    --logging_steps "${LOGGING_STEPS}" \
    --save_steps "${SAVE_STEPS}" \
    --seed "${SEED}" \
    --dataloader_num_workers "${DATALOADER_NUM_WORKERS}" \
    --max_grad_norm -1 \
    --unet_config_file "${UNET_CONFIG}" \
    --num_inference_steps "${NUM_INFERENCE_STEPS}" \
    --model_max_length "${MODEL_MAX_LENGTH}" \
    --use_ema True \
    --overwrite_output_dir \
    --disable_tqdm True \
    --recompute "${RECOMPUTE}" \
    --fp16 "${USE_AMP}" \
    --fp16_opt_level "${FP16_OPT_LEVEL}" \
    --enable_xformers_memory_efficient_attention "${XFORMERS}" \
    "$@"
