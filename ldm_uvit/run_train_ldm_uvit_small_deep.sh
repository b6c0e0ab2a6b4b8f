#!/bin/sh
# Upstream-sized run: U-ViT-S/2 (deep, ~58M parameters) on COCO-256 features
# (data/coco256_features: train/, empty_context.npy; see README.md), batch 32 per device, with
# U-ViT's recipe (noise prediction, AdamW lr 2e-4, betas 0.9/0.9, weight decay 0.03, 5000 warmup steps, EMA).
# Single node: NPROC=8 sh ldm_uvit/run_train_ldm_uvit_small_deep.sh
# Several nodes: IPS=10.0.0.1,10.0.0.2 NPROC=8 sh ldm_uvit/run_train_ldm_uvit_small_deep.sh (on every node)
# On GPUs as upstream: USE_AMP=1 AMP_DTYPE=fp16 (bf16 is the default dtype of USE_AMP=1).
# Knobs below (the names every launcher uses, see the top README); extra arguments go to the train
# script (e.g. --resume_from_checkpoint latest).  Relative paths are taken from the repo root.
# VAE only sets the latent scale factor and decodes the image logs: for real COCO features use the
# autoencoder that made them, e.g. VAE=runwayml/stable-diffusion-v1-5/vae (needs a network).
set -e
cd "$(dirname "$0")/.."
. common/launch.sh  # resolve_amp, resolve_launch: the knobs every launcher shares

FEATURE_PATH=${FEATURE_PATH:-data/coco256_features}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/uvit_t2i_small_deep}
UNET_CONFIG=${UNET_CONFIG:-config/uvit_t2i_small_deep.json}
VAE=${VAE:-auto}
MODEL_MAX_LENGTH=${MODEL_MAX_LENGTH:-77}
NPROC=${NPROC:-1}                  # processes per node
IPS=${IPS:-127.0.0.1}              # node IPs, comma-separated
BATCH_SIZE=${BATCH_SIZE:-32}       # per process
LEARNING_RATE=${LEARNING_RATE:-0.0002}
NUM_WORKERS=${NUM_WORKERS:-4}     # DataLoader workers per process (= per GPU): 2x an H100's step rate needs up to ~2.2 (bench/README.md "Readers")
MAX_STEPS=${MAX_STEPS:-1000000}
SAVE_STEPS=${SAVE_STEPS:-5000}
WARMUP_STEPS=${WARMUP_STEPS:-5000}
IMAGE_LOGGING_STEPS=${IMAGE_LOGGING_STEPS:-5000}
LOGGING_STEPS=${LOGGING_STEPS:-20}
NUM_INFERENCE_STEPS=${NUM_INFERENCE_STEPS:-50}
GUIDANCE_SCALE=${GUIDANCE_SCALE:-2.0}   # of the image logs (U-ViT's scale 1)
SEED=${SEED:-1234}
USE_AMP=${USE_AMP:-0}              # 1: mixed precision (GPU only) in AMP_DTYPE
AMP_DTYPE=${AMP_DTYPE:-bf16}       # bf16 or fp16
FP16_OPT_LEVEL=${FP16_OPT_LEVEL:-O1}
RECOMPUTE=${RECOMPUTE:-True}
XFORMERS=${XFORMERS:-True}

resolve_amp
resolve_launch
$LAUNCH ldm_uvit/train_txt2img_uvit_coco_trainer.py \
    --do_train \
    --output_dir "$OUTPUT_DIR" \
    --feature_path "$FEATURE_PATH" \
    --vae_name_or_path "$VAE" \
    --per_device_train_batch_size "$BATCH_SIZE" \
    --gradient_accumulation_steps 1 \
    --learning_rate "$LEARNING_RATE" \
    --weight_decay 0.03 \
    --adam_beta1 0.9 \
    --adam_beta2 0.9 \
    --max_steps "$MAX_STEPS" \
    --lr_scheduler_type constant_with_warmup \
    --warmup_steps "$WARMUP_STEPS" \
    --image_logging_steps "$IMAGE_LOGGING_STEPS" \
    --logging_steps "$LOGGING_STEPS" \
    --save_steps "$SAVE_STEPS" \
    --seed "$SEED" \
    --dataloader_num_workers "$NUM_WORKERS" \
    --max_grad_norm -1 \
    --unet_config_file "$UNET_CONFIG" \
    --num_inference_steps "$NUM_INFERENCE_STEPS" \
    --guidance_scale "$GUIDANCE_SCALE" \
    --model_max_length "$MODEL_MAX_LENGTH" \
    --use_ema True \
    --disable_tqdm True \
    --recompute "$RECOMPUTE" \
    --bf16 "$BF16" \
    --fp16 "$FP16" \
    --fp16_opt_level "$FP16_OPT_LEVEL" \
    --enable_xformers_memory_efficient_attention "$XFORMERS" \
    "$@"
