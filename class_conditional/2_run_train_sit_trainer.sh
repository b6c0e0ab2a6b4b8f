#!/bin/sh
# SiT with the paddlenlp Trainer (SiT-XL/2, Linear path, velocity prediction; see --path_type etc.).
# Single node:  sh 2_run_train_sit_trainer.sh            (TRAINING_GPUS_PER_NODE processes)
# Multi-node:   TRAINER_INSTANCES="10.0.0.1,10.0.0.2" MASTER=10.0.0.1:8080 TRAINERS_NUM=2 sh 2_run_train_sit_trainer.sh
#               (run the same command on every node; paddle.distributed.launch --ips lists the nodes)
# Extra flags are passed through ("$@"), e.g. --resume_from_checkpoint latest.
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
TRAINER_INSTANCES=${TRAINER_INSTANCES:-127.0.0.1}
MASTER=${MASTER:-127.0.0.1:8080}
TRAINERS_NUM=${TRAINERS_NUM:-1}                   # nnodes
TRAINING_GPUS_PER_NODE=${TRAINING_GPUS_PER_NODE:-8} # processes per node
DP_DEGREE=${DP_DEGREE:-$((TRAINERS_NUM * TRAINING_GPUS_PER_NODE))}
MP_DEGREE=${MP_DEGREE:-1}
SHARDING_DEGREE=${SHARDING_DEGREE:-1}

config_file=${CONFIG_FILE:-config/SiT_XL_patch2.json}
OUTPUT_DIR=${OUTPUT_DIR:-./output_trainer/SiT_XL_patch2_trainer}
feature_path=${FEATURE_PATH:-./data/fastdit_imagenet256}
batch_size=${BATCH_SIZE:-32}      # per process
num_workers=${NUM_WORKERS:-8}
max_steps=${MAX_STEPS:-7000000}
logging_steps=${LOGGING_STEPS:-50}
save_steps=${SAVE_STEPS:-5000}
image_logging_steps=${IMAGE_LOGGING_STEPS:--1}
seed=${SEED:-0}
USE_AMP=${USE_AMP:-False}          # True (bf16) on GPUs as upstream; False on CPU
FP16_OPT_LEVEL=${FP16_OPT_LEVEL:-O1}
recompute=${RECOMPUTE:-False}       # upstream uses True on GPUs
enable_xformers=${ENABLE_XFORMERS:-False}
vae=${VAE_NAME_OR_PATH:-auto}       # upstream: stabilityai/sd-vae-ft-mse
path_type=${PATH_TYPE:-Linear}       # Linear, GVP or VP
prediction=${PREDICTION:-velocity}  # velocity, score or noise
loss_weight=${LOSS_WEIGHT:-None}    # None, velocity or likelihood

if [ "$TRAINERS_NUM" = 1 ] && [ "$TRAINING_GPUS_PER_NODE" = 1 ]; then
  TRAINING_PYTHON="python -u"
else
  TRAINING_PYTHON="python -u -m paddle.distributed.launch --master ${MASTER} --nnodes ${TRAINERS_NUM} --nproc_per_node ${TRAINING_GPUS_PER_NODE} --ips ${TRAINER_INSTANCES}"
fi
${TRAINING_PYTHON} "$HERE/train_image_generation_trainer.py" \
    --do_train \
    --feature_path ${feature_path} \
    --output_dir ${OUTPUT_DIR} \
    --per_device_train_batch_size ${batch_size} \
    --gradient_accumulation_steps 1 \
    --learning_rate 1e-4 \
    --weight_decay 0.0 \
    --max_steps ${max_steps} \
    --lr_scheduler_type "constant" \
    --warmup_steps 0 \
    --image_logging_steps ${image_logging_steps} \
    --logging_dir ${OUTPUT_DIR}/tb_log \
    --logging_steps ${logging_steps} \
    --save_steps ${save_steps} \
    --save_total_limit 50 \
    --dataloader_num_workers ${num_workers} \
    --vae_name_or_path ${vae} \
    --config_file ${config_file} \
    --num_inference_steps 25 \
    --use_ema True \
    --max_grad_norm -1 \
    --overwrite_output_dir True \
    --disable_tqdm True \
    --fp16_opt_level ${FP16_OPT_LEVEL} \
    --seed ${seed} \
    --recompute ${recompute} \
    --enable_xformers_memory_efficient_attention ${enable_xformers} \
    --bf16 ${USE_AMP} \
    --dp_degree ${DP_DEGREE} \
    --tensor_parallel_degree ${MP_DEGREE} \
    --sharding_parallel_degree ${SHARDING_DEGREE} \
    --pipeline_parallel_degree 1 \
    --sep_parallel_degree 1 \
    --path_type ${path_type} \
    --prediction ${prediction} \
    --loss_weight ${loss_weight} \
    "$@"
