#!/bin/sh
# Offline U-ViT text-to-image demo on the bundled 32x32 digits (CPU, about 10 minutes):
#   1. extract COCO-256-style features (demo VAE moments + small LDMBert caption features)
#   2. train a tiny U-ViT (config/uvit_t2i_demo.json) with the paddlenlp Trainer
#   3. export an LDMTextToImagePipeline folder and write a prompt grid PNG
# Knobs: FEATURE_PATH OUTPUT_DIR VAE MAX_IMAGES NUM_VAL_IMAGES UNET_CONFIG MODEL_MAX_LENGTH BATCH_SIZE
#        MAX_STEPS LEARNING_RATE WARMUP_STEPS SAVE_STEPS LOGGING_STEPS IMAGE_LOGGING_STEPS NUM_INFERENCE_STEPS
#        NUM_IMAGES_PER_PROMPT GUIDANCE_SCALE NPROC; extra arguments go to the train script.
# NPROC=2 (default) trains with two processes under paddle.distributed.launch (gloo on CPU): on a
# 2-core CPU two single-threaded processes beat one two-threaded process for a model this small.
# BATCH_SIZE is per process.
set -e
cd "$(dirname "$0")/.."

FEATURE_PATH=${FEATURE_PATH:-data/coco256_features_demo}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/uvit_demo}
VAE=${VAE:-auto}
MAX_IMAGES=${MAX_IMAGES:-0}
NUM_VAL_IMAGES=${NUM_VAL_IMAGES:-97}
UNET_CONFIG=${UNET_CONFIG:-config/uvit_t2i_demo.json}
MODEL_MAX_LENGTH=${MODEL_MAX_LENGTH:-8}
BATCH_SIZE=${BATCH_SIZE:-32}
MAX_STEPS=${MAX_STEPS:-1000}
NPROC=${NPROC:-2}
LEARNING_RATE=${LEARNING_RATE:-0.004}
WARMUP_STEPS=${WARMUP_STEPS:-20}
SAVE_STEPS=${SAVE_STEPS:-500}
LOGGING_STEPS=${LOGGING_STEPS:-50}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-500}
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-50}
NUM_IMAGES_PER_PROMPT=${NUM_IMAGES_PER_PROMPT:-4}
GUIDANCE_SCALE=${GUIDANCE_SCALE:-2.0}

python ldm_uvit/extract_features.py \
    --data_file data/demo/digits_coco.jsonl \
    --output_dir "${FEATURE_PATH}" \
    --overwrite \
    --resolution 32 \
    --model_max_length "${MODEL_MAX_LENGTH}" \
    --num_val_images "${NUM_VAL_IMAGES}" \
    --max_images "${MAX_IMAGES}" \
    --vae_name_or_path "${VAE}"

LAUNCH="python"
if [ "$NPROC" -gt 1 ]; then
  LAUNCH="python -m paddle.distributed.launch --nproc_per_node $NPROC --log_dir ${OUTPUT_DIR}/launch_logs"
fi
$LAUNCH ldm_uvit/train_txt2img_uvit_coco_trainer.py \
    --do_train \
    --output_dir "${OUTPUT_DIR}" \
    --overwrite_output_dir \
    --feature_path "${FEATURE_PATH}" \
    --unet_config_file "${UNET_CONFIG}" \
    --vae_name_or_path "${VAE}" \
    --model_max_length "${MODEL_MAX_LENGTH}" \
    --per_device_train_batch_size "${BATCH_SIZE}" \
    --gradient_accumulation_steps 1 \
    --learning_rate "${LEARNING_RATE}" \
    --weight_decay 0.03 \
    --adam_beta1 0.9 \
    --adam_beta2 0.9 \
    --max_steps "${MAX_STEPS}" \
    --lr_scheduler_type constant_with_warmup \
    --warmup_steps "${WARMUP_STEPS}" \
    --save_steps "${SAVE_STEPS}" \
    --logging_steps "${LOGGING_STEPS}" \
    --image_logging_steps "${IMAGE_LOGGING_STEPS}" \
    --num_inference_steps "${NUM_INFERENCE_STEPS}" \
    --guidance_scale "${GUIDANCE_SCALE}" \
    --max_grad_norm -1 \
    --seed 1234 \
    --dataloader_num_workers 0 \
    --use_ema True \
    --disable_tqdm True \
    "$@"

python ldm_uvit/generate_pipelines.py \
    --model_file "${OUTPUT_DIR}/model_state.pdparams" \
    --output_path "${OUTPUT_DIR}/ldm_uvit_pipelines"

python ldm_uvit/infer.py \
    --model_name_or_path "${OUTPUT_DIR}/ldm_uvit_pipelines" \
    --prompt "a handwritten digit zero" "a handwritten digit one" "a handwritten digit two" "a handwritten digit three" \
             "a handwritten digit four" "a handwritten digit five" "a handwritten digit six" "a handwritten digit seven" \
             "a handwritten digit eight" "a handwritten digit nine" \
    --num_images_per_prompt "${NUM_IMAGES_PER_PROMPT}" \
    --num_inference_steps "${NUM_INFERENCE_STEPS}" \
    --guidance_scale "${GUIDANCE_SCALE}" \
    --output "${OUTPUT_DIR}/prompt_grid.png" \
    --grid_upscale 4
echo "demo done: ${OUTPUT_DIR}/prompt_grid.png (pipeline: ${OUTPUT_DIR}/ldm_uvit_pipelines)"
