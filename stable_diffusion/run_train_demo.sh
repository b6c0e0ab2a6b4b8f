#!/bin/sh
# Offline CPU demo: train a tiny text-to-image Stable Diffusion from scratch on the bundled
# handwritten-digit captions ("a handwritten digit seven", 32x32 px), sample a prompt grid and
# score it with the digit judge (python -m common.demo_eval --txt2img_pipeline: 8 samples per prompt).
# Nothing is downloaded: the tokenizer is trained on the captions, the text encoder and UNet are
# initialised from config/*.json and trained together, the VAE is the autoencoder demo's (trained first if missing).
#   sh stable_diffusion/run_train_demo.sh                      # 600 steps, 2 processes x batch 16 (README: time and score)
#   NPROC=1 BATCH_SIZE=32 sh stable_diffusion/run_train_demo.sh  # one process
#   MAX_STEPS=20 OUTPUT_DIR=/tmp/sd VAE=random sh stable_diffusion/run_train_demo.sh --logging_steps 5   # smoke run
# The objective is v-prediction with a plain MSE (no Min-SNR weighting): it keeps the weight of the
# high-noise steps, where the prompt decides the digit (README "Offline CPU demo" has the measurements).
# Extra arguments go to train_txt2img_laion400m_trainer.py.
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
. "$ROOT/common/launch.sh"  # resolve_amp, resolve_launch: the knobs every launcher shares
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/outputs/sd_demo}
FILE_LIST=${FILE_LIST:-$ROOT/data/demo/laion_digits/filelist/digits.filelist.list}
VAE=${VAE:-auto}                   # auto = outputs/vae_demo/final (trained below when missing); random for tests
MAX_STEPS=${MAX_STEPS:-600}
BATCH_SIZE=${BATCH_SIZE:-16}
LEARNING_RATE=${LEARNING_RATE:-1e-3}
WARMUP_STEPS=${WARMUP_STEPS:-20}
RESOLUTION=${RESOLUTION:-32}
SAVE_STEPS=${SAVE_STEPS:-300}
LOGGING_STEPS=${LOGGING_STEPS:-25}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-300}
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-25}
GUIDANCE_SCALE=${GUIDANCE_SCALE:-4.0}   # of the grid and the score
SAMPLES_PER_CLASS=${SAMPLES_PER_CLASS:-8}   # judged samples per prompt (10 prompts)
USE_AMP=${USE_AMP:-0}              # 1: mixed precision (GPU) in AMP_DTYPE
AMP_DTYPE=${AMP_DTYPE:-bf16}       # bf16 or fp16
NUM_WORKERS=${NUM_WORKERS:-1}
SEED=${SEED:-23}
NPROC=${NPROC:-2}
GRID=${GRID:-$OUTPUT_DIR/prompt_grid.png}

resolve_amp

cd "$ROOT"
[ -f data/demo/.complete ] || python -m common.demo_data > /dev/null  # builds data/demo/ once (real images, no download)
[ "$VAE" != auto ] || [ -f "$ROOT/outputs/vae_demo/final/config.json" ] || sh "$ROOT/autoencoder/run_train_vae_demo.sh"

# NPROC=2 (default): two single-threaded processes under paddle.distributed.launch (gloo on CPU)
# train a model this small faster than one process with two threads. BATCH_SIZE is per process.
resolve_launch
$LAUNCH "$HERE/train_txt2img_laion400m_trainer.py" \
    --do_train \
    --output_dir "$OUTPUT_DIR" \
    --file_list "$FILE_LIST" \
    --vae_name_or_path "$VAE" \
    --resolution "$RESOLUTION" \
    --model_max_length 16 \
    --per_device_train_batch_size "$BATCH_SIZE" \
    --gradient_accumulation_steps 1 \
    --learning_rate "$LEARNING_RATE" \
    --lr_scheduler_type constant_with_warmup \
    --warmup_steps "$WARMUP_STEPS" \
    --weight_decay 0.01 \
    --max_steps "$MAX_STEPS" \
    --max_grad_norm 1.0 \
    --train_text_encoder True \
    --prediction_type v_prediction \
    --proportion_empty_prompts 0.1 \
    --use_ema True \
    --logging_steps "$LOGGING_STEPS" \
    --image_logging_steps "$IMAGE_LOGGING_STEPS" \
    --num_inference_steps "$NUM_INFERENCE_STEPS" \
    --save_steps "$SAVE_STEPS" \
    --save_total_limit 2 \
    --seed "$SEED" \
    --dataloader_num_workers "$NUM_WORKERS" \
    --bf16 "$BF16" \
    --fp16 "$FP16" \
    --disable_tqdm True \
    "$@"

# prompt grid: one image per digit from the saved pipeline (EMA UNet)
python -u "$HERE/infer.py" \
    --pretrained_model_name_or_path "$OUTPUT_DIR" \
    --prompt "a handwritten digit zero" --prompt "a handwritten digit one" --prompt "a handwritten digit two" \
    --prompt "a handwritten digit three" --prompt "a handwritten digit four" --prompt "a handwritten digit five" \
    --prompt "a handwritten digit six" --prompt "a handwritten digit seven" --prompt "a handwritten digit eight" \
    --prompt "a handwritten digit nine" \
    --num_inference_steps "$NUM_INFERENCE_STEPS" \
    --guidance_scale "$GUIDANCE_SCALE" \
    --scheduler dpm-solver \
    --seed "$SEED" \
    --upscale 4 \
    --output "$GRID"
# the judge: 10 prompts x SAMPLES_PER_CLASS samples, read by a digit classifier trained on the real digits
python -m common.demo_eval --txt2img_pipeline "$OUTPUT_DIR" --samples_per_class "$SAMPLES_PER_CLASS" \
    --num_inference_steps "$NUM_INFERENCE_STEPS" --guidance_scale "$GUIDANCE_SCALE" --seed "$SEED" > "$OUTPUT_DIR/digit_score.txt"
echo "prompt grid: $GRID"
cat "$OUTPUT_DIR/digit_score.txt"
