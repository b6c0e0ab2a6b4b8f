#!/bin/sh
# Fine-tune the UNet of a full Stable Diffusion (VAE and text encoder stay frozen) on captioned
# images: an image folder with metadata.jsonl ({"file_name", "text"}) or laion400m-format parts.
#   sh run_finetune_text_to_image.sh                          # offline: the demo's saved pipeline on the digit folder
#   PRETRAINED=CompVis/stable-diffusion-v1-4 RESOLUTION=512 TRAIN_DATA_DIR=./my_images sh run_finetune_text_to_image.sh
#   NPROC=2 sh run_finetune_text_to_image.sh                  # paddle.distributed.launch, 2 processes
# Extra arguments are passed to train_txt2img_laion400m_trainer.py (e.g. --file_list parts.filelist.list).
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
. "$ROOT/common/launch.sh"  # resolve_amp, resolve_launch: the knobs every launcher shares
PRETRAINED=${PRETRAINED:-$ROOT/outputs/sd_demo}
TRAIN_DATA_DIR=${TRAIN_DATA_DIR:-$ROOT/data/demo/digits}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/outputs/sd_finetune}
RESOLUTION=${RESOLUTION:-32}
BATCH_SIZE=${BATCH_SIZE:-16}
MAX_STEPS=${MAX_STEPS:-200}
LEARNING_RATE=${LEARNING_RATE:-1e-4}
NUM_WORKERS=${NUM_WORKERS:-1}
NPROC=${NPROC:-1}

resolve_launch

$LAUNCH "$HERE/train_txt2img_laion400m_trainer.py" \
    --do_train \
    --pretrained_model_name_or_path "$PRETRAINED" \
    --train_data_dir "$TRAIN_DATA_DIR" \
    --output_dir "$OUTPUT_DIR" \
    --resolution "$RESOLUTION" \
    --per_device_train_batch_size "$BATCH_SIZE" \
    --learning_rate "$LEARNING_RATE" \
    --lr_scheduler_type constant \
    --max_steps "$MAX_STEPS" \
    --max_grad_norm 1.0 \
    --use_ema True \
    --snr_gamma 5.0 \
    --logging_steps 10 \
    --image_logging_steps 100 \
    --num_inference_steps 25 \
    --save_steps 100 \
    --save_total_limit 2 \
    --dataloader_num_workers "$NUM_WORKERS" \
    --disable_tqdm True \
    "$@"
