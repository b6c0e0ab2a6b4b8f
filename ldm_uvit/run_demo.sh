#!/bin/sh
# Offline U-ViT text-to-image demo on the bundled 32x32 digits (CPU, about 10 minutes on 2 cores,
# plus about 5 minutes for the demo VAE the first time):
#   0. train the demo VAE (autoencoder/run_train_vae_demo.sh) when VAE=auto and outputs/vae_demo/final is missing
#   1. extract COCO-256-style features (demo VAE moments + small frozen LDMBert caption features)
#   2. train a tiny U-ViT (config/uvit_t2i_demo.json) with the paddlenlp Trainer
#   3. export an LDMTextToImagePipeline folder and write a prompt grid PNG
#   4. score it: common.demo_eval's digit classifier (trained on the real digits) reads
#      SAMPLES_PER_CLASS samples of every prompt "a handwritten digit <word>"
# The demo trains with v-prediction (PREDICTION_TYPE) where U-ViT (run_train_ldm_uvit_small_deep.sh)
# predicts the noise: with noise prediction this U-ViT ignored its captions for the whole 10-minute
# budget (digit accuracy 0.10, chance); README.md "The demo" has the measurements.
# Knobs (environment; the names every launcher uses, see the top README) below; extra arguments go
# to the train script ("$@").  NPROC=2 (default) trains with two processes under
# paddle.distributed.launch (gloo on CPU): on a 2-core CPU two single-threaded processes beat one
# two-threaded process for a model this small.  BATCH_SIZE is per process.
set -e
cd "$(dirname "$0")/.."
. common/launch.sh  # resolve_amp, resolve_launch: the knobs every launcher shares
ROOT=$(pwd)
[ -f data/demo/.complete ] || python -m common.demo_data > /dev/null  # builds data/demo/ once (real images, no download)

FEATURE_PATH=${FEATURE_PATH:-data/coco256_features_demo}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/uvit_demo}
VAE=${VAE:-auto}                   # auto = outputs/vae_demo/final (trained below when missing); random: tests only
RESOLUTION=${RESOLUTION:-32}       # image side; 32 / 4 (the demo VAE's factor) = the config's 8x8 latents
MAX_IMAGES=${MAX_IMAGES:-0}        # 0: all 1797 digits
NUM_VAL_IMAGES=${NUM_VAL_IMAGES:-97}
UNET_CONFIG=${UNET_CONFIG:-config/uvit_t2i_demo.json}
MODEL_MAX_LENGTH=${MODEL_MAX_LENGTH:-8}
PREDICTION_TYPE=${PREDICTION_TYPE:-v_prediction}   # epsilon = U-ViT's objective
NPROC=${NPROC:-2}
BATCH_SIZE=${BATCH_SIZE:-32}       # per process
MAX_STEPS=${MAX_STEPS:-1000}
LEARNING_RATE=${LEARNING_RATE:-0.004}
WARMUP_STEPS=${WARMUP_STEPS:-20}
SAVE_STEPS=${SAVE_STEPS:-500}
LOGGING_STEPS=${LOGGING_STEPS:-50}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-500}
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-25}
GUIDANCE_SCALE=${GUIDANCE_SCALE:-4.0}   # of the image logs, the grid and the score
NUM_IMAGES_PER_PROMPT=${NUM_IMAGES_PER_PROMPT:-4}   # grid columns
SAMPLES_PER_CLASS=${SAMPLES_PER_CLASS:-8}           # judged samples per prompt (10 prompts)
USE_AMP=${USE_AMP:-0}              # 1: mixed precision (GPU only) in AMP_DTYPE
AMP_DTYPE=${AMP_DTYPE:-bf16}       # bf16 or fp16
NUM_WORKERS=${NUM_WORKERS:-0}
SEED=${SEED:-1234}

resolve_amp

