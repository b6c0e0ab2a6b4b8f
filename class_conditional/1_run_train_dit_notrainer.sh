#!/bin/sh
# DiT with the plain training loop (fast-DiT style).
# Single node:  sh 1_run_train_dit_notrainer.sh            (NPROC processes)
# Multi-node:   IPS="10.0.0.1,10.0.0.2" sh 1_run_train_dit_notrainer.sh   on every node
#               (paddle.distributed.launch --ips; NPROC processes per node)
# Extra flags pass through ("$@"), e.g. --resume_from_checkpoint latest.
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
NPROC=${NPROC:-8}
IPS=${IPS:-127.0.0.1}
config_file=${CONFIG_FILE:-config/DiT_XL_patch2.json}
results_dir=${RESULTS_DIR:-./output_notrainer/DiT_XL_patch2_notrainer}
feature_path=${FEATURE_PATH:-./data/fastdit_imagenet256}
global_batch_size=${GLOBAL_BATCH_SIZE:-256}
num_workers=${NUM_WORKERS:-8}
max_steps=${MAX_STEPS:-7000000}
logging_steps=${LOGGING_STEPS:-50}
save_steps=${SAVE_STEPS:-5000}
vae=${VAE_NAME_OR_PATH:-auto}

if [ "$NPROC" = 1 ] && [ "$IPS" = 127.0.0.1 ]; then
  TRAINING_PYTHON="python -u"
else
  TRAINING_PYTHON="python -u -m paddle.distributed.launch --nproc_per_node ${NPROC} --ips ${IPS}"
fi
${TRAINING_PYTHON} "$HERE/train_image_generation_notrainer.py" \
    --config_file ${config_file} \
    --feature_path ${feature_path} \
    --results_dir ${results_dir} \
    --global_batch_size ${global_batch_size} \
    --num_workers ${num_workers} \
    --max_steps ${max_steps} \
    --log_every ${logging_steps} \
    --ckpt_every ${save_steps} \
    --vae_name_or_path ${vae} \
    "$@"
