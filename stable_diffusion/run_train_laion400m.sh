#!/bin/sh
# Upstream-style Stable Diffusion v1 pretraining: random SD-v1 UNet (config/unet_config.json),
# pretrained SD VAE + CLIP text encoder from the hub (needs a network, or local folders), 256 px.
#   FILE_LIST=./processed_data/filelist/custom_dataset.filelist.list sh run_train_laion400m.sh
#   NPROC=8 sh run_train_laion400m.sh                              # one machine, 8 processes (GPUs or CPU)
#   GPUS=0,1,2,3,4,5,6,7 IPS=10.0.0.1,10.0.0.2 sh run_train_laion400m.sh   # multi-node: run on every node
# Extra arguments are passed to train_txt2img_laion400m_trainer.py (e.g. --bf16 True, --use_ema True).
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../common/launch.sh"  # resolve_amp, resolve_launch: the knobs every launcher shares
FILE_LIST=${FILE_LIST:-./processed_data/filelist/custom_dataset.filelist.list}
OUTPUT_DIR=${OUTPUT_DIR:-./laion400m_pretrain_output_trainer}
VAE=${VAE:-CompVis/stable-diffusion-v1-4/vae}
TEXT_ENCODER=${TEXT_ENCODER:-CompVis/stable-diffusion-v1-4/text_encoder}
UNET=${UNET:-$HERE/config/unet_config.json}
BATCH_SIZE=${BATCH_SIZE:-32}
MAX_STEPS=${MAX_STEPS:-200000}
LEARNING_RATE=${LEARNING_RATE:-1e-4}
RESOLUTION=${RESOLUTION:-256}
NUM_WORKERS=${NUM_WORKERS:-10}   # DataLoader workers per process (= per GPU): 2x an H100's 256 px step rate needs up to ~9.2 (bench/README.md "Readers")
NPROC=${NPROC:-1}
GPUS=${GPUS:-}
IPS=${IPS:-}

resolve_launch

$LAUNCH "$HERE/train_txt2img_laion400m_trainer.py" \
    --do_train \
    --output_dir "$OUTPUT_DIR" \
    --per_device_train_batch_size "$BATCH_SIZE" \
    --gradient_accumulation_steps 1 \
    --learning_rate "$LEARNING_RATE" \
    --weight_decay 0.01 \
    --max_steps "$MAX_STEPS" \
    --lr_scheduler_type constant \
    --warmup_steps 0 \
    --image_logging_steps 1000 \
    --logging_steps 10 \
    --resolution "$RESOLUTION" \
    --save_steps 10000 \
    --save_total_limit 20 \
    --seed 23 \
    --dataloader_num_workers "$NUM_WORKERS" \
    --vae_name_or_path "$VAE" \
    --text_encoder_name_or_path "$TEXT_ENCODER" \
    --unet_name_or_path "$UNET" \
    --file_list "$FILE_LIST" \
    --model_max_length 77 \
    --max_grad_norm -1 \
    --recompute True \
    --enable_xformers_memory_efficient_attention True \
    --disable_tqdm True \
    --bf16 False \
    "$@"