# 0. the demo VAE (about 5 min, once)
[ "$VAE" != auto ] || [ -f "$ROOT/outputs/vae_demo/final/config.json" ] || sh "$ROOT/autoencoder/run_train_vae_demo.sh"

# 1. features (about 20 s)
python ldm_uvit/extract_features.py \
    --data_file data/demo/digits_coco.jsonl \
    --output_dir "$FEATURE_PATH" \
    --overwrite \
    --resolution "$RESOLUTION" \
    --model_max_length "$MODEL_MAX_LENGTH" \
    --num_val_images "$NUM_VAL_IMAGES" \
    --max_images "$MAX_IMAGES" \
    --vae_name_or_path "$VAE"

# 2. train
resolve_launch
$LAUNCH ldm_uvit/train_txt2img_uvit_coco_trainer.py \
    --do_train \
    --output_dir "$OUTPUT_DIR" \
    --feature_path "$FEATURE_PATH" \
    --unet_config_file "$UNET_CONFIG" \
    --vae_name_or_path "$VAE" \
    --model_max_length "$MODEL_MAX_LENGTH" \
    --prediction_type "$PREDICTION_TYPE" \
    --per_device_train_batch_size "$BATCH_SIZE" \
    --gradient_accumulation_steps 1 \
    --learning_rate "$LEARNING_RATE" \
    --weight_decay 0.03 \
    --adam_beta1 0.9 \
    --adam_beta2 0.9 \
    --max_steps "$MAX_STEPS" \
    --lr_scheduler_type constant_with_warmup \
    --warmup_steps "$WARMUP_STEPS" \
    --save_steps "$SAVE_STEPS" \
    --save_total_limit 2 \
    --logging_steps "$LOGGING_STEPS" \
    --image_logging_steps "$IMAGE_LOGGING_STEPS" \
    --num_inference_steps "$NUM_INFERENCE_STEPS" \
    --guidance_scale "$GUIDANCE_SCALE" \
    --max_grad_norm -1 \
    --seed "$SEED" \
    --dataloader_num_workers "$NUM_WORKERS" \
    --bf16 "$BF16" \
    --fp16 "$FP16" \
    --use_ema True \
    --disable_tqdm True \
    "$@"

# 3. export (EMA weights) and a prompt grid: one row per digit prompt
python ldm_uvit/generate_pipelines.py \
    --model_file "$OUTPUT_DIR/model_state.pdparams" \
    --output_path "$OUTPUT_DIR/ldm_uvit_pipelines"
python ldm_uvit/infer.py \
    --model_name_or_path "$OUTPUT_DIR/ldm_uvit_pipelines" \
    --prompt "a handwritten digit zero" "a handwritten digit one" "a handwritten digit two" "a handwritten digit three" \
             "a handwritten digit four" "a handwritten digit five" "a handwritten digit six" "a handwritten digit seven" \
             "a handwritten digit eight" "a handwritten digit nine" \
    --num_images_per_prompt "$NUM_IMAGES_PER_PROMPT" \
    --num_inference_steps "$NUM_INFERENCE_STEPS" \
    --guidance_scale "$GUIDANCE_SCALE" \
    --seed "$SEED" \
    --output "$OUTPUT_DIR/prompt_grid.png" \
    --grid_upscale 4

# 4. the judge: 10 prompts x SAMPLES_PER_CLASS samples through the standard pipe(prompts, ...) call
python -m common.demo_eval --txt2img_pipeline "$OUTPUT_DIR/ldm_uvit_pipelines" --samples_per_class "$SAMPLES_PER_CLASS" \
    --num_inference_steps "$NUM_INFERENCE_STEPS" --guidance_scale "$GUIDANCE_SCALE" --seed "$SEED" > "$OUTPUT_DIR/digit_score.txt"
echo "prompt grid: $OUTPUT_DIR/prompt_grid.png (pipeline: $OUTPUT_DIR/ldm_uvit_pipelines)"
cat "$OUTPUT_DIR/digit_score.txt"
